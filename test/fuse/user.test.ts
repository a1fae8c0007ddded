/**
 * `granary mount` as an ordinary user (uid 65534, no capabilities): fusermount3 mounts
 * and hands the fd back, the holder owns it, and a SIGKILLed serving process is replaced
 * while a reader goes on. Distributions ship /dev/fuse mode 0666; where it is not (as
 * here), the test bind-mounts a 0666 node of the same device over it inside a private
 * mount namespace, and runs everything (mount, readers, umount) in that namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { which } from '../../src/fuse/fusermount.js';
import { createUfs, type UfsRouter } from '../../src/ufs/router.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';
import { requireOrSkip } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { alive, cleanupMounts, fuseRunnable, granary, md5, mount, nextServingPid, runTool, servingPid, startTool, type Mounted } from './fixture.js';

const UID = 65534;
const MiB = 1024 * 1024;
const PREFIX = 's3://test/user/';
const tools = ['fusermount3', 'python3', 'unshare', 'nsenter', 'setpriv', 'mknod'].map((t) => [t, which(t)] as const);
const missing = tools.filter(([, p]) => p === undefined).map(([t]) => t);
const runnable = fuseRunnable && requireOrSkip('FUSE mount as an ordinary user', missing.length === 0, `not installed: ${missing.join(', ')}`);
const path = (t: string): string => tools.find(([name]) => name === t)?.[1] ?? t;

function bytesOf(seed: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1664525 + 1013904223) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

describe.runIf(runnable)('granary mount as an ordinary user', () => {
  let s3: S3rverHandle;
  let proxy: FaultProxy;
  let ufs: UfsRouter;
  let work: string;
  let mnt: string;
  let ns: ChildProcess;
  /** Run as uid 65534 inside the test's mount namespace. */
  let asUser: string[];
  let mounted: Mounted;
  let env: NodeJS.ProcessEnv;
  const big = bytesOf(3, 40 * MiB + 77);
  const small = bytesOf(4, 200_000);

  beforeAll(async () => {
    s3 = await startS3rver();
    ufs = createUfs({ s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } });
    await ufs.write(`${PREFIX}big.bin`, big);
    await ufs.write(`${PREFIX}dir/small.bin`, small);
    // Slow enough that reading the big file spans the kill.
    proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: s3.port }, totalBandwidthBps: 40e6 });
    work = await mkdtemp(join(tmpdir(), 'granary-fuse-user-'));
    await chmod(work, 0o755);
    const home = join(work, 'home');
    mnt = join(home, 'mnt');
    await mkdir(mnt, { recursive: true });
    await chown(home, UID, UID);
    await chown(mnt, UID, UID);
    const dev = join(work, 'fuse');
    ns = spawn(path('unshare'), ['-m', '--propagation', 'private', '--', 'sh', '-c', `${path('mknod')} -m 666 "$0" c 10 229 && mount --bind "$0" /dev/fuse && echo ready && exec sleep 100000`, dev], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      ns.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      ns.on('exit', (code) => reject(new Error(`the test's mount namespace exited (${String(code)})`)));
    });
    asUser = [path('nsenter'), '-t', String(ns.pid), '-m', `--wd=${process.cwd()}`, '--', path('setpriv'), `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups'];
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' };
    mounted = await mount(PREFIX, mnt, ['--s3-endpoint', proxy.url, '--heartbeat-timeout', '2s', '--log-file', join(home, 'mount.log')], env, asUser);
  }, 120_000);

  afterAll(async () => {
    await cleanupMounts();
    if (ns?.pid !== undefined && alive(ns.pid)) ns.kill('SIGKILL');
    await proxy?.close();
    await ufs?.close();
    await s3?.close();
    if (work) await rm(work, { recursive: true, force: true });
  }, 60_000);

  it('is mounted by fusermount3 for that user, read-only, holder and serving process running as that user', () => {
    const line = readFileSync(`/proc/${String(ns.pid)}/mountinfo`, 'utf8')
      .split('\n')
      .find((l) => l.includes(` ${mnt} `));
    expect(line).toMatch(/ - fuse\.granary s3:\/\/test\/user\/ ro,.*user_id=65534,group_id=65534/);
    const serving = servingPid(mounted.holderPid) as number;
    for (const pid of [mounted.holderPid, serving]) expect(readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(/^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
  });

  it('reads the store bytes and refuses writes with EROFS', async () => {
    const r = await runTool('md5sum', [join(mnt, 'dir', 'small.bin')], { wrap: asUser });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString().slice(0, 32)).toBe(md5(small));
    const ls = await runTool('stat', ['-c', '%u %s %A', join(mnt, 'big.bin')], { wrap: asUser });
    expect(ls.stdout.toString().trim()).toBe(`${UID} ${big.length} -r--r--r--`);
    const w = await runTool('sh', ['-c', `touch ${mnt}/new 2>&1; mkdir ${mnt}/d 2>&1; true`], { wrap: asUser });
    expect(w.stdout.toString().match(/Read-only file system/g)?.length).toBe(2);
  });

  it('the serving process SIGKILLed during md5sum: the holder replaces it and the sum is right', async () => {
    const before = servingPid(mounted.holderPid) as number;
    const sum = startTool('md5sum', [join(mnt, 'big.bin')], { wrap: asUser });
    await waitFor(() => rcharOf(sum.pid) >= 4 * MiB, { timeoutMs: 60_000, intervalMs: 10, what: 'md5sum to read 4 MiB' });
    process.kill(before, 'SIGKILL');
    await nextServingPid(mounted.holderPid, before);
    const r = await sum.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString().slice(0, 32)).toBe(md5(big));
    expect(await readFile(join(work, 'home', 'mount.log'), 'utf8')).toContain('took over (resend requested)');
  }, 120_000);

  it('granary umount as that user unmounts through fusermount3 and the holder exits', async () => {
    const r = await granary(['umount', mnt], {}, asUser);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`unmounted ${mnt}`);
    expect(readFileSync(`/proc/${String(ns.pid)}/mountinfo`, 'utf8')).not.toContain(` ${mnt} `);
    await waitFor(() => !alive(mounted.holderPid), { timeoutMs: 20_000, what: 'the holder to exit after umount' });
  });

  it('without fusermount3 and python3 on PATH, an ordinary user gets a coded error naming them', async () => {
    const r = await granary(['mount', PREFIX, mnt, '--s3-endpoint', proxy.url], { ...env, PATH: '/nonexistent' }, asUser);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('GRANARY_ERR_UNSUPPORTED_OPERATION');
    expect(r.stderr).toMatch(/fusermount3.*python3/s);
  });
});

/** Bytes a process has read so far (/proc/<pid>/io). */
function rcharOf(pid: number): number {
  try {
    return Number(/^rchar: (\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

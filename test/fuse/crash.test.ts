/**
 * What a mount survives: a cache worker killed, its serving process killed (SIGKILL)
 * or stopped (SIGSTOP) while a reader is in the middle of a large file, and the whole
 * process tree killed (the next mount on the same directory succeeds). The store sits
 * behind a bandwidth-capped proxy so that a large read spans the fault.
 */
import { mkdir, mkdtemp, open, rm, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountAt } from '../../src/fuse/mount-table.js';
import { createUfs, type UfsRouter } from '../../src/ufs/router.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';
import { waitFor } from '../support/wait.js';
import { spawnWorker, type WorkerProcess } from '../support/workers.js';
import { alive, cleanupMounts, fuseRunnable, granary, md5, mount, nextServingPid, runTool, servingPid, startTool, track, type Mounted } from './fixture.js';

const PREFIX = 's3://test/crash/';
const MiB = 1024 * 1024;
const objects = new Map<string, Uint8Array>();

function bytesOf(seed: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i += 4) {
    x = (x * 1664525 + 1013904223) >>> 0;
    b[i] = x & 255;
    b[i + 1] = (x >>> 8) & 255;
    b[i + 2] = (x >>> 16) & 255;
    b[i + 3] = x >>> 24;
  }
  return b;
}

/** Bytes a process has read so far (/proc/<pid>/io). */
function bytesReadBy(pid: number): number {
  try {
    return Number(/^rchar: (\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

describe.runIf(fuseRunnable)('granary mount survives', () => {
  let s3: S3rverHandle;
  let proxy: FaultProxy;
  let ufs: UfsRouter;
  const workers: WorkerProcess[] = [];
  let work: string;
  let mnt: string;
  let mounted: Mounted;
  let mountArgs: string[];
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    s3 = await startS3rver();
    const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
    ufs = createUfs({ s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials } });
    for (const [i, name] of ['big-kill.bin', 'big-fd.bin', 'big-stop.bin'].entries()) objects.set(name, bytesOf(i + 1, 48 * MiB + 4321));
    for (let i = 0; i < 6; i++) objects.set(`small/${i}.bin`, bytesOf(100 + i, 300_000 + i));
    objects.set('after-restart.bin', bytesOf(7, 3 * MiB));
    for (const [key, bytes] of objects) await ufs.write(PREFIX + key, bytes);
    // Slow enough that reading a large file takes seconds: the faults land mid-read.
    proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: s3.port }, totalBandwidthBps: 40e6 });
    const workerUfs = { s3: { endpoint: proxy.url, region: 'us-east-1', forcePathStyle: true, credentials } };
    for (let i = 0; i < 2; i++) workers.push(await spawnWorker({ host: '127.0.0.1', port: 0, memoryBytes: 256 * MiB, ufs: workerUfs }));
    work = await mkdtemp(join(tmpdir(), 'granary-fuse-crash-'));
    mnt = join(work, 'mnt');
    await mkdir(mnt);
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' };
    mountArgs = ['--s3-endpoint', proxy.url, '--workers', workers.map((w) => w.url).join(','), '--heartbeat-timeout', '2s', '--log-file', join(work, 'mount.log')];
    mounted = await mount(PREFIX, mnt, mountArgs, env);
  }, 180_000);

  afterAll(async () => {
    await cleanupMounts();
    for (const w of workers) await w.kill();
    await proxy?.close();
    await ufs?.close();
    await s3?.close();
    if (work) await rm(work, { recursive: true, force: true });
  }, 60_000);

  it('a cache worker killed while mounted: reads go on through the fallback', async () => {
    const first = await runTool('md5sum', ['small/0.bin', 'small/1.bin'], { cwd: mnt });
    expect(first.code, first.stderr).toBe(0);
    await workers[0]?.kill();
    const keys = ['small/2.bin', 'small/3.bin', 'small/4.bin', 'small/5.bin'];
    const r = await runTool('md5sum', keys, { cwd: mnt });
    expect(r.code, r.stderr).toBe(0);
    for (const line of r.stdout.toString().trim().split('\n')) {
      expect(line.slice(0, 32), line).toBe(md5(objects.get(line.slice(34)) as Uint8Array));
    }
  }, 60_000);

  it('the serving process SIGKILLed during md5sum of a large file: right sum, no error, an fd opened before keeps reading', async () => {
    const fdFile = objects.get('big-fd.bin') as Uint8Array;
    const fh = await open(join(mnt, 'big-fd.bin'));
    try {
      const head = Buffer.alloc(MiB);
      await fh.read(head, 0, MiB, 0);
      expect(md5(head)).toBe(md5(fdFile.subarray(0, MiB)));
      const before = servingPid(mounted.holderPid) as number;
      const sum = startTool('md5sum', [join(mnt, 'big-kill.bin')]);
      await waitFor(() => bytesReadBy(sum.pid) >= 8 * MiB, { timeoutMs: 60_000, intervalMs: 10, what: 'md5sum to read 8 MiB' });
      expect(alive(sum.pid)).toBe(true);
      process.kill(before, 'SIGKILL');
      const after = await nextServingPid(mounted.holderPid, before);
      expect(after).not.toBe(before);
      const r = await sum.done;
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout.toString().slice(0, 32)).toBe(md5(objects.get('big-kill.bin') as Uint8Array));
      const rest = Buffer.alloc(fdFile.length - MiB);
      let at = 0;
      while (at < rest.length) {
        const { bytesRead } = await fh.read(rest, at, Math.min(4 * MiB, rest.length - at), MiB + at);
        expect(bytesRead).toBeGreaterThan(0);
        at += bytesRead;
      }
      expect(md5(rest)).toBe(md5(fdFile.subarray(MiB)));
    } finally {
      await fh.close();
    }
  }, 120_000);

  it('the serving process stopped (SIGSTOP): detected, replaced, and the reader finishes', async () => {
    const before = servingPid(mounted.holderPid) as number;
    const sum = startTool('md5sum', [join(mnt, 'big-stop.bin')]);
    await waitFor(() => bytesReadBy(sum.pid) >= 8 * MiB, { timeoutMs: 60_000, intervalMs: 10, what: 'md5sum to read 8 MiB' });
    process.kill(before, 'SIGSTOP');
    const after = await nextServingPid(mounted.holderPid, before);
    expect(after).not.toBe(before);
    await waitFor(() => !alive(before) || /^State:\s+Z/m.test(readFileSync(`/proc/${before}/status`, 'utf8')), { what: 'the stopped process to be killed' });
    const r = await sum.done;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString().slice(0, 32)).toBe(md5(objects.get('big-stop.bin') as Uint8Array));
    expect(readFileSync(join(work, 'mount.log'), 'utf8')).toMatch(/sent no heartbeat/);
  }, 120_000);

  it('the whole process tree killed: the directory answers ENOTCONN, and the next granary mount on it succeeds', async () => {
    const serving = servingPid(mounted.holderPid) as number;
    process.kill(mounted.holderPid, 'SIGKILL');
    process.kill(serving, 'SIGKILL');
    await waitFor(() => !alive(mounted.holderPid) && !alive(serving), { what: 'the mount processes to die' });
    await expect(stat(mnt)).rejects.toMatchObject({ code: 'ENOTCONN' });
    const again = await mount(PREFIX, mnt, mountArgs, env);
    track(servingPid(again.holderPid));
    expect(again.stderr).toMatch(/dead fuse\.granary mount \(ENOTCONN\)/);
    expect(mountAt(mnt)?.fsType).toBe('fuse.granary');
    const r = await runTool('md5sum', ['after-restart.bin'], { cwd: mnt });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString().slice(0, 32)).toBe(md5(objects.get('after-restart.bin') as Uint8Array));
    const u = await granary(['umount', mnt]);
    expect(u.code, u.stderr).toBe(0);
  }, 120_000);
});

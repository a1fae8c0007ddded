/**
 * `granary mount --foreground` and its signals: SIGTERM or SIGINT unmounts; a busy mount
 * is detached lazily, says so, and keeps serving the files still open until they close.
 * The store is a local directory (file://), read directly: no cluster is needed here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mountAt } from '../../src/fuse/mount-table.js';
import { waitFor } from '../support/wait.js';
import { alive, CLEAN_ENV, cleanupMounts, fuseRunnable, md5, servingPid, track, trackDir } from './fixture.js';

interface Foreground {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

describe.runIf(fuseRunnable)('granary mount --foreground', () => {
  let work: string;
  let store: string;
  let mnt: string;
  const bytes = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 7) & 255);

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'granary-fuse-sig-'));
    store = join(work, 'store');
    mnt = join(work, 'mnt');
    await mkdir(store);
    await mkdir(mnt);
    await writeFile(join(store, 'a.bin'), bytes);
  });

  afterEach(async () => {
    await cleanupMounts();
  }, 60_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function mountForeground(): Promise<Foreground> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'mount', `file://${store}/`, mnt, '--foreground'], {
      env: CLEAN_ENV,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    track(child.pid);
    trackDir(mnt);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor(() => stderr.includes('mounted on') || child.exitCode !== null, { timeoutMs: 60_000, what: 'the mount to be ready' });
    expect(child.exitCode, stderr).toBeNull();
    track(servingPid(child.pid as number));
    return { child, stderr: () => stderr, exited };
  }

  it('SIGTERM unmounts and exits 0', async () => {
    const m = await mountForeground();
    expect(mountAt(mnt)?.fsType).toBe('fuse.granary');
    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    expect(mountAt(mnt)).toBeUndefined();
    expect(m.stderr()).toContain(`${mnt} unmounted`);
  }, 90_000);

  it('SIGINT on a busy mount detaches it lazily, says so, and files open there keep reading', async () => {
    const m = await mountForeground();
    const serving = servingPid(m.child.pid as number) as number;
    const fh = await open(join(mnt, 'a.bin'));
    try {
      const head = Buffer.alloc(1024);
      await fh.read(head, 0, 1024, 0);
      m.child.kill('SIGINT');
      expect(await m.exited).toBe(0);
      expect(m.stderr()).toMatch(/busy: detached lazily/);
      expect(mountAt(mnt)).toBeUndefined();
      const rest = Buffer.alloc(bytes.length - 1024);
      let at = 0;
      while (at < rest.length) {
        const { bytesRead } = await fh.read(rest, at, rest.length - at, 1024 + at);
        expect(bytesRead).toBeGreaterThan(0);
        at += bytesRead;
      }
      expect(md5(Buffer.concat([head, rest]))).toBe(md5(bytes));
    } finally {
      await fh.close();
    }
    // The last file closed: the connection goes away, and the serving process with it.
    await waitFor(() => !alive(serving), { timeoutMs: 30_000, what: 'the serving process to exit once the detached mount is released' });
  }, 90_000);
});

/**
 * Fault matrix, row 9: a worker whose disk tier fills up. Its disk directory is a tmpfs
 * far smaller than the `diskBytes` it was told it has, and its memory tier holds a few
 * pages, so nearly every page it stores spills to a full disk (ENOSPC). It keeps
 * serving (from memory, or by passing store bytes through) and does not crash.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdAvailable } from '../support/etcd.js';
import { startFaultCluster, verifyEpoch, type FaultCluster } from '../support/fault-epoch.js';
import { requireOrSkip } from '../support/services.js';

const KiB = 1024;

/** Mount a tmpfs of `bytes` on a new temp dir; undefined when this process may not mount. */
async function mountTmpfs(bytes: number): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), 'granary-diskfull-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'pipe' });
    return dir;
  } catch {
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
}

const canMount = process.getuid?.() === 0;

describe.runIf(etcdAvailable() && requireOrSkip('tmpfs mount', canMount, 'mounting a tmpfs needs root'))('fault: a worker whose disk is full', () => {
  let c: FaultCluster;
  let disk: string | undefined;
  beforeAll(async () => {
    disk = await mountTmpfs(64 * KiB);
    if (!disk) throw new Error('mount -t tmpfs failed although running as root');
    const dir = disk;
    // Worker 0: 3 pages of memory, and a disk tier that claims 64 MiB on a 64 KiB tmpfs.
    c = await startFaultCluster({ workers: 3, worker: (i) => (i === 0 ? { memoryBytes: 48 * KiB, diskDir: dir, diskBytes: 64 * 1024 * KiB } : {}) });
  }, 120_000);
  afterAll(async () => {
    await c?.close();
    if (disk) {
      execFileSync('umount', [disk], { stdio: 'pipe' });
      await rm(disk, { recursive: true, force: true });
    }
  }, 60_000);

  it('keeps serving through the full disk without crashing, and yields every row exactly once, twice over', async () => {
    const full = c.workers[0]!;
    for (const epoch of [0, 1]) {
      const r = await c.runEpoch({ epoch });
      expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    }
    expect(full.alive()).toBe(true);
    const info = await full.info();
    // It served reads (through the cache path, not by the clients falling back)...
    expect(info.counters.bytesServed).toBeGreaterThan(0);
    // ...while holding no more on disk than the tmpfs has.
    expect(info.usage.diskBytes).toBeLessThanOrEqual(64 * KiB);
    const metrics = await (await fetch(`${full.url}/metrics`)).text();
    expect(metrics).toMatch(/granary_worker_disk_errors\{[^}]*\} [1-9]/);
  });
});

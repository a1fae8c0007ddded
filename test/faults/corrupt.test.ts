/**
 * Fault matrix, rows 3 and 10: workers whose bytes go bad.
 *
 * - Row 3: a proxy flips a byte in read answers on their way to the client (the page
 *   checksums catch it: the part comes from the store, the worker drops the page), and a
 *   page file corrupted on disk under a running worker (its file CRC catches it: the
 *   page is refetched).
 * - Row 10: a worker restarted on the same directory after its page files were damaged
 *   (a bit flipped in the data, in the header, a file cut short): recovery or the read
 *   detects each one and the page is refetched.
 *
 * Each epoch yields every row exactly once with every value identical to a direct read.
 */
import { open, readdir, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_HEADER_BYTES } from '../../src/cache/page-file.js';
import { etcdAvailable } from '../support/etcd.js';
import { startFaultCluster, tempDir, verifyEpoch, type FaultCluster, type FaultWorker } from '../support/fault-epoch.js';
import { waitFor } from '../support/wait.js';

const MiB = 1024 * 1024;
/** Each test runs two epochs on a shared 2-core machine. */
const EPOCHS_TIMEOUT = 240_000;

/** A worker's metric, read from its own port (not through its proxy). */
async function metric(w: FaultWorker, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${w.proxy.target.port}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

async function total(c: FaultCluster, name: string): Promise<number> {
  let n = 0;
  for (const w of c.workers) if (w.alive()) n += await metric(w, name);
  return n;
}

/** Every page file under a worker's disk directory. */
async function pageFiles(dir: string): Promise<string[]> {
  const root = join(dir, 'pages');
  const out: string[] = [];
  for (const sub of (await readdir(root)).sort()) {
    for (const name of (await readdir(join(root, sub))).sort()) if (name.endsWith('.page')) out.push(join(root, sub, name));
  }
  return out;
}

/** XOR one byte of a file at `pos` (negative: from the end). */
async function flipByte(file: string, pos: number): Promise<void> {
  const h = await open(file, 'r+');
  try {
    const { size } = await h.stat();
    const at = pos < 0 ? size + pos : pos;
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, at);
    b[0] = (b[0] as number) ^ 0x10;
    await h.write(b, 0, 1, at);
  } finally {
    await h.close();
  }
}

describe.runIf(etcdAvailable())('fault: a worker returning corrupt bytes (row 3)', () => {
  let c: FaultCluster;
  const dirs: { path: string; remove: () => Promise<void> }[] = [];

  beforeAll(async () => {
    for (let i = 0; i < 2; i++) dirs.push(await tempDir('granary-corrupt-'));
    // Pages on disk only, so every read of a cached page reads its file.
    c = await startFaultCluster({ workers: 2, rows: 3000, worker: (i) => ({ memoryBytes: 0, diskDir: dirs[i]!.path, diskBytes: 256 * MiB }) });
  }, 120_000);

  afterAll(async () => {
    await c?.close();
    for (const d of dirs) await d.remove();
  }, 60_000);

  it('reads every row exactly once when a proxy flips bytes in the workers’ answers', async () => {
    expect(verifyEpoch(await c.runEpoch({ epoch: 0 }), c.reference).rows).toBe(c.dataset.rows);
    const reportsBefore = await total(c, 'granary_worker_corrupt_reports_total');
    for (const w of c.workers) w.proxy.flipBodies({ every: 2 });
    try {
      const r = await c.runEpoch({ epoch: 1 });
      expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
      const flipped = c.workers.reduce((n, w) => n + w.proxy.stats().flippedBodies, 0);
      expect(flipped).toBeGreaterThan(0);
      expect(r.stats.fallbacks).toBeGreaterThan(0);
      // (How much the cache still serves depends on the breakers: each caught answer opens its worker's.)
      // No flipped byte reached a batch (verified above); the caught ones were reported
      // to their worker. (An answer flipped after its read timed out is never checked.)
      await waitFor(async () => (await total(c, 'granary_worker_corrupt_reports_total')) > reportsBefore, { timeoutMs: 10_000 });
      expect((await total(c, 'granary_worker_corrupt_reports_total')) - reportsBefore).toBeLessThanOrEqual(flipped);
    } finally {
      for (const w of c.workers) w.proxy.flipBodies(null);
    }
  }, EPOCHS_TIMEOUT);

  it('refetches pages whose files were corrupted on disk under a running worker', async () => {
    expect(verifyEpoch(await c.runEpoch({ epoch: 2 }), c.reference).rows).toBe(c.dataset.rows);
    const files = await pageFiles(dirs[0]!.path);
    expect(files.length).toBeGreaterThan(4);
    // Flip the last data byte of every third page file of worker 0.
    const hit = files.filter((_, i) => i % 3 === 0);
    for (const f of hit) await flipByte(f, -1);
    const before = await metric(c.workers[0]!, 'granary_worker_corrupt_pages');
    const storeBefore = (await c.workers[0]!.info()).counters.storeRequests;
    const r = await c.runEpoch({ epoch: 3 });
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    expect((await metric(c.workers[0]!, 'granary_worker_corrupt_pages')) - before).toBe(hit.length);
    // Each bad page was read again from the store.
    expect((await c.workers[0]!.info()).counters.storeRequests).toBeGreaterThan(storeBefore);
  }, EPOCHS_TIMEOUT);
});

describe.runIf(etcdAvailable())('fault: a worker restarted on a directory with corrupted page files (row 10)', () => {
  let c: FaultCluster;
  let dir: { path: string; remove: () => Promise<void> };

  beforeAll(async () => {
    dir = await tempDir('granary-corrupt-restart-');
    c = await startFaultCluster({ workers: 2, rows: 3000, worker: (i) => (i === 0 ? { memoryBytes: 0, diskDir: dir.path, diskBytes: 256 * MiB } : {}) });
  }, 120_000);

  afterAll(async () => {
    await c?.close();
    await dir?.remove();
  }, 60_000);

  it('detects every damaged page file after the restart and refetches those pages', async () => {
    expect(verifyEpoch(await c.runEpoch({ epoch: 0 }), c.reference).rows).toBe(c.dataset.rows);
    const w = c.workers[0]!;
    // A clean stop releases the directory, so the restart may take it at once.
    await w.stop();
    const files = await pageFiles(dir.path);
    expect(files.length).toBeGreaterThan(6);
    // A bit flipped in the data, one in the header's key, and a file cut short.
    const data = files.filter((_, i) => i % 4 === 0);
    const header = files.filter((_, i) => i % 4 === 1);
    const cut = files.filter((_, i) => i % 4 === 2).slice(0, 2);
    for (const f of data) await flipByte(f, -1);
    for (const f of header) await flipByte(f, PAGE_HEADER_BYTES + 2);
    for (const f of cut) await truncate(f, PAGE_HEADER_BYTES + 10);
    await w.restart();
    const recovered = await metric(w, 'granary_worker_corrupt_pages');
    // Headers and lengths are checked as the directory is indexed; data CRCs when a page is read.
    expect(recovered).toBe(header.length + cut.length);
    const r = await c.runEpoch({ epoch: 1 });
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    expect(await metric(w, 'granary_worker_corrupt_pages')).toBe(header.length + cut.length + data.length);
    const info = await w.info();
    // The worker read the bad pages again from the store, and served the good ones from disk.
    expect(info.counters.storeRequests).toBeGreaterThan(0);
    expect(info.counters.hits).toBeGreaterThan(0);
    expect(r.stats.bytesFromCache).toBeGreaterThan(0);
  }, EPOCHS_TIMEOUT);
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HintRequest } from '../../src/cache/hints.js';
import { CacheClient } from '../../src/cache/client.js';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { Dataset } from '../../src/loader/dataset.js';
import { DecodePool } from '../../src/loader/decode-pool.js';
import { hintAccesses, LoaderHints, type HintTarget } from '../../src/loader/hints.js';
import type { MemoryUfs } from '../../src/ufs/memory.js';
import { waitFor } from '../support/wait.js';
import { collect, ids, parquetDataset } from './helpers.js';

const KiB = 1024;

/** Records every hint request; answers like a worker that keeps everything. */
class Recorder implements HintTarget {
  readonly requests: Omit<HintRequest, 'job'>[] = [];
  readonly jobs = new Set<string>();
  async hint(jobId: string, hint: Omit<HintRequest, 'job'>): Promise<{ accepted: number; dropped: number; failed: number }> {
    this.jobs.add(jobId);
    this.requests.push(hint);
    // A real round trip: changes made meanwhile must wait for the next request.
    await new Promise((r) => setTimeout(r, 1));
    return { accepted: hint.accesses?.length ?? 0, dropped: 0, failed: 0 };
  }
}

describe('loader hints, unit', () => {
  it('lists the ranges of each position of the order, in order', () => {
    const ranges = (p: number) => [{ url: `s3://b/${p}`, etag: 'e', offset: p * 10, length: 10 }];
    expect(hintAccesses([3, 1, 2], ranges, 1, 5)).toEqual([
      { url: 's3://b/1', etag: 'e', offset: 10, length: 10, pos: 1 },
      { url: 's3://b/2', etag: 'e', offset: 20, length: 10, pos: 2 },
    ]);
  });

  it('sends the whole epoch in chunks from the first fetch, then cursor and readFrom as fetches start and finish, then end', async () => {
    const target = new Recorder();
    const order = Array.from({ length: 10 }, (_, i) => 9 - i);
    const h = new LoaderHints(target, order, (p) => [{ url: 's3://b/f', etag: 'e', offset: p * 100, length: 100 }], { chunk: 4, lookahead: 3, jobId: 'j' });
    expect(target.requests).toHaveLength(0); // nothing before the first fetch
    h.started(9);
    h.started(8);
    await h.idle();
    h.fetched(9);
    await h.idle();
    h.close();
    await waitFor(() => target.requests.at(-1)?.end === true, { what: 'the end of the job to be sent' });
    const reqs = target.requests;
    expect(reqs[0]).toMatchObject({ reset: true, cursor: 0, lookahead: 3 });
    const positions = reqs.flatMap((r) => (r.accesses ?? []).map((a) => a.pos));
    expect(positions).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(Math.max(...reqs.map((r) => r.accesses?.length ?? 0))).toBe(4);
    const cursors = reqs.filter((r) => r.cursor !== undefined).map((r) => r.cursor as number);
    expect(cursors).toEqual([...cursors].sort((a, b) => a - b));
    expect(reqs.at(-2)).toMatchObject({ cursor: 1, readFrom: 2 });
    expect(reqs.at(-1)).toEqual({ end: true });
    expect([...target.jobs]).toEqual(['j']);
  });

  it('hints only `window` partitions ahead of the cursor', async () => {
    const target = new Recorder();
    const order = Array.from({ length: 10 }, (_, i) => i);
    const h = new LoaderHints(target, order, (p) => [{ url: 's3://b/f', etag: 'e', offset: p * 100, length: 100 }], { chunk: 2, window: 3 });
    h.started(0);
    await h.idle();
    expect(target.requests.flatMap((r) => (r.accesses ?? []).map((a) => a.pos))).toEqual([0, 1, 2]);
    h.close();
  });
});

describe('loader hints through real workers', () => {
  let store: MemoryUfs;
  let workers: CacheWorker[] = [];
  let client: CacheClient;
  let pool: DecodePool;
  const prefix = 's3://bucket/ds/';

  beforeAll(async () => {
    // 6 files x 4 row groups of 500 rows: 24 partitions of a few KiB each.
    store = await parquetDataset([2000, 2000, 2000, 2000, 2000, 2000], 500, prefix);
    workers = await Promise.all(
      [0, 1].map((i) => startWorker({ id: `lw${i}`, ufs: store, pageSize: 4 * KiB, memoryBytes: 48 * KiB })),
    );
    client = new CacheClient({ workers: workers.map((w) => w.url), ufs: store, blockSize: 16 * KiB, partSize: 16 * KiB });
    pool = new DecodePool({ threads: 1 });
  });

  afterAll(async () => {
    await client.close();
    await Promise.all(workers.map((w) => w.close()));
    await pool.close();
  });

  it('yields exactly the same batches with hints as without, epoch after epoch', async () => {
    const ds = await Dataset.parquet(prefix, { fs: client, pool });
    try {
      for (const [epoch, shuffle] of [
        [0, true],
        [1, true],
        [2, 'global'],
      ] as const) {
        for (const rank of [0, 1]) {
          const opts = { batchSize: 300, epoch, seed: 7, shuffle, rank, worldSize: 2, prefetch: 2 } as const;
          const plain = await collect(ds.batches(opts));
          const hinted = await collect(ds.batches({ ...opts, hints: { lookahead: 4, chunk: 5 } }));
          expect(hinted.map(ids)).toEqual(plain.map(ids));
          expect(hinted.map((b) => b.schema.fields.map((f) => f.name))).toEqual(plain.map((b) => b.schema.fields.map((f) => f.name)));
          const x = (bs: typeof plain) => bs.flatMap((b) => Array.from(b.getChild('x')?.toArray() as Float64Array));
          expect(x(hinted)).toEqual(x(plain));
        }
      }
    } finally {
      await ds.close();
    }
    const prefetched = workers.reduce((a, w) => a + (w.info().hints?.prefetch.pages ?? 0), 0);
    expect(prefetched).toBeGreaterThan(0);
  });

  it('registers its job on the workers while it runs and ends it when the stream closes', async () => {
    const ds = await Dataset.parquet(prefix, { fs: client, pool });
    try {
      const stream = ds.batches({ batchSize: 250, epoch: 3, seed: 1, shuffle: true, prefetch: 1, hints: { jobId: 'visible-job' } });
      const it = stream[Symbol.asyncIterator]();
      await it.next();
      const jobs = (): number => workers.reduce((a, w) => a + (w.info().hints?.registry.jobs ?? 0), 0);
      await waitFor(() => jobs() > 0, { what: 'a worker to register the job' });
      await it.return?.();
      await waitFor(() => jobs() === 0, { what: 'the workers to end the job' });
      expect(workers.map((w) => w.info().hints?.registry.jobs)).toEqual([0, 0]);
    } finally {
      await ds.close();
    }
  });

  it('ignores hints when the store cannot take them', async () => {
    const ds = await Dataset.parquet(prefix, { fs: store, pool });
    try {
      const a = await collect(ds.batches({ batchSize: 500, seed: 3, shuffle: true, hints: true }));
      const b = await collect(ds.batches({ batchSize: 500, seed: 3, shuffle: true }));
      expect(a.map(ids)).toEqual(b.map(ids));
    } finally {
      await ds.close();
    }
  });
});

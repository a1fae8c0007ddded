import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DataType, Dictionary, Int32, Table, Utf8, tableFromArrays, tableToIPC, vectorFromArray, type RecordBatch } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { GranaryError } from '../../src/errors.js';
import { Dataset, type BatchesOptions } from '../../src/loader/dataset.js';
import type { BatchStream, LoaderState } from '../../src/loader/stream.js';
import { LocalUfs } from '../../src/ufs/local.js';
import { HttpUfs } from '../../src/ufs/http.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { startHttpServer } from '../support/http-server.js';
import { collect, ids, parquetBytes } from './helpers.js';

/**
 * The loader thread (src/loader/thread-stream.ts, loader-thread.ts) against the pipeline
 * on the calling thread (`loaderThread: false`): same batches, resume, errors,
 * cancellation, stats, and a real cache worker in between.
 */

let dir: string;
let fs: LocalUfs;
/** Prefix URLs (ending in '/') of the datasets written under `dir`. */
let pq: string;
let arrowDir: string;
let raw: string;
let bad: string;
const goodBytes = parquetBytes(0, 120, 40);

/** Rows of the Parquet dataset: three files with uneven row groups (13 partitions). */
const PQ_SIZES = [250, 101, 333] as const;
const PQ_GROUPS = [100, 30, 64] as const;
const PQ_ROWS = 684;

const opened = new Set<Dataset>();
function track(ds: Dataset): Dataset {
  opened.add(ds);
  return ds;
}
async function closeAll(...dss: Dataset[]): Promise<void> {
  for (const ds of dss) {
    await ds.close();
    opened.delete(ds);
  }
}

const dirUrl = (p: string): string => `${pathToFileURL(p).href}/`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'granary-loader-thread-'));
  fs = new LocalUfs({ root: dir, fsync: false });

  await mkdir(join(dir, 'pq'));
  let first = 0;
  for (let i = 0; i < PQ_SIZES.length; i++) {
    await writeFile(join(dir, 'pq', `part-${i}.parquet`), parquetBytes(first, PQ_SIZES[i] as number, PQ_GROUPS[i] as number));
    first += PQ_SIZES[i] as number;
  }
  pq = dirUrl(join(dir, 'pq'));

  // Arrow IPC files: record batches of uneven sizes, with a dictionary-encoded string column
  // (not packable: it crosses the thread as Arrow IPC).
  await mkdir(join(dir, 'arrow'));
  for (let f = 0; f < 2; f++) {
    const sizes = [10, 17, 6, 23];
    const n = sizes.reduce((a, b) => a + b, 0);
    const id = Int32Array.from({ length: n }, (_, i) => f * 1000 + i);
    const tag = vectorFromArray(
      Array.from(id, (v) => `tag-${v % 7}`),
      new Dictionary(new Utf8(), new Int32()),
    );
    const whole = tableFromArrays({ id, v: Float32Array.from(id, (v) => v * 0.25) });
    const t = whole.assign(new Table({ tag }));
    const rb = t.batches[0] as RecordBatch;
    const parts: RecordBatch[] = [];
    let at = 0;
    for (const s of sizes) {
      parts.push(rb.slice(at, at + s));
      at += s;
    }
    await writeFile(join(dir, 'arrow', `f${f}.arrow`), tableToIPC(new Table(parts), 'file'));
  }
  arrowDir = dirUrl(join(dir, 'arrow'));

  await mkdir(join(dir, 'raw'));
  for (let i = 0; i < 23; i++) await writeFile(join(dir, 'raw', `${String(i).padStart(2, '0')}.bin`), Uint8Array.from({ length: 3 + (i % 5) }, (_, k) => (i * 7 + k) & 0xff));
  raw = dirUrl(join(dir, 'raw'));

  // Good, corrupt (pages overwritten, footer intact), good.
  await mkdir(join(dir, 'bad'));
  await writeFile(join(dir, 'bad', 'a.parquet'), goodBytes);
  const corrupt = goodBytes.slice();
  for (let i = 4; i < 200; i++) corrupt[i] = 0xee;
  await writeFile(join(dir, 'bad', 'b.parquet'), corrupt);
  await writeFile(join(dir, 'bad', 'c.parquet'), parquetBytes(120, 120, 40));
  bad = dirUrl(join(dir, 'bad'));
});

afterAll(async () => {
  for (const ds of opened) await ds.close();
  await fs?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

type Norm = string | number | bigint | boolean | null | number[];
function norm(v: unknown): Norm {
  if (v instanceof Uint8Array) return Array.from(v);
  return v as Norm;
}

/** Every column's values of every batch, in order, plus each batch's field names and types. */
function contents(batches: readonly RecordBatch[]): { rows: number; fields: string[]; cols: Norm[][] }[] {
  return batches.map((b) => ({
    rows: b.numRows,
    fields: b.schema.fields.map((f) => `${f.name}:${String(f.type)}`),
    cols: b.schema.fields.map((_, j) => {
      const c = b.getChildAt(j);
      return Array.from({ length: b.numRows }, (_x, i) => norm(c?.get(i)));
    }),
  }));
}

/** `p`, or a failure if it takes over `ms` (the timer is cleared either way). */
async function bounded<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The error a promise rejects with (fails the test if it resolves). */
async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

/**
 * Worker threads and message ports still alive in this process (the existing cancellation test's check).
 * Asked right after close(), which resolves only once every thread it owns has stopped.
 */
async function leakedHandles(): Promise<string[]> {
  return process.getActiveResourcesInfo().filter((r) => r === 'MessagePort' || r === 'Worker');
}

async function openPq(loaderThread?: boolean): Promise<Dataset> {
  return track(await Dataset.parquet(pq, { fs, decodeThreads: 1, ...(loaderThread === undefined ? {} : { loaderThread }) }));
}

describe('loader thread: which mode runs', () => {
  it('uses a loader thread for LocalUfs, and not for MemoryUfs or loaderThread: false', async () => {
    const threaded = await openPq();
    const plain = await openPq(false);
    const mem = new MemoryUfs();
    await mem.write('s3://bucket/m/a.parquet', goodBytes);
    const inMemory = track(await Dataset.parquet('s3://bucket/m/', { fs: mem, decodeThreads: 1 }));
    const explicit = track(await Dataset.parquet(pq, { fs, decodeThreads: 1, loaderThread: true }));
    try {
      expect(threaded.loaderThread).toBe(true);
      expect(explicit.loaderThread).toBe(true);
      expect(plain.loaderThread).toBe(false);
      expect(inMemory.loaderThread).toBe(false);
      // Both modes still read the data.
      expect((await collect(threaded.batches({ batchSize: 100 }))).flatMap(ids)).toEqual(Array.from({ length: PQ_ROWS }, (_, i) => i));
      expect((await collect(inMemory.batches({ batchSize: 100 }))).flatMap(ids)).toEqual(Array.from({ length: 120 }, (_, i) => i));
    } finally {
      await closeAll(threaded, plain, inMemory, explicit);
    }
  });
});

describe('loader thread: same output as the calling thread', () => {
  let threaded: Dataset;
  let plain: Dataset;

  beforeAll(async () => {
    threaded = await openPq();
    plain = await openPq(false);
    expect(threaded.partitions.map((p) => p.rows)).toEqual([100, 100, 50, 30, 30, 30, 11, 64, 64, 64, 64, 64, 13]);
  });

  afterAll(async () => {
    await closeAll(threaded, plain);
  });

  for (const shuffle of ['none', 'buffer', 'global'] as const) {
    for (const worldSize of [1, 3]) {
      for (const dropLast of [false, true]) {
        it(`Parquet, shuffle ${shuffle}, worldSize ${worldSize}, dropLast ${String(dropLast)}: every batch of every rank identical`, async () => {
          const seen: number[] = [];
          for (let rank = 0; rank < worldSize; rank++) {
            const opts: BatchesOptions = { batchSize: 48, epoch: 1, seed: 5, shuffle, rank, worldSize, dropLast, prefetch: 3, bufferPartitions: 3 };
            const ts = threaded.batches(opts);
            const got = await collect(ts);
            const want = await collect(plain.batches(opts));
            expect(got.length).toBeGreaterThan(0);
            expect(ts.numBatches).toBe(want.length);
            expect(contents(got)).toEqual(contents(want));
            for (const b of got) seen.push(...ids(b));
          }
          if (!dropLast) expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: PQ_ROWS }, (_, i) => i));
          else expect(new Set(seen).size).toBe(seen.length);
        });
      }
    }
  }

  it("shuffle 'none': batches across several partitions, and a rank's empty last batch, identical", async () => {
    // 684 rows over 5 ranks: 137 each, the last 136; with batches of 68 the last rank ends on an empty batch.
    // Row groups of 30, 30, 30, 11 rows: rank 2's first batch (rows 274..341) spans four partitions.
    expect(PQ_ROWS).toBe(684);
    for (let rank = 0; rank < 5; rank++) {
      const opts: BatchesOptions = { batchSize: 68, shuffle: 'none', rank, worldSize: 5, prefetch: 2 };
      const got = await collect(threaded.batches(opts));
      const want = await collect(plain.batches(opts));
      expect(got.map((b) => b.numRows)).toEqual(rank === 4 ? [68, 68, 0] : [68, 68, 1]);
      expect(contents(got)).toEqual(contents(want));
      expect(got.flatMap(ids)).toEqual(Array.from({ length: rank === 4 ? 136 : 137 }, (_, i) => rank * 137 + i));
    }
  });

  it('reuses the thread for several epochs in a row, each identical to the calling thread', async () => {
    for (let epoch = 0; epoch < 4; epoch++) {
      const opts: BatchesOptions = { batchSize: 37, epoch, seed: 9, shuffle: epoch % 2 === 0 ? 'buffer' : 'none' };
      expect(contents(await collect(threaded.batches(opts)))).toEqual(contents(await collect(plain.batches(opts))));
    }
    expect(threaded.loaderThread).toBe(true);
  });

  it('runs two streams of one dataset at once (interleaved next() calls), each identical', async () => {
    const optsA: BatchesOptions = { batchSize: 20, epoch: 2, seed: 1, shuffle: 'buffer', rank: 0, worldSize: 2 };
    const optsB: BatchesOptions = { batchSize: 33, epoch: 0, shuffle: 'none', rank: 1, worldSize: 2 };
    const wantA = await collect(plain.batches(optsA));
    const wantB = await collect(plain.batches(optsB));
    const a = threaded.batches(optsA)[Symbol.asyncIterator]();
    const b = threaded.batches(optsB)[Symbol.asyncIterator]();
    const gotA: RecordBatch[] = [];
    const gotB: RecordBatch[] = [];
    let doneA = false;
    let doneB = false;
    while (!doneA || !doneB) {
      // Ask both before awaiting either.
      const [ra, rb] = await bounded(Promise.all([doneA ? undefined : a.next(), doneB ? undefined : b.next()]), 'interleaved next()');
      if (ra) {
        if (ra.done) doneA = true;
        else gotA.push(ra.value);
      }
      if (rb) {
        if (rb.done) doneB = true;
        else gotB.push(rb.value);
      }
    }
    expect(contents(gotA)).toEqual(contents(wantA));
    expect(contents(gotB)).toEqual(contents(wantB));
  });
});

/** Store reads one epoch with `opts` makes, counted on a dataset without a loader thread. */
async function readsPerEpoch(plain: Dataset, opts: BatchesOptions): Promise<number> {
  const before = (await plain.readStats()).requests.get;
  await collect(plain.batches(opts));
  return (await plain.readStats()).requests.get - before;
}

/** Reads `ds` made since `base`, waiting (bounded, ~5 s) for them to exceed `above`. */
async function readsSince(ds: Dataset, base: number, above: number): Promise<number> {
  let read = (await ds.readStats()).requests.get - base;
  // Up to 20 s: on a loaded machine the thread may need seconds to reach the point where it primes.
  for (let i = 0; i < 1000 && read <= above; i++) {
    await new Promise((r) => setTimeout(r, 20));
    read = (await ds.readStats()).requests.get - base;
  }
  return read;
}

describe('loader thread: epoch boundaries', () => {
  it('starts the next epoch with the same options before it is asked for, and yields it unchanged', async () => {
    const ds = await openPq();
    const plain = await openPq(false);
    try {
      for (const shuffle of ['none', 'buffer'] as const) {
        const opts = (epoch: number): BatchesOptions => ({ batchSize: 29, epoch, seed: 5, shuffle, prefetch: 2 });
        const perEpoch = await readsPerEpoch(plain, opts(0));
        const base = (await ds.readStats()).requests.get;
        await collect(ds.batches(opts(0)));
        // Nothing asked for epoch 1 yet, but its first partitions are read: more than one epoch's reads.
        expect(await readsSince(ds, base, perEpoch)).toBeGreaterThan(perEpoch);
        // Asking for it yields exactly that epoch.
        const s1 = ds.batches(opts(1));
        expect(contents(await collect(s1))).toEqual(contents(await collect(plain.batches(opts(1)))));
        expect(s1.stats().partitionsFetched).toBe(ds.partitions.length);
        // A request that does not match (another seed) drops the primed epoch and is correct too.
        expect(contents(await collect(ds.batches({ ...opts(2), seed: 6 })))).toEqual(contents(await collect(plain.batches({ ...opts(2), seed: 6 }))));
      }
    } finally {
      await closeAll(ds, plain);
    }
  });
  it('primes the next epoch while the current one still has batches to hand out, once every partition is decoded', async () => {
    const ds = await openPq();
    const plain = await openPq(false);
    try {
      for (const shuffle of ['none', 'buffer'] as const) {
        // Small batches. Shuffled: the consumer stops more batches before the end than the
        // thread may send ahead (32), so the stream cannot have ended in the thread and a
        // primed epoch was primed while this one still had batches to hand out. File order:
        // the thread hands over whole row groups and ends its stream with the last one, so
        // the consumer stops 12 batches before the end (13 rows in the last row group: at
        // least 6 batches of it), close enough that the pacing lets the last one out.
        const stopBefore = shuffle === 'none' ? 12 : 36;
        const opts = (epoch: number): BatchesOptions => ({ batchSize: 2, epoch, seed: 5, shuffle, prefetch: 2 });
        const perEpoch = await readsPerEpoch(plain, opts(0));
        const base = (await ds.readStats()).requests.get;
        const s0 = ds.batches(opts(0));
        const it = s0[Symbol.asyncIterator]();
        for (let i = 0; i < s0.numBatches - stopBefore; i++) expect((await it.next()).done).toBe(false);
        expect(await readsSince(ds, base, perEpoch)).toBeGreaterThan(perEpoch);
        const rest: RecordBatch[] = [];
        for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
        expect(rest).toHaveLength(stopBefore);
        expect(contents(await collect(ds.batches(opts(1))))).toEqual(contents(await collect(plain.batches(opts(1)))));
      }
    } finally {
      await closeAll(ds, plain);
    }
  });

  it('goes on priming the next epoch after its stream ended, with no call into the thread', async () => {
    // Reads are watched at an HTTP server, so nothing here wakes the loader thread: it
    // must keep running between tasks (piscina would otherwise park it in Atomics.wait).
    const server = await startHttpServer({ root: dir });
    const ds = track(await Dataset.parquet(`${server.url}pq/`, { fs: new HttpUfs(), decodeThreads: 1 }));
    const plain = track(await Dataset.parquet(`${server.url}pq/`, { fs: new HttpUfs(), decodeThreads: 1, loaderThread: false }));
    try {
      const opts = (epoch: number): BatchesOptions => ({ batchSize: 29, epoch, seed: 5, shuffle: 'none', prefetch: 2 });
      const done = (): number => server.requests.filter((r) => r.method === 'GET' && r.completed === true).length;
      const p0 = done();
      await collect(plain.batches(opts(0)));
      const perEpoch = done() - p0;
      expect(perEpoch).toBeGreaterThan(0);
      const base = done();
      await collect(ds.batches(opts(0)));
      let served = done() - base;
      for (let i = 0; i < 250 && served <= perEpoch; i++) {
        await new Promise((r) => setTimeout(r, 20));
        served = done() - base;
      }
      expect(served).toBeGreaterThan(perEpoch);
      expect(contents(await collect(ds.batches(opts(1))))).toEqual(contents(await collect(plain.batches(opts(1)))));
    } finally {
      await closeAll(ds, plain);
      await server.close();
    }
  });
});

describe('loader thread: Arrow IPC and raw files', () => {
  it('reads Arrow IPC files (with a dictionary-encoded column) the same in both modes', async () => {
    const threaded = track(await Dataset.arrow(arrowDir, { fs }));
    const plain = track(await Dataset.arrow(arrowDir, { fs, loaderThread: false }));
    try {
      expect(threaded.loaderThread).toBe(true);
      expect(DataType.isDictionary(threaded.schema.fields.find((f) => f.name === 'tag')?.type)).toBe(true);
      expect(threaded.partitions.map((p) => p.rows)).toEqual([10, 17, 6, 23, 10, 17, 6, 23]);
      for (const opts of [
        { batchSize: 9 },
        { batchSize: 9, shuffle: 'buffer', seed: 4 },
        { batchSize: 16, shuffle: 'global', seed: 2, rank: 1, worldSize: 2 },
      ] as BatchesOptions[]) {
        const got = await collect(threaded.batches(opts));
        const want = await collect(plain.batches(opts));
        expect(contents(got)).toEqual(contents(want));
        const tags = got.flatMap((b) => Array.from({ length: b.numRows }, (_, i) => [b.getChild('id')?.get(i) as number, b.getChild('tag')?.get(i) as string]));
        for (const [id, tag] of tags) expect(tag).toBe(`tag-${(id as number) % 7}`);
      }
      const all = (await collect(threaded.batches({ batchSize: 9 }))).flatMap(ids);
      expect(all).toEqual([0, 1].flatMap((f) => Array.from({ length: 56 }, (_, i) => f * 1000 + i)));
    } finally {
      await closeAll(threaded, plain);
    }
  });

  it('reads small raw files the same in both modes', async () => {
    const threaded = track(await Dataset.files(raw, { fs, filesPerPartition: 5 }));
    const plain = track(await Dataset.files(raw, { fs, filesPerPartition: 5, loaderThread: false }));
    try {
      expect(threaded.loaderThread).toBe(true);
      expect(threaded.partitions.length).toBe(5);
      for (const opts of [{ batchSize: 4 }, { batchSize: 4, shuffle: true, seed: 5, rank: 1, worldSize: 2 }, { batchSize: 6, shuffle: 'global', seed: 3 }] as BatchesOptions[]) {
        const got = await collect(threaded.batches(opts));
        expect(contents(got)).toEqual(contents(await collect(plain.batches(opts))));
      }
      const seen = new Map<string, number[]>();
      for (const b of await collect(threaded.batches({ batchSize: 7 }))) {
        for (let i = 0; i < b.numRows; i++) seen.set(b.getChild('key')?.get(i) as string, Array.from(b.getChild('bytes')?.get(i) as Uint8Array));
      }
      expect(seen.size).toBe(23);
      expect(seen.get('07.bin')).toEqual([49, 50, 51, 52, 53]);
    } finally {
      await closeAll(threaded, plain);
    }
  });
});

describe('loader thread: resume', () => {
  for (const opts of [
    { batchSize: 24, epoch: 2, seed: 11, shuffle: 'buffer', rank: 1, worldSize: 2 },
    { batchSize: 24, shuffle: 'none' },
    { batchSize: 17, seed: 3, shuffle: 'global', rank: 2, worldSize: 3, dropLast: true },
  ] as BatchesOptions[]) {
    it(`resumes (shuffle ${String(opts.shuffle)}) with exactly the remaining batches`, async () => {
      const threaded = await openPq();
      const plain = await openPq(false);
      try {
        const full = contents(await collect(plain.batches(opts)));
        expect(full.length).toBeGreaterThan(6);
        // 1 with batchSize 24 stops inside the first 100-row partition.
        for (const k of [0, 1, 3, full.length - 1, full.length]) {
          const first = threaded.batches(opts);
          expect(first.numBatches).toBe(full.length);
          const got: RecordBatch[] = [];
          if (k > 0) {
            for await (const b of first) {
              got.push(b);
              if (got.length === k) break;
            }
          }
          const state = JSON.parse(JSON.stringify(first.state())) as LoaderState;
          expect(state.batchesDone).toBe(k);
          // The same point reached on the calling thread gives the same state.
          const ref = plain.batches(opts);
          let n = 0;
          if (k > 0) for await (const _ of ref) if (++n === k) break;
          expect(state).toEqual(JSON.parse(JSON.stringify(ref.state())));

          const resumed = threaded.batches({ ...opts, resume: state });
          expect(resumed.numBatches).toBe(full.length - k);
          const rest = contents(await bounded(collect(resumed), 'resumed stream'));
          expect(contents(got)).toEqual(full.slice(0, k));
          expect(rest).toEqual(full.slice(k));
        }
      } finally {
        await closeAll(threaded, plain);
      }
    });
  }
});

describe('loader thread: errors', () => {
  it('rejects with a coded error naming a corrupt file, and a dataset over the good files still works', async () => {
    const ds = track(await Dataset.parquet(bad, { fs, decodeThreads: 1 }));
    try {
      expect(ds.loaderThread).toBe(true);
      const err = await bounded(failure(collect(ds.batches({ batchSize: 25 }))), 'the failing stream');
      expect(err).toBeInstanceOf(GranaryError);
      const g = err as GranaryError;
      expect(g.code).toMatch(/^GRANARY_ERR_/);
      expect(g.code).toMatch(/GRANARY_ERR_(DECODE|CORRUPT)/);
      expect(g.message).toContain(`${bad}b.parquet`);
      // The thread is still there for another stream (shuffled this time), which fails the same way.
      const again = await bounded(failure(collect(ds.batches({ batchSize: 25, shuffle: 'global', seed: 1 }))), 'the second failing stream');
      expect((again as GranaryError).code).toBe(g.code);
      expect((again as GranaryError).message).toContain('b.parquet');
    } finally {
      await closeAll(ds);
    }
    const ok = track(await Dataset.parquet([`${bad}a.parquet`, `${bad}c.parquet`], { fs, decodeThreads: 1 }));
    try {
      expect(ok.loaderThread).toBe(true);
      expect((await collect(ok.batches({ batchSize: 50 }))).flatMap(ids)).toEqual(Array.from({ length: 240 }, (_, i) => i));
    } finally {
      await closeAll(ok);
    }
  });

  it('rejects with a coded error naming a file truncated after the dataset was opened', async () => {
    await mkdir(join(dir, 'trunc'));
    const url = `${dirUrl(join(dir, 'trunc'))}b.parquet`;
    await writeFile(join(dir, 'trunc', 'a.parquet'), goodBytes);
    await writeFile(join(dir, 'trunc', 'b.parquet'), parquetBytes(120, 120, 40));
    const ds = track(await Dataset.parquet(dirUrl(join(dir, 'trunc')), { fs, decodeThreads: 1 }));
    try {
      const bytes = parquetBytes(120, 120, 40);
      await writeFile(join(dir, 'trunc', 'b.parquet'), bytes.subarray(0, bytes.byteLength >> 1));
      const err = await bounded(failure(collect(ds.batches({ batchSize: 30 }))), 'the failing stream');
      expect(err).toBeInstanceOf(GranaryError);
      expect((err as GranaryError).code).toMatch(/^GRANARY_ERR_/);
      expect((err as GranaryError).message).toContain(url);
    } finally {
      await closeAll(ds);
    }
  });
});

describe('loader thread: reads in the decode threads (fetchInDecoder)', () => {
  it('yields the same batches and counts the same reads with and without it, in both modes', async () => {
    const variants = [
      { loaderThread: true, fetchInDecoder: true },
      { loaderThread: true, fetchInDecoder: false },
      { loaderThread: false, fetchInDecoder: true },
      { loaderThread: false, fetchInDecoder: false },
    ];
    const got: { contents: ReturnType<typeof contents>; gets: number; bytes: number }[] = [];
    for (const v of variants) {
      const ds = track(await Dataset.parquet(pq, { fs: new LocalUfs(), decodeThreads: 2, ...v }));
      try {
        const before = await ds.readStats();
        const batches = await collect(ds.batches({ batchSize: 37, shuffle: 'buffer', seed: 3 }));
        const after = await ds.readStats();
        got.push({ contents: contents(batches), gets: after.requests.get - before.requests.get, bytes: after.requests.bytesRead - before.requests.bytesRead });
      } finally {
        await closeAll(ds);
      }
    }
    // Same batches everywhere. The same reads on the calling thread; with a loader thread,
    // the next epoch's priming may have added its first reads by the time readStats asks.
    for (const g of got.slice(1)) expect(g.contents).toEqual(got[0]?.contents);
    const [t1, t2, m1, m2] = got as [(typeof got)[0], (typeof got)[0], (typeof got)[0], (typeof got)[0]];
    expect(m1.gets).toBeGreaterThan(0);
    expect({ gets: m2.gets, bytes: m2.bytes }).toEqual({ gets: m1.gets, bytes: m1.bytes });
    for (const t of [t1, t2]) {
      expect(t.gets).toBeGreaterThanOrEqual(m1.gets);
      expect(t.bytes).toBeGreaterThanOrEqual(m1.bytes);
    }
  });

  it('takes true, false or auto, and rejects anything else with a coded error', async () => {
    for (const fetchInDecoder of [true, false, 'auto'] as const) {
      const ds = track(await Dataset.parquet(pq, { fs, decodeThreads: 1, fetchInDecoder }));
      expect((await collect(ds.batches({ batchSize: 100 }))).reduce((a, b) => a + b.numRows, 0)).toBe(PQ_ROWS);
      await closeAll(ds);
    }
    const err = await failure(Dataset.parquet(pq, { fs, fetchInDecoder: 'yes' as unknown as boolean }));
    expect(err).toMatchObject({ code: 'GRANARY_ERR_INVALID_ARGUMENT' });
    expect((err as Error).message).toContain('fetchInDecoder');
  });

  it('rejects with GRANARY_ERR_NOT_FOUND naming a file deleted after the dataset was opened, stream after stream', async () => {
    for (const fetchInDecoder of [true, false]) {
      const sub = join(dir, `gone-${String(fetchInDecoder)}`);
      await mkdir(sub);
      await writeFile(join(sub, 'a.parquet'), goodBytes);
      await writeFile(join(sub, 'b.parquet'), parquetBytes(120, 120, 40));
      const ds = track(await Dataset.parquet(dirUrl(sub), { fs, decodeThreads: 1, fetchInDecoder }));
      try {
        await rm(join(sub, 'b.parquet'));
        const err = await bounded(failure(collect(ds.batches({ batchSize: 30 }))), 'the failing stream');
        expect(err).toBeInstanceOf(GranaryError);
        expect((err as GranaryError).code).toBe('GRANARY_ERR_NOT_FOUND');
        expect((err as GranaryError).message).toContain(`${dirUrl(sub)}b.parquet`);
        // The decoders are still there and answer the same, at once.
        const again = await bounded(failure(collect(ds.batches({ batchSize: 30, seed: 9 }))), 'the next failing stream');
        expect((again as GranaryError).code).toBe('GRANARY_ERR_NOT_FOUND');
      } finally {
        await closeAll(ds);
      }
    }
  });
});

describe('loader thread: cancellation', () => {
  it('ends promptly on break, on a signal abort and on ds.close() mid-iteration, leaving no threads or ports', async () => {
    const ds = await openPq();
    expect(ds.loaderThread).toBe(true);
    const total = ds.partitions.length;

    // break after 2 batches
    const s1 = ds.batches({ batchSize: 10, prefetch: 2 });
    await bounded(
      (async () => {
        let n = 0;
        for await (const _ of s1) if (++n === 2) break;
      })(),
      'break',
    );
    expect(s1.stats().batches).toBe(2);
    expect(s1.stats().partitionsFetched).toBeLessThan(total);

    // signal abort mid-epoch: rejects with the reason
    const ac = new AbortController();
    const reason = new Error('stop here');
    const s2 = ds.batches({ batchSize: 10, prefetch: 2, shuffle: 'buffer', signal: ac.signal });
    const err = await bounded(
      failure(
        (async () => {
          let k = 0;
          for await (const _ of s2) if (++k === 3) ac.abort(reason);
        })(),
      ),
      'abort',
    );
    expect(err).toBe(reason);
    expect(s2.stats().batches).toBe(3);

    // The dataset still works after both.
    expect((await bounded(collect(ds.batches({ batchSize: 200 })), 'a full epoch')).flatMap(ids).length).toBe(PQ_ROWS);

    // ds.close() while one stream is between batches and another waits for its first
    const s3 = ds.batches({ batchSize: 10, prefetch: 2 });
    const it3 = s3[Symbol.asyncIterator]();
    await bounded(it3.next(), 'batch 1');
    await bounded(it3.next(), 'batch 2');
    const s4: BatchStream = ds.batches({ batchSize: 10, shuffle: 'global', seed: 8 });
    const pending = s4[Symbol.asyncIterator]().next();
    const closing = ds.close();
    const e3 = await bounded(failure(it3.next()), 'next() after close');
    expect((e3 as GranaryError).code).toBe('GRANARY_ERR_CLOSED');
    const e4 = await bounded(failure(pending), 'pending next() across close');
    expect((e4 as GranaryError).code).toBe('GRANARY_ERR_CLOSED');
    await bounded(closing, 'ds.close()');
    await ds.close();
    expect(() => ds.batches({ batchSize: 1 })).toThrow(/closed/);
    // Nothing else of this file holds threads now.
    for (const o of opened) await o.close();
    opened.clear();
    expect(await leakedHandles()).toEqual([]);
  });
});

describe('loader thread: stats', () => {
  it('counts what was yielded and fetched, and readStats sums the thread store client', async () => {
    const ds = await openPq();
    const plain = await openPq(false);
    try {
      const before = await ds.readStats();
      const stream = ds.batches({ batchSize: 50 });
      const batches = await collect(stream);
      const st = stream.stats();
      expect(st.batches).toBe(batches.length);
      expect(st.rows).toBe(batches.reduce((a, b) => a + b.numRows, 0));
      expect(st.rows).toBe(PQ_ROWS);
      expect(st.partitionsFetched).toBe(ds.partitions.length);
      expect(st.bytesFetched).toBeGreaterThan(0);
      const ref = plain.batches({ batchSize: 50 });
      await collect(ref);
      expect(st.bytesFetched).toBe(ref.stats().bytesFetched);

      // One rank of three, shuffled: partitions read are those the plan gives it.
      const sharded = ds.batches({ batchSize: 16, shuffle: 'buffer', seed: 2, rank: 1, worldSize: 3 });
      const sb = await collect(sharded);
      const refSharded = plain.batches({ batchSize: 16, shuffle: 'buffer', seed: 2, rank: 1, worldSize: 3 });
      await collect(refSharded);
      expect(sharded.stats().batches).toBe(sb.length);
      expect(sharded.stats().rows).toBe(sb.reduce((a, b) => a + b.numRows, 0));
      expect(sharded.stats().partitionsFetched).toBe(refSharded.stats().partitionsFetched);
      expect(sharded.stats().partitionsFetched).toBeLessThan(ds.partitions.length);

      const rs = await ds.readStats();
      expect(rs.requests.get).toBeGreaterThan(before.requests.get);
      const dataBytes = ds.partitions.reduce((a, p) => a + p.bytes, 0);
      expect(rs.requests.bytesRead - before.requests.bytesRead).toBeGreaterThanOrEqual(dataBytes);
      expect(rs.cache).toBeUndefined();
    } finally {
      await closeAll(ds, plain);
    }
  });
});

describe('loader thread: edge cases', () => {
  it('yields nothing for an empty directory, and rejects at once for an already aborted signal', async () => {
    await mkdir(join(dir, 'empty'));
    const empty = track(await Dataset.parquet(dirUrl(join(dir, 'empty')), { fs, decodeThreads: 1 }));
    const ds = await openPq();
    try {
      const s = empty.batches({ batchSize: 8 });
      expect(s.numBatches).toBe(0);
      expect(await bounded(collect(s), 'an empty stream')).toEqual([]);
      const reason = new Error('aborted before the start');
      const err = await bounded(failure(collect(ds.batches({ batchSize: 8, signal: AbortSignal.abort(reason) }))), 'an aborted stream');
      expect(err).toBe(reason);
      expect((await bounded(collect(ds.batches({ batchSize: 300 })), 'the next stream')).flatMap(ids).length).toBe(PQ_ROWS);
    } finally {
      await closeAll(empty, ds);
    }
  });

  // BUG (loader-thread.ts runStream): the thread writes a stream's counters into the shared
  // stats buffer (report()) only AFTER it has posted the batch or partitions that message
  // carries. The consumer can receive that last message, yield the last batch and end
  // before report() runs, so stream.stats() right after the end still shows the previous
  // values (e.g. partitionsFetched 1 of 2, bytesFetched of the first partition only).
  // It is a race: about 1 stream in 200 shows it here, so this test runs many short
  // streams. Reporting before postMessage (or once more before `end`, which the consumer
  // does not wait for) would fix it.
  it('stats() is final once the last batch was yielded (many short streams)', async () => {
    await mkdir(join(dir, 'tiny'));
    await writeFile(join(dir, 'tiny', 'a.parquet'), parquetBytes(0, 40, 20));
    const tiny = dirUrl(join(dir, 'tiny'));
    const ds = track(await Dataset.parquet(tiny, { fs, decodeThreads: 1 }));
    const plain = track(await Dataset.parquet(tiny, { fs, decodeThreads: 1, loaderThread: false }));
    try {
      const ref = plain.batches({ batchSize: 20 });
      await collect(ref);
      const want = { partitionsFetched: ref.stats().partitionsFetched, bytesFetched: ref.stats().bytesFetched };
      expect(want.partitionsFetched).toBe(2);
      const stale: string[] = [];
      for (let i = 0; i < 500; i++) {
        const s = ds.batches({ batchSize: 20 });
        let k = 0;
        let seen = { partitionsFetched: -1, bytesFetched: -1 };
        for await (const _ of s) {
          if (++k === s.numBatches) seen = { partitionsFetched: s.stats().partitionsFetched, bytesFetched: s.stats().bytesFetched };
        }
        if (seen.partitionsFetched !== want.partitionsFetched || seen.bytesFetched !== want.bytesFetched) {
          stale.push(`stream ${i}: partitionsFetched ${seen.partitionsFetched}, bytesFetched ${seen.bytesFetched}`);
        }
      }
      expect(stale, `stats after the last batch, want ${JSON.stringify(want)}`).toEqual([]);
    } finally {
      await closeAll(ds, plain);
    }
  });
});

describe('loader thread through a real cache worker', () => {
  let worker: CacheWorker;

  beforeAll(async () => {
    worker = await startWorker({ fileRoot: dir, memoryBytes: 16 * 1024 * 1024, pageSize: 16 * 1024 });
  });

  afterAll(async () => {
    await worker?.close();
  });

  it('runs the thread on a CacheClient; a second epoch gives the same sums and hits the cache', async () => {
    const client = new CacheClient({ workers: [worker.url], ufs: new LocalUfs({ root: dir, fsync: false }), blockSize: 64 * 1024, partSize: 64 * 1024 });
    const ds = track(await Dataset.parquet(pq, { fs: client, decodeThreads: 1 }));
    try {
      expect(ds.loaderThread).toBe(true);
      const sums = async (epoch: number): Promise<{ id: number; x: number; rows: number }> => {
        let id = 0;
        let x = 0;
        let rows = 0;
        for await (const b of ds.batches({ batchSize: 64, epoch, seed: 3, shuffle: 'buffer' })) {
          rows += b.numRows;
          for (const v of ids(b)) id += v;
          for (const v of b.getChild('x')?.toArray() as Float64Array) x += v;
        }
        return { id, x, rows };
      };
      const first = await bounded(sums(0), 'epoch 0');
      expect(first).toEqual({ id: (PQ_ROWS * (PQ_ROWS - 1)) / 2, x: (PQ_ROWS * (PQ_ROWS - 1)) / 4, rows: PQ_ROWS });
      const hitsBefore = (await ds.readStats()).cache?.hits ?? 0;
      const second = await bounded(sums(1), 'epoch 1');
      expect(second).toEqual(first);
      const rs = await ds.readStats();
      expect(rs.cache).toBeDefined();
      expect(rs.cache?.hits ?? 0).toBeGreaterThan(0);
      expect(rs.cache?.hits ?? 0).toBeGreaterThan(hitsBefore);
    } finally {
      await closeAll(ds);
      await client.close();
    }
  });
});

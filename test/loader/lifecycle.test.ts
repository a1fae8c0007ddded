import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { isGranaryError } from '../../src/errors.js';
import type { ReadOptions } from '../../src/ufs/types.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { Dataset } from '../../src/loader/dataset.js';
import { DecodePool } from '../../src/loader/decode-pool.js';
import type { ParquetDecodeTask } from '../../src/loader/decode-parquet.js';
import { collect, parquetBytes, parquetDataset } from './helpers.js';

/**
 * Lifecycle of the loader's long-lived objects (DecodePool, Dataset, batch streams):
 * `close()` settles every call queued or in flight with GRANARY_ERR_CLOSED and later
 * ones at once, `destroy(err)` with `err`, `[Symbol.asyncDispose]` closes, and every
 * async call takes a signal whose abort drops the queued work and rejects with its reason.
 */

const fixture = new URL('../fixtures/loader-close-child.ts', import.meta.url).pathname;

/** Runs the fixture's scenario in a child process: its exit code and signal, and the JSON it printed. */
async function runChild(scenario: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; report: Record<string, unknown>; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, scenario], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  // A process that does not exit by itself is what this test is about: kill it after a
  // generous bound so that the failure says so instead of timing the test out.
  const killer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  clearTimeout(killer);
  const line = out.trim().split('\n').pop() ?? '';
  let report: Record<string, unknown> = {};
  try {
    report = JSON.parse(line) as Record<string, unknown>;
  } catch {
    /* reported below through stderr */
  }
  return { code, signal, report, stderr: err };
}

/** The error code a promise rejects with, 'ok' when it resolves. */
function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'ok',
    (e: unknown) => (isGranaryError(e) ? e.code : `${(e as Error).name}: ${(e as Error).message}`),
  );
}

/** What `p` rejects with (a handler attached at once, so a rejection while the test awaits something else is not unhandled). */
function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

/** A decode of row group 0 of a whole Parquet file: the file as one piece, its own footer appended. */
function decodeTask(rows: number): ParquetDecodeTask {
  const bytes = parquetBytes(0, rows, rows);
  const metaLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(bytes.byteLength - 8, true);
  return { kind: 'parquet', url: 'mem://t/part.parquet', size: bytes.byteLength, footer: bytes.slice(bytes.byteLength - 8 - metaLength), pieces: [{ offset: 0, bytes }], numRows: rows };
}

/** A store whose reads wait for `open()`, ignoring their signal: a queued task's rejection must come from the queue. */
class GatedUfs extends MemoryUfs {
  started = 0;
  #open: (() => void) | undefined;
  readonly #gate = new Promise<void>((resolve) => (this.#open = resolve));

  override async read(url: string, offset: number, length: number, options: ReadOptions = {}): Promise<Uint8Array> {
    this.started++;
    await this.#gate;
    return super.read(url, offset, length, { ...options, signal: undefined });
  }

  open(): void {
    this.#open?.();
  }
}

describe('a closed loader lets the process exit (child process)', () => {
  it('rejects every decode queued or running on a closed pool with GRANARY_ERR_CLOSED, and the process exits by itself', async () => {
    const { code, signal, report, stderr } = await runChild('pool');
    expect(stderr).not.toMatch(/Error/);
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(report.pendingAtClose).toBeGreaterThan(100);
    // Within a second of close(): a generous bound, only there so a hang fails as such.
    expect(report.inTime).toBe(true);
    expect(report.outcomes).toEqual({ GRANARY_ERR_CLOSED: report.pendingAtClose });
    expect(report.after).toBe('GRANARY_ERR_CLOSED');
  }, 120_000);

  for (const scenario of ['dataset', 'dataset-thread']) {
    it(`closes a dataset mid-epoch (${scenario === 'dataset' ? 'calling thread' : 'loader thread'}): waiting and later calls reject with GRANARY_ERR_CLOSED, and the process exits by itself`, async () => {
      const { code, signal, report, stderr } = await runChild(scenario);
      expect(stderr).not.toMatch(/Error/);
      expect({ code, signal }).toEqual({ code: 0, signal: null });
      expect(report.loaderThread).toBe(scenario === 'dataset-thread');
      expect(report.inTime).toBe(true);
      const [asked, waiting, later] = report.outcomes as string[];
      // The next() asked before close() may already have had its batch (the thread sends ahead).
      expect(['ok', 'GRANARY_ERR_CLOSED']).toContain(asked);
      expect([waiting, later]).toEqual(['GRANARY_ERR_CLOSED', 'GRANARY_ERR_CLOSED']);
      expect(report.after).toEqual(['GRANARY_ERR_CLOSED', 'GRANARY_ERR_CLOSED']);
    }, 120_000);
  }
});

describe('DecodePool lifecycle', () => {
  it('destroy(err) rejects queued and running decodes with err, later ones with GRANARY_ERR_CLOSED; close and destroy are idempotent', async () => {
    const task = decodeTask(2000);
    const pool = new DecodePool({ threads: 1 });
    const calls = Array.from({ length: 5 }, () => failure(pool.decode(task, [])));
    const boom = new Error('stop now');
    const destroying = pool.destroy(boom);
    expect(await Promise.all(calls)).toEqual(calls.map(() => boom));
    await destroying;
    expect(pool.closed).toBe(true);
    await expect(pool.decode(task, [])).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
    await pool.close();
    await pool.destroy(new Error('again'));
    await pool[Symbol.asyncDispose]();
  });

  it('drops a decode whose signal aborts while it waits for a thread, with the signal reason, and runs the others', async () => {
    const task = decodeTask(2000);
    const pool = new DecodePool({ threads: 1 });
    try {
      const ac = new AbortController();
      const settled: string[] = [];
      const first = pool.decode(task, []).finally(() => settled.push('first'));
      const dropped = failure(pool.decode(task, [], { signal: ac.signal })).finally(() => settled.push('dropped'));
      const last = pool.decode(task, []);
      const reason = new Error('no longer needed');
      ac.abort(reason);
      expect(await dropped).toBe(reason);
      // It left the queue at once, not when its turn came after the running decode.
      expect(settled).toEqual(['dropped']);
      await expect(first).resolves.toBeInstanceOf(Uint8Array);
      await expect(last).resolves.toBeInstanceOf(Uint8Array);
      await expect(pool.decode(task, [], { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    } finally {
      await pool.close();
    }
  });

  it('closes a pool shared by a dataset: the dataset streams then fail with GRANARY_ERR_CLOSED', async () => {
    const fs = await parquetDataset([400], 50);
    const pool = new DecodePool({ threads: 1 });
    const ds = await Dataset.parquet('s3://bucket/ds/', { fs, pool });
    await pool.close();
    await expect(collect(ds.batches({ batchSize: 50 }))).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
    await ds.close();
  });
});

describe('Dataset lifecycle', () => {
  it('drops the footer reads still queued when the opening signal aborts, rejecting with its reason', async () => {
    const fs = new GatedUfs();
    for (let i = 0; i < 20; i++) await fs.write(`s3://bucket/ds/part-${String(i).padStart(2, '0')}.parquet`, parquetBytes(i * 10, 10, 10));
    const ac = new AbortController();
    const opening = Dataset.parquet('s3://bucket/ds/', { fs, signal: ac.signal });
    // Footers are read 8 at a time: wait for the first 8 to be blocked in the store.
    while (fs.started < 8) await new Promise<void>((resolve) => setImmediate(resolve));
    const reason = new Error('give up opening');
    ac.abort(reason);
    await expect(opening).rejects.toBe(reason);
    fs.open();
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(fs.started).toBe(8);
    await expect(Dataset.arrow('s3://bucket/ds/', { fs, signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await expect(Dataset.files('s3://bucket/ds/', { fs, signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it('readStats takes a signal and rejects with GRANARY_ERR_CLOSED once the dataset is closed', async () => {
    const fs = await parquetDataset([100], 50);
    const ds = await Dataset.parquet('s3://bucket/ds/', { fs, decodeThreads: 1 });
    expect((await ds.readStats({ signal: new AbortController().signal })).requests.get).toBeGreaterThan(0);
    const reason = new Error('not now');
    await expect(ds.readStats({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await ds[Symbol.asyncDispose]();
    await expect(ds.readStats()).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
    expect(() => ds.batches({ batchSize: 1 })).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_CLOSED' }));
  });

  it('destroy(err) fails a waiting next() with err and later calls with GRANARY_ERR_CLOSED', async () => {
    const fs = await parquetDataset([400], 50);
    const ds = await Dataset.parquet('s3://bucket/ds/', { fs, decodeThreads: 1 });
    const waiting = failure(ds.batches({ batchSize: 50 })[Symbol.asyncIterator]().next());
    const boom = new Error('abrupt stop');
    await ds.destroy(boom);
    expect(await waiting).toBe(boom);
    await expect(ds.readStats()).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
    await ds.close();
    await ds.destroy();
  });
});

describe('batch stream lifecycle', () => {
  it('close() mid-epoch frees the prefetch, fails next() with GRANARY_ERR_CLOSED, and the dataset goes on', async () => {
    const fs = await parquetDataset([1000], 10);
    const ds = await Dataset.parquet('s3://bucket/ds/', { fs, decodeThreads: 1 });
    try {
      const stream = ds.batches({ batchSize: 10, prefetch: 4 });
      const it = stream[Symbol.asyncIterator]();
      expect((await it.next()).done).toBe(false);
      await stream.close();
      await stream.close();
      const fetched = stream.stats().partitionsFetched;
      // Nothing more is read once close() resolved, however long we wait for the next call.
      expect(await outcome(it.next())).toBe('GRANARY_ERR_CLOSED');
      expect(await outcome(it.next())).toBe('GRANARY_ERR_CLOSED');
      expect(stream.stats().partitionsFetched).toBe(fetched);
      expect(stream.stats().partitionsFetched).toBeLessThan(100);

      // A stream closed before it is iterated fails at its first next().
      const unused = ds.batches({ batchSize: 10 });
      await unused[Symbol.asyncDispose]();
      expect(await outcome(unused[Symbol.asyncIterator]().next())).toBe('GRANARY_ERR_CLOSED');

      // destroy(err): err for the waiting call and the later ones.
      const s3 = ds.batches({ batchSize: 10 });
      const it3 = s3[Symbol.asyncIterator]();
      const waiting = failure(it3.next());
      const boom = new Error('abrupt');
      await s3.destroy(boom);
      expect(await waiting).toBe(boom);
      await expect(it3.next()).rejects.toBe(boom);

      // A stream that yielded every batch stays ended.
      const whole = ds.batches({ batchSize: 500 });
      expect((await collect(whole)).length).toBe(2);
      await whole.close();

      expect((await collect(ds.batches({ batchSize: 250 }))).reduce((a, b) => a + b.numRows, 0)).toBe(1000);
    } finally {
      await ds.close();
    }
  });

  it('breaking out of for await stops its reads before return() resolves', async () => {
    const fs = await parquetDataset([1000], 10);
    const ds = await Dataset.parquet('s3://bucket/ds/', { fs, decodeThreads: 1 });
    try {
      const stream = ds.batches({ batchSize: 10, prefetch: 8 });
      for await (const _ of stream) break;
      const fetched = stream.stats().partitionsFetched;
      const reads = fs.requestCounts().get;
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(stream.stats().partitionsFetched).toBe(fetched);
      expect(fs.requestCounts().get).toBe(reads);
    } finally {
      await ds.close();
    }
  });
});

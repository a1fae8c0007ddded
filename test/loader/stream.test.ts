import { tableFromArrays, tableFromIPC, type RecordBatch } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { planEpoch } from '../../src/shuffle/index.js';
import type { EpochPlanInput } from '../../src/shuffle/types.js';
import { DecodePool } from '../../src/loader/decode-pool.js';
import type { ParquetDecodeTask } from '../../src/loader/decode-parquet.js';
import { describeParquet, readParquetFooter, rowGroupFooter } from '../../src/loader/parquet-footer.js';
import { PipelineStream, type PartitionSource } from '../../src/loader/stream.js';
import { waitFor } from '../support/wait.js';
import { parquetDataset } from './helpers.js';

/**
 * The pipeline against a source whose fetches finish when the test says so: each decode
 * must carry a priority that puts the partitions needed first ahead of the others among
 * those waiting for a decode thread, whatever order their fetches finish in.
 */

const ROWS = 10;
const PARTS = 5;

function partitionBatch(p: number): RecordBatch {
  const t = tableFromArrays({ id: Int32Array.from({ length: ROWS }, (_, i) => p * ROWS + i) });
  return t.batches[0] as RecordBatch;
}

interface Decoded {
  p: number;
  priority: number;
}

/** A source whose fetch of partition p resolves when `finish(p)` is called; decode records the priority it was given. */
function gatedSource(): { src: PartitionSource; finish: (p: number) => void; fetchesStarted: () => number[]; decoded: Decoded[] } {
  const gates = new Map<number, () => void>();
  const started: number[] = [];
  const decoded: Decoded[] = [];
  const src: PartitionSource = {
    schema: partitionBatch(0).schema,
    partitionRows: Array.from({ length: PARTS }, () => ROWS),
    partitionBytes: () => 1,
    fetch: (p) =>
      new Promise((resolve) => {
        started.push(p);
        gates.set(p, () => resolve(p));
      }),
    decode: (p, _fetched, _signal, priority) => {
      decoded.push({ p, priority: priority ?? Number.NaN });
      return Promise.resolve([partitionBatch(p)]);
    },
  };
  return { src, finish: (p) => gates.get(p)?.(), fetchesStarted: () => [...started], decoded };
}

const input = (epoch: number): EpochPlanInput => ({ partitionRows: Array.from({ length: PARTS }, () => ROWS), seed: 3, epoch, rank: 0, worldSize: 1, batchSize: ROWS, mode: 'none', dropLast: false });


/** Partitions by descending priority. */
const byPriority = (d: Decoded[]): number[] => [...d].sort((a, b) => b.priority - a.priority).map((x) => x.p);

describe('PipelineStream decode priority', () => {
  it('primes the first batch alone, then ranks decodes by need, not by the order fetches finish in', async () => {
    const { src, finish, fetchesStarted, decoded } = gatedSource();
    const stream = new PipelineStream(src, { plan: planEpoch(input(0)), input: input(0), prefetch: 4, prefetchBytes: 100, fetchConcurrency: 5 });
    stream.prime();
    // Only the first batch's partition is read until it is in (the window would start at once in prime()); then the window.
    expect(fetchesStarted()).toEqual([0]);
    finish(0);
    await waitFor(() => fetchesStarted().length === PARTS, { what: 'every partition fetch to start' });
    // Fetches finish last-needed first; each is handed to the decoder as soon as it is in.
    for (const p of [4, 3, 2, 1]) finish(p);
    await waitFor(() => decoded.length === PARTS, { what: 'every partition to be decoded' });
    expect(decoded.map((d) => d.p)).toEqual([0, 4, 3, 2, 1]);
    expect(byPriority(decoded)).toEqual([0, 1, 2, 3, 4]);
    const ids: number[] = [];
    for await (const b of stream) ids.push(...Array.from(b.getChild('id')?.toArray() as Int32Array));
    expect(ids).toEqual(Array.from({ length: PARTS * ROWS }, (_, i) => i));
  });

});

describe('DecodePool priority', () => {
  it('runs the tasks waiting for its thread by priority, then in the order asked', async () => {
    const fs = await parquetDataset([4000], 500);
    const info = await fs.stat('s3://bucket/ds/part-000.parquet');
    const { meta, metaLength } = await readParquetFooter(fs, info);
    const file = describeParquet(info, meta, metaLength, undefined);
    const pool = new DecodePool({ threads: 1 });
    try {
      const task = async (rg: number): Promise<{ task: ParquetDecodeTask; transfer: ArrayBuffer[] }> => {
        const g = file.rowGroups[rg] as (typeof file.rowGroups)[number];
        const pieces = await Promise.all(g.ranges.map(async (r) => ({ offset: r.offset, bytes: (await fs.read(file.url, r.offset, r.length)).slice() })));
        return { task: { kind: 'parquet', url: file.url, size: file.size, footer: rowGroupFooter(file, rg), pieces, numRows: g.numRows }, transfer: pieces.map((x) => x.bytes.buffer) };
      };
      const tasks = await Promise.all([0, 1, 2, 3, 4, 5].map(task));
      const order: number[] = [];
      const run = (k: number, priority: number): Promise<void> => {
        const t = tasks[k] as { task: ParquetDecodeTask; transfer: ArrayBuffer[] };
        return pool.decode(t.task, t.transfer, undefined, priority).then((ipc) => {
          expect(tableFromIPC(ipc).getChild('id')?.get(0)).toBe(k * 500);
          order.push(k);
        });
      };
      // Task 0 takes the only thread; the rest wait and go by priority (ties: first asked, first run).
      await Promise.all([run(0, 0), run(1, -5), run(2, -1), run(3, -3), run(4, -1), run(5, 7)]);
      expect(order).toEqual([0, 5, 2, 4, 3, 1]);
    } finally {
      await pool.close();
    }
  });
});

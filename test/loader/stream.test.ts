import { tableFromArrays, type RecordBatch } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { planEpoch } from '../../src/shuffle/index.js';
import type { EpochPlanInput } from '../../src/shuffle/types.js';
import { PipelineStream, type PartitionSource } from '../../src/loader/stream.js';

/**
 * The pipeline against a source whose fetches finish when the test says so: decodes
 * must be asked for in the order the plan needs the partitions, whatever order their
 * fetches finish in.
 */

const ROWS = 10;
const PARTS = 5;

function partitionBatch(p: number): RecordBatch {
  const t = tableFromArrays({ id: Int32Array.from({ length: ROWS }, (_, i) => p * ROWS + i) });
  return t.batches[0] as RecordBatch;
}

/** A source whose fetch of partition p resolves when `finish(p)` is called; decode records its order. */
function gatedSource(): { src: PartitionSource; finish: (p: number) => void; fetchesStarted: () => number[]; decodeOrder: number[] } {
  const gates = new Map<number, () => void>();
  const started: number[] = [];
  const decodeOrder: number[] = [];
  const schema = partitionBatch(0).schema;
  const src: PartitionSource = {
    schema,
    partitionRows: Array.from({ length: PARTS }, () => ROWS),
    partitionBytes: () => 1,
    fetch: (p) =>
      new Promise((resolve) => {
        started.push(p);
        gates.set(p, () => resolve(p));
      }),
    decode: (p) => {
      decodeOrder.push(p);
      return Promise.resolve([partitionBatch(p)]);
    },
  };
  return { src, finish: (p) => gates.get(p)?.(), fetchesStarted: () => [...started], decodeOrder };
}

const input: EpochPlanInput = { partitionRows: Array.from({ length: PARTS }, () => ROWS), seed: 0, epoch: 0, rank: 0, worldSize: 1, batchSize: ROWS, mode: 'none', dropLast: false };

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
}

describe('PipelineStream decode order', () => {
  it('asks for decodes in the order partitions are needed when their fetches finish in reverse', async () => {
    const { src, finish, fetchesStarted, decodeOrder } = gatedSource();
    const stream = new PipelineStream(src, { plan: planEpoch(input), input, prefetch: 4, prefetchBytes: 100, fetchConcurrency: 5 });
    stream.prime();
    await until(() => fetchesStarted().length === PARTS);
    // Fetches finish last-needed first.
    for (const p of [4, 3, 2, 1]) finish(p);
    await new Promise((r) => setTimeout(r, 20));
    // Nothing may be decoded before partition 0, which is needed first and not yet fetched.
    expect(decodeOrder).toEqual([]);
    finish(0);
    await until(() => decodeOrder.length === PARTS);
    expect(decodeOrder).toEqual([0, 1, 2, 3, 4]);
    const ids: number[] = [];
    for await (const b of stream) ids.push(...Array.from(b.getChild('id')?.toArray() as Int32Array));
    expect(ids).toEqual(Array.from({ length: PARTS * ROWS }, (_, i) => i));
  });

  it('a failed fetch does not hold back the decodes of the partitions after it', async () => {
    const { src, decodeOrder } = gatedSource();
    // Partition 1's fetch fails; the others finish at once.
    const failing: PartitionSource = { ...src, fetch: (p) => (p === 1 ? Promise.reject(new Error('boom')) : Promise.resolve(p)) };
    const stream = new PipelineStream(failing, { plan: planEpoch(input), input, prefetch: 4, prefetchBytes: 100, fetchConcurrency: 5 });
    stream.prime();
    await until(() => decodeOrder.length === PARTS - 1);
    expect(decodeOrder).toEqual([0, 2, 3, 4]);
    const it = stream[Symbol.asyncIterator]();
    expect((await it.next()).done).toBe(false);
    await expect(it.next()).rejects.toThrow('boom');
  });
});

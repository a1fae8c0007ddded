import { setTimeout as sleep } from 'node:timers/promises';
import type { RecordBatch } from 'apache-arrow';

/**
 * A simulated training step. It really reads the batch (every numeric value, one
 * byte in every 64 of the binary columns), then waits out the rest of
 * `stepMs` the way a host waits for an accelerator.
 *
 * It waits rather than spinning because that is what a GPU step looks like to the
 * process feeding it: the host thread is idle while the device computes, so the
 * loader's fetches, its decode threads and (in the demo) the in-process cache
 * workers keep running. A busy loop on the main thread would instead freeze all of
 * them for the whole step, which no real training job does to its loader.
 *
 * Returns the sum of the batch's `id` column (see `touchBatch`).
 */
export async function trainStep(batch: RecordBatch, stepMs: number, signal?: AbortSignal): Promise<number> {
  const started = performance.now();
  const sum = touchBatch(batch);
  const left = stepMs - (performance.now() - started);
  if (left >= 1) await sleep(left, undefined, signal ? { signal } : undefined);
  return sum;
}

let _sink = 0;

/**
 * Read every column of the batch once (one byte in 64 of binary data), and return
 * the sum of its `id` column (0 when it has none): summed over an epoch that is
 * rows·(rows−1)/2 whatever the order, so a caller can check every row came once.
 */
export function touchBatch(batch: RecordBatch): number {
  let ids = 0;
  for (const field of batch.schema.fields) {
    const vec = batch.getChild(field.name);
    if (!vec) continue;
    const values: unknown = vec.toArray();
    if (field.name === 'id' && values instanceof BigInt64Array) {
      for (const v of values) ids += Number(v);
    } else if (values instanceof Float32Array || values instanceof Float64Array || values instanceof Int32Array) {
      for (let i = 0; i < values.length; i++) _sink += values[i] ?? 0;
    } else {
      for (const d of vec.data) {
        const bytes: unknown = d.values;
        if (bytes instanceof Uint8Array) for (let i = 0; i < bytes.length; i += 64) _sink += bytes[i] ?? 0;
      }
    }
  }
  _sink %= 1 << 30;
  return ids;
}

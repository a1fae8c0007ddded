import { setTimeout as sleep } from 'node:timers/promises';
import type { RecordBatch } from 'apache-arrow';
import { InvalidArgumentError, throwIfAborted } from '../errors.js';

/**
 * A simulated accelerator, as the process feeding it sees one: a step is launched
 * asynchronously and runs for `stepMs` on the device while the host goes on, and the
 * host may run one step ahead, like a CUDA stream between two synchronisations.
 *
 * So a step starts when the previous one ends or when its batch arrives, whichever is
 * later; the device idles only while the host has no batch to give it. That is what
 * the data loader's job is about: a loader that keeps one batch ready keeps the
 * device busy, and a host a millisecond late (a timer on a busy 2-core machine, the
 * loader assembling the next batch) costs nothing as long as it is less than a step.
 *
 * The host waits rather than spinning, because the host thread is idle while the
 * device computes: the loader's fetches, its decode threads and the cache workers
 * keep running. A busy loop would freeze them, which no real training job does.
 */
export class SimulatedDevice {
  readonly stepMs: number;
  /** performance.now() when the work launched so far ends. */
  #busyUntil = 0;
  /** Device time of the steps launched so far (each `stepMs`). */
  #busyMs = 0;
  #steps = 0;

  constructor(stepMs: number) {
    if (!Number.isFinite(stepMs) || stepMs < 0) {
      throw new InvalidArgumentError(`Expected \`stepMs\` to be a number from 0 and up, got \`${String(stepMs)}\` (${typeof stepMs})`);
    }
    this.stepMs = stepMs;
  }

  /**
   * Launch one step. Resolves once the device can take the next launch: at once when
   * it was idle (this step starts now), else when the step before this one ends.
   */
  async step(signal?: AbortSignal): Promise<void> {
    const now = performance.now();
    const start = Math.max(now, this.#busyUntil);
    this.#busyUntil = start + this.stepMs;
    this.#busyMs += this.stepMs;
    this.#steps++;
    await sleepUntil(start, signal);
  }

  /** Wait until every launched step has ended (the end of an epoch). */
  async synchronize(signal?: AbortSignal): Promise<void> {
    await sleepUntil(this.#busyUntil, signal);
  }

  /** Device time and steps launched so far. */
  stats(): { busyMs: number; steps: number } {
    return { busyMs: this.#busyMs, steps: this.#steps };
  }
}

/** Sleep until `deadline` (performance.now() time); an abort rejects with the signal's reason. */
async function sleepUntil(deadline: number, signal: AbortSignal | undefined): Promise<void> {
  throwIfAborted(signal);
  try {
    for (let left = deadline - performance.now(); left >= 1; left = deadline - performance.now()) {
      await sleep(Math.floor(left), undefined, signal ? { signal } : undefined);
    }
  } catch (err) {
    throwIfAborted(signal);
    throw err;
  }
}

/**
 * One training step on `device`: the host reads the batch (every numeric value, one
 * byte in every 64 of the binary columns, as a copy to the device would), then
 * launches the step. Returns the sum of the batch's `id` column (see `touchBatch`).
 */
export async function trainStep(batch: RecordBatch, device: SimulatedDevice, signal?: AbortSignal): Promise<number> {
  const sum = touchBatch(batch);
  await device.step(signal);
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

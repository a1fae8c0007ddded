/**
 * Data stall as a training loop on an accelerator sees it: the step is asynchronous (the
 * loop awaits a timer, as it awaits the device), so the CPU stays free for the loader
 * while the "device" works. The step lasts `factor` × the loader's own warm per-batch
 * time, measured first in the same run on the same dataset, order and options.
 *
 * Stall = the time the loop waited in `next()` for batches 1..n-1, as a share of the
 * epoch from receiving batch 0 to the end of the last step.
 */
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import type { Dataset } from '../../src/loader/index.js';
import { median, quantile } from '../lib/report.js';

export type Order = 'none' | 'buffer';

export interface AsyncEpochOptions {
  batchSize: number;
  epoch: number;
  seed: number;
  shuffle: Order;
  prefetch: number;
  /** The asynchronous step per batch, in ms; 0 = no step (the loader as fast as it goes). */
  stepMs: number;
}

export interface AsyncEpochRun {
  shuffle: Order;
  rows: number;
  batches: number;
  wallMs: number;
  firstBatchMs: number;
  /** From receiving batch 0 to the end of the last step. */
  epochAfterFirstMs: number;
  /** Time waited in `next()` for batches 1..n-1. */
  waitAfterFirstMs: number;
  stallPct: number;
  stepMs: number;
  /** Measured duration of all steps (the timer can overrun by a fraction of a millisecond). */
  stepTotalMs: number;
  waitP50Ms: number;
  waitP99Ms: number;
  waitMaxMs: number;
  /** Waits longer than one step. */
  longWaits: number;
  /** Main-thread event-loop delay during the epoch (perf_hooks.monitorEventLoopDelay, 1 ms resolution). */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  /** Garbage-collection pauses on the main thread during the epoch. */
  gcCount: number;
  gcMs: number;
  gcMaxMs: number;
}

/**
 * Wait `ms` without holding the CPU: a timer for the whole milliseconds (Node's timers
 * have 1 ms resolution and round down), then yields to the event loop until the deadline,
 * so a fractional step is neither cut to the millisecond below nor stretched to the one above.
 */
export async function asyncStep(ms: number): Promise<void> {
  const end = performance.now() + ms;
  const whole = Math.floor(ms);
  if (whole >= 1) await sleep(whole);
  while (performance.now() < end) await yieldToLoop();
}

/** One epoch with an asynchronous step after every batch. */
export async function asyncEpoch(ds: Dataset, o: AsyncEpochOptions): Promise<AsyncEpochRun> {
  const gcs: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push(e.duration);
  });
  obs.observe({ entryTypes: ['gc'] });
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const stream = ds.batches({ batchSize: o.batchSize, epoch: o.epoch, seed: o.seed, shuffle: o.shuffle, prefetch: o.prefetch });
  const it = stream[Symbol.asyncIterator]();
  const t0 = performance.now();
  let tFirst = 0;
  let wait = 0;
  let stepTotal = 0;
  const waits: number[] = [];
  let rows = 0;
  let n = 0;
  for (;;) {
    const ta = performance.now();
    const r = await it.next();
    const tb = performance.now();
    if (r.done) break;
    if (n === 0) tFirst = tb;
    else {
      wait += tb - ta;
      waits.push(tb - ta);
    }
    n++;
    rows += r.value.numRows;
    if (o.stepMs > 0) {
      await asyncStep(o.stepMs);
      stepTotal += performance.now() - tb;
    }
  }
  const tEnd = performance.now();
  loop.disable();
  // GC entries are delivered asynchronously: let the observer's queue drain first.
  await yieldToLoop();
  obs.disconnect();
  const after = tEnd - tFirst;
  return {
    shuffle: o.shuffle,
    rows,
    batches: n,
    wallMs: tEnd - t0,
    firstBatchMs: tFirst - t0,
    epochAfterFirstMs: after,
    waitAfterFirstMs: wait,
    stallPct: (100 * wait) / after,
    stepMs: o.stepMs,
    stepTotalMs: stepTotal,
    waitP50Ms: quantile(waits, 0.5),
    waitP99Ms: quantile(waits, 0.99),
    waitMaxMs: quantile(waits, 1),
    longWaits: o.stepMs > 0 ? waits.filter((w) => w > o.stepMs).length : 0,
    loopDelayP99Ms: loop.percentile(99) / 1e6,
    loopDelayMaxMs: loop.max / 1e6,
    gcCount: gcs.length,
    gcMs: gcs.reduce((a, b) => a + b, 0),
    gcMaxMs: gcs.length ? Math.max(...gcs) : 0,
  };
}

/**
 * The loader's warm per-batch time: epochs with no step, back to back, each giving
 * (epoch after batch 0) / (batches − 1); the median of `epochs`.
 */
export async function warmPerBatchMs(ds: Dataset, o: Omit<AsyncEpochOptions, 'stepMs'>, epochs: number): Promise<{ perBatchMs: number; runs: AsyncEpochRun[] }> {
  const runs: AsyncEpochRun[] = [];
  for (let k = 0; k < epochs; k++) runs.push(await asyncEpoch(ds, { ...o, epoch: o.epoch + k, stepMs: 0 }));
  return { perBatchMs: median(runs.map((r) => r.epochAfterFirstMs / Math.max(1, r.batches - 1))), runs };
}

export interface AsyncStallResult {
  shuffle: Order;
  perBatchMs: number;
  stepMs: number;
  runs: AsyncEpochRun[];
  /** Median over `runs`. */
  stallPct: number;
}

/**
 * For one order: the warm per-batch time (after one lead-in epoch), then one lead-in
 * epoch with the step (not counted), then `runs` epochs with it, back to back as a
 * training job runs them.
 */
export async function asyncStall(ds: Dataset, o: { batchSize: number; seed: number; shuffle: Order; prefetch: number; factor: number; speedEpochs: number; runs: number; log: (line: string) => void }): Promise<AsyncStallResult> {
  const base = { batchSize: o.batchSize, seed: o.seed, shuffle: o.shuffle, prefetch: o.prefetch };
  await asyncEpoch(ds, { ...base, epoch: 200, stepMs: 0 });
  const speed = await warmPerBatchMs(ds, { ...base, epoch: 201 }, o.speedEpochs);
  const stepMs = o.factor * speed.perBatchMs;
  o.log(`async step, shuffle '${o.shuffle}': loader warm per batch ${speed.perBatchMs.toFixed(3)} ms (${speed.runs.map((r) => (r.epochAfterFirstMs / Math.max(1, r.batches - 1)).toFixed(3)).join(', ')}); step ${stepMs.toFixed(3)} ms`);
  await asyncEpoch(ds, { ...base, epoch: 299, stepMs });
  const runs: AsyncEpochRun[] = [];
  for (let r = 0; r < o.runs; r++) {
    const run = await asyncEpoch(ds, { ...base, epoch: 300 + r, stepMs });
    runs.push(run);
    o.log(
      `async stall run ${r} '${o.shuffle}': ${run.waitAfterFirstMs.toFixed(1)} ms of ${run.epochAfterFirstMs.toFixed(0)} ms (${run.stallPct.toFixed(2)} %), steps ${run.stepTotalMs.toFixed(0)} ms, waits p50 ${run.waitP50Ms.toFixed(3)} p99 ${run.waitP99Ms.toFixed(2)} max ${run.waitMaxMs.toFixed(1)} ms, ${run.longWaits} longer than a step; loop delay p99 ${run.loopDelayP99Ms.toFixed(1)} max ${run.loopDelayMaxMs.toFixed(1)} ms; GC ${run.gcCount} pauses ${run.gcMs.toFixed(1)} ms (max ${run.gcMaxMs.toFixed(1)})`,
    );
  }
  return { shuffle: o.shuffle, perBatchMs: speed.perBatchMs, stepMs, runs, stallPct: median(runs.map((r) => r.stallPct)) };
}

/** The markdown table of `asyncStall` results, one row per order. */
export function asyncStallTable(results: readonly AsyncStallResult[], fmt: (x: number, digits?: number) => string): string {
  const m = (r: AsyncStallResult, f: (x: AsyncEpochRun) => number): number => median(r.runs.map(f));
  const header = ['order', 'loader warm ms / batch', 'step ms', 'epoch after 1st batch ms', 'waited ms', '**stall %**', 'each run %', 'wait p50 / p99 / max ms', 'waits > 1 step', 'event-loop delay p99 / max ms', 'GC pauses: count / ms / max ms'];
  const rows = results.map((r) => [
    r.shuffle === 'none' ? 'file order' : "shuffled ('buffer')",
    fmt(r.perBatchMs, 3),
    fmt(r.stepMs, 3),
    fmt(m(r, (x) => x.epochAfterFirstMs), 0),
    fmt(m(r, (x) => x.waitAfterFirstMs), 1),
    `**${fmt(r.stallPct, 2)}**`,
    r.runs.map((x) => fmt(x.stallPct, 2)).join(', '),
    `${fmt(m(r, (x) => x.waitP50Ms), 3)} / ${fmt(m(r, (x) => x.waitP99Ms), 2)} / ${fmt(m(r, (x) => x.waitMaxMs), 1)}`,
    fmt(m(r, (x) => x.longWaits), 0),
    `${fmt(m(r, (x) => x.loopDelayP99Ms), 1)} / ${fmt(m(r, (x) => x.loopDelayMaxMs), 1)}`,
    `${fmt(m(r, (x) => x.gcCount), 0)} / ${fmt(m(r, (x) => x.gcMs), 0)} / ${fmt(m(r, (x) => x.gcMaxMs), 1)}`,
  ]);
  const sep = header.map((_, i) => (i === 0 ? '---' : '---:'));
  return [header, sep, ...rows].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

import type { FaultProfile } from '../netem/fault-proxy.js';
import { formatBytes, formatMBps, formatTable } from '../util/format.js';
import type { DemoResult, EpochResult } from './engine.js';

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  return formatTable(header, rows, { rule: true });
}

function mbps(bps: number | undefined): string | undefined {
  return bps ? `${formatMBps(bps, 1, 0)} MB/s` : undefined;
}

/** A network profile's settings in words: `20 ms to first byte, 50 MB/s per connection, 25 MB/s in total`. */
export function profileText(p: FaultProfile): string {
  const parts: string[] = [];
  if (p.firstByteLatencyMs) parts.push(`${p.firstByteLatencyMs} ms to first byte`);
  if (p.upLatencyMs || p.downLatencyMs) parts.push(`${p.upLatencyMs ?? 0}/${p.downLatencyMs ?? 0} ms up/down`);
  if (p.connectLatencyMs) parts.push(`${p.connectLatencyMs} ms to connect`);
  const perConn = mbps(p.bandwidthPerConnBps);
  if (perConn) parts.push(`${perConn} per connection`);
  const total = mbps(p.totalBandwidthBps);
  if (total) parts.push(`${total} in total`);
  else if (parts.length > 0) parts.push('no total bandwidth cap');
  return parts.length > 0 ? parts.join(', ') : 'no faults';
}

/** The columns of the demo's main table, in order. */
export const EPOCH_COLUMNS = ['epoch', 'seconds', 'rows/s', 'cache hit %', 'store requests', 'store bytes', 'data stall %'] as const;

function epochName(e: EpochResult): string {
  return e.kind === 'direct' ? 'direct (store)' : `${e.label} (${e.kind})`;
}

export function epochTable(r: DemoResult): string {
  return table(
    EPOCH_COLUMNS,
    r.epochs.map((e) => [
      epochName(e),
      e.seconds.toFixed(e.seconds < 10 ? 2 : 1),
      String(Math.round(e.rowsPerSec)),
      e.cacheHitPct === null ? '-' : e.cacheHitPct.toFixed(1),
      String(e.storeRequests),
      formatBytes(e.storeBytes),
      e.stallPct.toFixed(1),
    ]),
  );
}

/** The loader's own per-stage figures (`stream.stats()`), one row per epoch. */
export function stageTable(r: DemoResult): string {
  return table(
    ['epoch', 'fetch s', 'decode s', 'assemble s', 'stall s', 'utilization %', 'fallbacks', 'peak resident'],
    r.epochs.map((e) => [
      epochName(e),
      (e.loader.fetchMs / 1000).toFixed(1),
      (e.loader.decodeMs / 1000).toFixed(1),
      (e.loader.assembleMs / 1000).toFixed(1),
      (e.loader.stallMs / 1000).toFixed(1),
      e.stepPct.toFixed(1),
      String(e.fallbacks),
      formatBytes(e.loader.peakResidentBytes),
    ]),
  );
}

/** The whole text report. */
export function formatReport(r: DemoResult, files: { chart?: string | undefined; json?: string | undefined }): string {
  const direct = r.epochs.find((e) => e.kind === 'direct');
  const warm = r.epochs.filter((e) => e.kind === 'warm');
  const bestWarm = warm.reduce<EpochResult | undefined>((b, e) => (b === undefined || e.rowsPerSec > b.rowsPerSec ? e : b), undefined);
  const lines = [
    '',
    `granary demo: ${formatBytes(r.dataset.bytes)} of Parquet (${r.dataset.files} files, ${r.dataset.rows} rows, ${r.dataset.partitions} row groups) in ${r.dataset.url}`,
    `store: s3rver behind the fault proxy, profile ${r.store.profile} (${profileText(r.store.settings)})`,
    `cache: ${r.workers.length} workers, each in its own thread, ${r.membership} membership${r.cluster ? ` (cluster ${r.cluster})` : ''}`,
    `loader: batch ${r.options.batchSize}, shuffled (seed ${r.options.seed}), prefetch ${r.options.prefetch}, ${r.options.fetchConcurrency} fetches in flight, ${r.options.decodeThreads} decode threads; simulated step ${r.options.stepMs} ms per batch`,
    '',
    epochTable(r),
    '',
    'loader stages (fetch and decode are summed over overlapping tasks; stall is time the step waited for the next batch):',
    stageTable(r),
    '',
  ];
  const rate = (e: EpochResult) => `${formatMBps(r.dataset.bytes, e.seconds)} MB/s`;
  if (direct) {
    const bound = direct.stallPct >= 50 ? 'data-bound: the device waited on the store' : 'not data-bound: the device waited on the store only';
    lines.push(`direct: the loader got ${rate(direct)} of Parquet from the store; ${bound} ${direct.stallPct.toFixed(0)}% of the epoch`);
  }
  if (bestWarm) {
    const bound = bestWarm.stepPct >= 75 ? 'compute-bound: the device was busy' : 'the device was busy only';
    lines.push(`warm:   the loader got ${rate(bestWarm)} from the cache; ${bound} ${bestWarm.stepPct.toFixed(0)}% of the epoch`);
  }
  if (direct && bestWarm) {
    lines.push(
      `warm cache vs the store: ${(bestWarm.rowsPerSec / direct.rowsPerSec).toFixed(2)}x the rows/s, data stall ${direct.stallPct.toFixed(0)}% -> ${bestWarm.stallPct.toFixed(0)}%, ` +
        `utilization ${direct.stepPct.toFixed(0)}% -> ${bestWarm.stepPct.toFixed(0)}%, store requests ${direct.storeRequests} -> ${bestWarm.storeRequests}`,
    );
  }
  const sums = new Set(r.epochs.map((e) => e.checksum));
  const expected = (r.dataset.rows * (r.dataset.rows - 1)) / 2;
  lines.push(
    sums.size === 1 && r.epochs[0]?.checksum === expected
      ? `every epoch yielded each of the ${r.dataset.rows} rows exactly once (sum of ids ${expected})`
      : `WARNING: the epochs' sums of ids differ from ${expected}: ${[...sums].join(', ')}`,
  );
  lines.push(`generated in ${r.dataset.generateSeconds.toFixed(1)} s; whole demo ${r.totalSeconds.toFixed(1)} s`);
  if (files.chart) lines.push(`chart: ${files.chart} (open it in a browser)`);
  if (files.json) lines.push(`results: ${files.json}`);
  return `${lines.join('\n')}\n`;
}

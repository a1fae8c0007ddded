/**
 * `npm run bench -- chaos [--epochs N] [--faults F] [--seed S] [--quick]`: a chaos soak.
 * 3 workers (child processes behind fault proxies), real etcd, s3rver behind an HTTP
 * fault proxy, and 2 ranks reading N full shuffled epochs while a seeded scheduler
 * injects F random faults per epoch (bench/chaos-faults.ts), each healed a few batches
 * later or at the epoch's end. After each epoch: every row exactly once over both ranks
 * and byte-identical to a direct read. Prints a table per epoch and writes
 * bench/results/chaos.json (chaos-quick.json with --quick: 2 epochs, 3 faults each).
 * Exits 1 if any epoch failed its check.
 */
import { parseArgs } from 'node:util';
import { SplitMix32 } from '../src/gen/prng.js';
import { startFaultCluster, verifyEpoch, type FaultCluster } from '../test/support/fault-epoch.js';
import { FAULT_KINDS, injectFault, type ActiveFault, type FaultKind } from './chaos-faults.js';
import { machineInfo, markdownTable, writeResults } from './lib/report.js';

const { values } = parseArgs({
  options: {
    epochs: { type: 'string' },
    faults: { type: 'string' },
    seed: { type: 'string' },
    rows: { type: 'string' },
    quick: { type: 'boolean', default: false },
  },
});
const quick = values.quick === true;
const epochs = Number(values.epochs ?? (quick ? 2 : 10));
const faultsPerEpoch = Number(values.faults ?? 3);
const seed = Number(values.seed ?? 1);
const rows = Number(values.rows ?? (quick ? 4000 : 12_000));
const WORLD = 2;
const BATCH = 200;

interface EpochRow {
  epoch: number;
  ok: boolean;
  rowsVerified: number;
  faults: { atBatch: number; kind: FaultKind; target: string; healAt: number | 'end' }[];
  fallbacks: number;
  bytesFromCache: number;
  seconds: number;
  error?: string;
}

/** The epoch's fault schedule: `count` distinct batch numbers in [1, batches), each with a kind and a heal point. */
function schedule(rng: SplitMix32, batches: number, count: number): { at: number; kind: FaultKind; worker: number; healAfter: number }[] {
  const points = new Set<number>();
  while (points.size < Math.min(count, batches - 1)) points.add(1 + rng.below(batches - 1));
  return [...points]
    .sort((a, b) => a - b)
    .map((at) => ({ at, kind: FAULT_KINDS[rng.below(FAULT_KINDS.length)] as FaultKind, worker: rng.below(3), healAfter: 1 + rng.below(4) }));
}

async function runEpoch(c: FaultCluster, epoch: number, rng: SplitMix32): Promise<EpochRow> {
  const batches = Math.ceil(rows / WORLD / BATCH) * WORLD;
  const plan = schedule(rng, batches, faultsPerEpoch);
  const broken = new Set<string>();
  const active: ActiveFault[] = [];
  const log: EpochRow['faults'] = [];
  const heals = new Map<number, ActiveFault[]>();
  const t0 = performance.now();
  const r = await c.runEpoch({
    epoch,
    seed,
    batchSize: BATCH,
    onBatch: async (k) => {
      for (const f of heals.get(k) ?? []) {
        await f.heal();
        active.splice(active.indexOf(f), 1);
      }
      heals.delete(k);
      for (const p of plan.filter((x) => x.at === k)) {
        const f = await injectFault(c, p.kind, c.workers[p.worker]!, broken);
        if (!f) continue;
        active.push(f);
        // A killed worker restarts between epochs: a restart takes seconds, and the rank that heals waits for it.
        const healAt = p.kind === 'worker-kill' || k + p.healAfter >= batches ? 'end' : k + p.healAfter;
        log.push({ atBatch: k, kind: p.kind, target: f.target, healAt });
        if (healAt !== 'end') heals.set(healAt, [...(heals.get(healAt) ?? []), f]);
      }
    },
  });
  for (const f of active.splice(0)) await f.heal();
  c.store.clear();
  const seconds = (performance.now() - t0) / 1000;
  const row: EpochRow = { epoch, ok: false, rowsVerified: 0, faults: log, fallbacks: r.stats.fallbacks, bytesFromCache: r.stats.bytesFromCache, seconds };
  try {
    row.rowsVerified = verifyEpoch(r, c.reference).rows;
    row.ok = true;
  } catch (err) {
    row.error = String(err);
  }
  return row;
}

const c = await startFaultCluster({ workers: 3, rows, files: 6, rowGroupRows: 250, leaseTtlSeconds: 10 });
const rng = new SplitMix32(seed);
const results: EpochRow[] = [];
try {
  for (let e = 0; e < epochs; e++) {
    const row = await runEpoch(c, e, rng);
    results.push(row);
    process.stdout.write(
      `epoch ${e}: ${row.ok ? 'ok' : 'FAILED'} ${row.rowsVerified} rows verified, faults: ${row.faults.map((f) => `${f.kind}@${f.atBatch}(${f.target})`).join(' ') || 'none'}${row.error ? `\n  ${row.error}` : ''}\n`,
    );
  }
} finally {
  await c.close();
}

const injected: Record<string, number> = {};
for (const r of results) for (const f of r.faults) injected[f.kind] = (injected[f.kind] ?? 0) + 1;
const summary = {
  completed: results.length === epochs,
  ok: results.every((r) => r.ok),
  epochs: results.length,
  epochsOk: results.filter((r) => r.ok).length,
  faultsInjected: results.reduce((a, r) => a + r.faults.length, 0),
  faultsByKind: injected,
  rowsVerified: results.reduce((a, r) => a + r.rowsVerified, 0),
  datasetRows: rows,
  seed,
  quick,
  machine: machineInfo(),
  startedAt: new Date().toISOString(),
  results,
};
process.stdout.write(
  `\n${markdownTable(
    ['epoch', 'check', 'rows verified', 'faults injected', 'fallbacks', 'seconds'],
    results.map((r) => [r.epoch, r.ok ? 'ok' : 'FAILED', r.rowsVerified, r.faults.map((f) => f.kind).join(', ') || '-', r.fallbacks, r.seconds.toFixed(1)]),
    ['r', 'l', 'r', 'l', 'r', 'r'],
  )}\n\n${summary.epochsOk}/${summary.epochs} epochs exact, ${summary.faultsInjected} faults injected, ${summary.rowsVerified} rows verified (seed ${seed})\n`,
);
process.stdout.write(`wrote ${writeResults(quick ? 'chaos-quick' : 'chaos', summary)}\n`);
process.exit(summary.ok && summary.completed ? 0 : 1);

/**
 * A Ray-Train-style driver: it starts N trainer processes per job with a rank and a
 * world size, runs two jobs at once over the same dataset, and compares reading the
 * store directly with reading through granary's cache (two workers shared by both
 * jobs). It reports, per trainer, the utilization (simulated accelerator time over
 * wall time) and the share of time spent waiting for data.
 *
 *   npx tsx examples/ray-style/driver.ts [--trainers 2] [--jobs 2] [--epochs 3] [--size 64MiB] [--step-ms 15] [--profile trainingNode] [--json]
 *
 * Everything runs on this machine: s3rver behind the fault proxy in a child process
 * (the `trainingNode` profile by default: every trainer of both jobs shares 25 MB/s
 * to the store, the node's link), the cache workers in this process, the trainers as
 * child processes. The workers share that node's CPUs, not its link to the store:
 * their reads of the store go through the same proxy, so a cold cache is no faster
 * than the store.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { parseBytes } from '../../src/config/values.js';
import { S3Ufs, startWorker, type CacheWorker } from '../../src/index.js';
import { PROFILE_NAMES, PROFILES, generateParquetDataset, startEmbeddedS3, type ProfileName } from '../../src/testing.js';
import type { TrainerConfig, TrainerReport } from './trainer.js';

const MiB = 1024 * 1024;

export interface ModeResult {
  mode: 'direct' | 'granary';
  trainers: TrainerReport[];
  /** Requests and bytes that reached the store: the trainers' own plus the workers'. */
  storeRequests: number;
  storeBytes: number;
  wallMs: number;
  meanUtilizationPct: number;
  meanDataWaitPct: number;
  /**
   * The same over the epochs after the first, from every trainer's per-epoch times (busy
   * and waiting time summed over trainers, over their wall time summed): through granary,
   * the epochs that read a warm cache. Null with one epoch.
   */
  laterEpochs: { utilizationPct: number; dataWaitPct: number } | null;
  /** Per job and epoch, whether the ranks together yielded every row exactly once. */
  complete: boolean;
}

export interface DriverResult {
  dataset: { url: string; rows: number; bytes: number; files: number };
  profile: ProfileName;
  jobs: number;
  trainersPerJob: number;
  epochs: number;
  stepMs: number;
  batchSize: number;
  modes: ModeResult[];
}

function usage(msg: string): never {
  process.stderr.write(`driver: ${msg}\nusage: npx tsx examples/ray-style/driver.ts [--trainers N] [--jobs J] [--epochs E] [--size 64MiB] [--step-ms MS] [--batch-size N] [--profile NAME] [--json]\n`);
  process.exit(2);
}

function intArg(name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) usage(`--${name} must be an integer from ${min} to ${max}, got "${v}"`);
  return n;
}

function tsxImport(): string {
  try {
    return import.meta.resolve('tsx');
  } catch {
    return 'tsx';
  }
}

function runTrainer(rank: number, worldSize: number, cfg: TrainerConfig): Promise<TrainerReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', tsxImport(), new URL('./trainer.ts', import.meta.url).pathname], {
      env: { ...process.env, GRANARY_RANK: String(rank), GRANARY_WORLD_SIZE: String(worldSize), GRANARY_TRAINER: JSON.stringify(cfg), AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const m = /GRANARY_TRAINER_REPORT (.*)\n/.exec(out);
      if (code === 0 && m?.[1]) resolve(JSON.parse(m[1]) as TrainerReport);
      else reject(new Error(`trainer ${cfg.job} rank ${rank} exited with ${String(code)}: ${err.trim()}`));
    });
  });
}

function laterEpochShares(reports: readonly TrainerReport[]): ModeResult['laterEpochs'] {
  const later = reports.flatMap((r) => r.perEpoch.slice(1));
  const wall = later.reduce((a, e) => a + e.wallMs, 0);
  if (later.length === 0 || wall <= 0) return null;
  return {
    utilizationPct: Math.min(100, (100 * later.reduce((a, e) => a + e.busyMs, 0)) / wall),
    dataWaitPct: Math.min(100, (100 * later.reduce((a, e) => a + e.stallMs, 0)) / wall),
  };
}

function mean(xs: number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

export async function runDriver(o: {
  trainers: number;
  jobs: number;
  epochs: number;
  sizeBytes: number;
  stepMs: number;
  batchSize: number;
  profile: ProfileName;
  log: (line: string) => void;
}): Promise<DriverResult> {
  const dir = await mkdtemp(join(tmpdir(), 'granary-ray-style-'));
  const store = await startEmbeddedS3({ dir, buckets: ['datasets'], profile: { ...PROFILES[o.profile] } });
  const s3 = { region: 'us-east-1', credentials: store.credentials, forcePathStyle: true };
  try {
    const writer = new S3Ufs({ ...s3, endpoint: store.endpoint });
    const embeddingBytes = 1024;
    const rows = Math.max(8, Math.floor(o.sizeBytes / (embeddingBytes + 20)));
    const files = Math.max(1, Math.min(8, Math.floor(rows / 64)));
    o.log(`generating ${(o.sizeBytes / MiB).toFixed(0)} MiB of Parquet (${rows} rows, ${files} files) into s3rver ...`);
    const summary = await generateParquetDataset(writer, 's3://datasets/train/', {
      rows,
      files,
      rowGroupRows: Math.max(1, Math.ceil(rows / files / 4)),
      embeddingBytes,
    });
    await writer.close();
    const result: DriverResult = {
      dataset: { url: summary.prefixUrl, rows: summary.rows, bytes: summary.bytes, files: summary.files.length },
      profile: o.profile,
      jobs: o.jobs,
      trainersPerJob: o.trainers,
      epochs: o.epochs,
      stepMs: o.stepMs,
      batchSize: o.batchSize,
      modes: [],
    };

    for (const mode of ['direct', 'granary'] as const) {
      const workers: CacheWorker[] = [];
      if (mode === 'granary') {
        for (let i = 0; i < 2; i++) {
          workers.push(await startWorker({ memoryBytes: Math.max(64 * MiB, 2 * summary.bytes), ufs: { s3: { ...s3, endpoint: store.proxyEndpoint } } }));
        }
      }
      o.log(`${mode}: ${o.jobs} jobs x ${o.trainers} trainers, ${o.epochs} epochs${mode === 'granary' ? `, cache workers ${workers.map((w) => w.url).join(', ')}` : ', reading the store'}`);
      const t = performance.now();
      const runs: Promise<TrainerReport>[] = [];
      for (let j = 0; j < o.jobs; j++) {
        const cfg: TrainerConfig = {
          job: `job-${String.fromCharCode(97 + j)}`,
          mode,
          dataset: summary.prefixUrl,
          s3: { ...s3, endpoint: store.proxyEndpoint },
          workers: workers.map((w) => w.url),
          epochs: o.epochs,
          batchSize: o.batchSize,
          stepMs: o.stepMs,
          seed: 1000 + j,
          decodeThreads: 1,
        };
        for (let r = 0; r < o.trainers; r++) runs.push(runTrainer(r, o.trainers, cfg));
      }
      let reports: TrainerReport[] = [];
      let counters: ReturnType<CacheWorker['info']>['counters'][] = [];
      try {
        reports = await Promise.all(runs);
      } finally {
        counters = workers.map((w) => w.info().counters);
        for (const w of workers) await w.close();
      }
      const wallMs = performance.now() - t;
      const expected = (summary.rows * (summary.rows - 1)) / 2;
      let complete = true;
      for (const job of new Set(reports.map((r) => r.job))) {
        const mine = reports.filter((r) => r.job === job);
        for (let e = 0; e < o.epochs; e++) {
          const ids = mine.reduce((a, r) => a + (r.idSums[e] ?? 0), 0);
          const n = mine.reduce((a, r) => a + (r.rowsPerEpoch[e] ?? 0), 0);
          if (ids !== expected || n !== summary.rows || mine.length !== o.trainers) complete = false;
        }
      }
      result.modes.push({
        mode,
        trainers: reports,
        storeRequests: reports.reduce((a, r) => a + r.storeRequests, 0) + counters.reduce((a, c) => a + c.storeRequests, 0),
        storeBytes: reports.reduce((a, r) => a + r.storeBytes, 0) + counters.reduce((a, c) => a + c.bytesFromStore, 0),
        wallMs,
        meanUtilizationPct: mean(reports.map((r) => r.utilizationPct)),
        meanDataWaitPct: mean(reports.map((r) => r.dataWaitPct)),
        laterEpochs: laterEpochShares(reports),
        complete,
      });
    }
    return result;
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

function pad(cells: string[], widths: number[]): string {
  return cells.map((c, i) => (i < 2 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
}

export function formatDriverResult(r: DriverResult): string {
  const header = ['mode', 'trainer', 'rows', 'batches', 'wall s', 'utilization %', 'data wait %'];
  const rows: string[][] = [];
  for (const m of r.modes) {
    for (const t of m.trainers) {
      rows.push([m.mode, `${t.job}/rank ${t.rank}`, String(t.rows), String(t.batches), (t.wallMs / 1000).toFixed(1), t.utilizationPct.toFixed(1), t.dataWaitPct.toFixed(1)]);
    }
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
  const lines = [
    `dataset ${r.dataset.url}: ${(r.dataset.bytes / 1e6).toFixed(1)} MB, ${r.dataset.rows} rows; store: s3rver behind the ${r.profile} profile`,
    `${r.jobs} concurrent jobs x ${r.trainersPerJob} trainers, ${r.epochs} epochs, batch ${r.batchSize}, simulated step ${r.stepMs} ms`,
    '',
    pad(header, widths),
    pad(widths.map((w) => '-'.repeat(w)), widths),
    ...rows.map((row) => pad(row, widths)),
    '',
  ];
  for (const m of r.modes) {
    lines.push(
      `${m.mode.padEnd(7)}: utilization ${m.meanUtilizationPct.toFixed(0)}%, waiting on data ${m.meanDataWaitPct.toFixed(0)}%, ` +
        `store ${m.storeRequests} requests / ${(m.storeBytes / 1e6).toFixed(1)} MB, all jobs ${(m.wallMs / 1000).toFixed(1)} s, ` +
        `${m.complete ? 'every row once per epoch per job' : 'INCOMPLETE: some rows missing or repeated'}`,
    );
  }
  const later = r.modes.filter((m) => m.laterEpochs !== null);
  if (later.length > 0) {
    lines.push('', `epochs 2-${r.epochs} only (through granary: a warm cache):`);
    for (const m of later) {
      lines.push(`${m.mode.padEnd(7)}: utilization ${m.laterEpochs?.utilizationPct.toFixed(0)}%, waiting on data ${m.laterEpochs?.dataWaitPct.toFixed(0)}%`);
    }
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const { values } = parseArgs({
    options: {
      trainers: { type: 'string' },
      jobs: { type: 'string' },
      epochs: { type: 'string' },
      size: { type: 'string' },
      'step-ms': { type: 'string' },
      'batch-size': { type: 'string' },
      profile: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const size = values.size === undefined ? 64 * MiB : parseBytes(values.size);
  if (!Number.isSafeInteger(size) || size < 64 * 1024) usage(`--size must be a byte size of at least 64k (like 64MiB), got "${String(values.size)}"`);
  const profile = (values.profile ?? 'trainingNode') as ProfileName;
  if (!PROFILE_NAMES.includes(profile)) usage(`--profile must be one of ${PROFILE_NAMES.join(', ')}, got "${profile}"`);
  const result = await runDriver({
    trainers: intArg('trainers', values.trainers, 2, 1, 16),
    jobs: intArg('jobs', values.jobs, 2, 1, 8),
    epochs: intArg('epochs', values.epochs, 3, 1, 50),
    sizeBytes: size,
    stepMs: intArg('step-ms', values['step-ms'], 15, 0, 10_000),
    batchSize: intArg('batch-size', values['batch-size'], 256, 1, 1 << 20),
    profile,
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : formatDriverResult(result));
  if (result.modes.some((m) => !m.complete)) process.exitCode = 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`driver: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}

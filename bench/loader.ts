/**
 * The data loader, side by side in one run:
 *
 *  1. Throughput: an epoch read through a warm cache (CacheClient -> a cache worker in
 *     its own process, every page already in its memory) vs pure decode (the same
 *     dataset's bytes already in this process, in a MemoryUfs), both on the same decode
 *     pool. Target: cache >= 85 % of pure decode.
 *  2. Data stall with an asynchronous training step (the measurement that matches
 *     training on an accelerator): the loop awaits a timer for 1.2x the loader's own warm
 *     per-batch time (measured first, in this run), file order and buffer shuffle, through
 *     the warm cache. Target: stall <= 2 % of the epoch after the first batch.
 *     A diagnostic beside it: a step that burns the main thread's CPU for 1.2x the decode
 *     time per batch, granary's prefetching stream vs a naive one (`prefetch: 0`). A CPU
 *     step is not a GPU step: on two cores it competes with the loader for the CPU.
 *  3. Peak RSS of one epoch over a ~1 GiB and a ~4 GiB dataset (local files) with the
 *     same prefetch budget, each in its own child process. Target: growth < 15 %.
 *
 *   npx tsx bench/loader.ts [--rows 1000000] [--runs 7] [--stall-runs 3] [--batch-size 1024]
 *                           [--step-factor 1.2] [--step-ms MS] [--rss-gib 1,4] [--skip-rss] [--quick]
 *                           [--fetch-in-decoder auto|on|off] (where the warm-cache dataset reads)
 *                           [--only throughput,async-stall,cpu-stall,rss] [--async-runs 3]
 *
 * Prints markdown tables and writes bench/results/loader.json and bench/results/loader.md.
 * Generated data lives in a temp dir that is removed at the end.
 */
import { linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { tableFromIPC } from 'apache-arrow';
import { CacheClient } from '../src/cache/client.js';
import { generateParquetDataset } from '../src/gen/parquet.js';
import { Dataset, DecodePool } from '../src/loader/index.js';
import { describeParquet, readParquetFooter, rowGroupFooter, type ParquetFileMeta } from '../src/loader/parquet-footer.js';
import { LocalUfs } from '../src/ufs/local.js';
import { MemoryUfs } from '../src/ufs/memory.js';
import type { UnderFileSystem } from '../src/ufs/types.js';
import { spawnWorker } from '../test/support/workers.js';
import { announceReady, announceResult, exitWithParent, spawnChild } from './lib/child.js';
import { asyncStall, asyncStallTable, type AsyncStallResult } from './loader/async-stall.js';
import { MiB, fmt, machineInfo, markdownTable, median, quantile, writeResults } from './lib/report.js';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string' },
    runs: { type: 'string' },
    'stall-runs': { type: 'string' },
    'batch-size': { type: 'string', default: '1024' },
    'step-factor': { type: 'string', default: '1.2' },
    'step-ms': { type: 'string' },
    'rss-gib': { type: 'string' },
    'rss-runs': { type: 'string' },
    'skip-rss': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    threads: { type: 'string' },
    'rss-child': { type: 'string' },
    'prefetch-bytes-mib': { type: 'string', default: '128' },
    'embedding-bytes': { type: 'string', default: '64' },
    'fetch-in-decoder': { type: 'string', default: 'auto' },
    only: { type: 'string', default: 'throughput,async-stall,cpu-stall,rss' },
    'async-runs': { type: 'string' },
  },
});

const QUICK = args.quick;
const ROWS = Number(args.rows ?? (QUICK ? 200_000 : 1_000_000));
const RUNS = Number(args.runs ?? (QUICK ? 2 : 7));
const STALL_RUNS = Number(args['stall-runs'] ?? (QUICK ? 1 : 3));
const ASYNC_RUNS = Number(args['async-runs'] ?? (QUICK ? 1 : 3));
const ONLY = new Set(args.only.split(','));
for (const s of ONLY) if (!['throughput', 'async-stall', 'cpu-stall', 'rss'].includes(s)) throw new Error(`Expected --only to list throughput, async-stall, cpu-stall or rss, got ${s}`);
const BATCH = Number(args['batch-size']);
const STEP_FACTOR = Number(args['step-factor']);
const RSS_GIB = (args['rss-gib'] ?? (QUICK ? '0.25,1' : '1,4')).split(',').map(Number);
const RSS_RUNS = Number(args['rss-runs'] ?? (QUICK ? 1 : 3));
const PREFETCH_BYTES = Math.round(Number(args['prefetch-bytes-mib']) * MiB);
const SEED = 7;
/** Where the warm-cache dataset reads: `fetchInDecoder` for it ('auto', 'on' or 'off'). */
const FETCH_IN_DECODER = ({ auto: 'auto', on: true, off: false } as const)[args['fetch-in-decoder'] as 'auto' | 'on' | 'off'];
if (FETCH_IN_DECODER === undefined) throw new Error(`Expected --fetch-in-decoder to be auto, on or off, got ${args['fetch-in-decoder']}`);
const COLUMNS = ['id', 'label', 'score', 'embedding'];
/** Width of the `embedding` column in the throughput and stall dataset: most of each row's bytes. */
const EMBEDDING_BYTES = Number(args['embedding-bytes']);
for (const [name, v] of Object.entries({ ROWS, RUNS, STALL_RUNS, ASYNC_RUNS, RSS_RUNS, BATCH, STEP_FACTOR, PREFETCH_BYTES })) {
  if (!(v > 0) || !Number.isFinite(v)) throw new Error(`Expected a positive number for ${name}, got ${v}`);
}
if (RSS_GIB.some((g) => !(g > 0))) throw new Error(`Expected --rss-gib to be positive numbers, got ${args['rss-gib']}`);

const self = fileURLToPath(import.meta.url);

/** Burn the main thread's CPU for `ms` (a stand-in for a training step). */
function burn(ms: number): void {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) for (let i = 0; i < 1000; i++) x = (x * 1103515245 + 12345) | 0;
  if (x === 0.5) process.stdout.write('');
}

// ---------------------------------------------------------------- RSS child

interface RssResult {
  prefix: string;
  /** Peak RSS of every run (parent only). */
  peakRssRuns?: number[];
  rows: number;
  batches: number;
  datasetBytes: number;
  partitions: number;
  rssBeforeEpoch: number;
  peakRss: number;
  wallMs: number;
  rowsPerSec: number;
  peakResidentBytes: number;
}

/** In a child: one shuffled epoch over `prefix` (local files), sampling RSS every 10 ms and after every batch. */
async function rssChild(prefix: string): Promise<void> {
  exitWithParent();
  announceReady({ pid: process.pid });
  const fs = new LocalUfs();
  const ds = await Dataset.parquet(prefix, { fs, columns: COLUMNS, ...(args.threads ? { decodeThreads: Number(args.threads) } : {}) });
  const datasetBytes = ds.partitions.reduce((a, p) => a + p.bytes, 0);
  const rssBeforeEpoch = process.memoryUsage().rss;
  let peakRss = rssBeforeEpoch;
  const sample = (): void => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  };
  const timer = setInterval(sample, 10);
  const stream = ds.batches({ batchSize: BATCH, shuffle: true, seed: SEED, prefetch: 4, prefetchBytes: PREFETCH_BYTES });
  let rows = 0;
  for await (const b of stream) {
    rows += b.numRows;
    sample();
  }
  clearInterval(timer);
  sample();
  const st = stream.stats();
  await ds.close();
  const out: RssResult = {
    prefix,
    rows,
    batches: st.batches,
    datasetBytes,
    partitions: ds.partitions.length,
    rssBeforeEpoch,
    peakRss,
    wallMs: st.wallMs,
    rowsPerSec: st.rowsPerSec,
    peakResidentBytes: st.peakResidentBytes,
  };
  announceResult(out);
}

if (args['rss-child'] !== undefined) {
  await rssChild(args['rss-child']);
  process.exit(0);
}

// ---------------------------------------------------------------- main

interface EpochRun {
  label: string;
  /** CPU time of this process (main thread and decode threads) during the epoch. */
  cpuMs: number;
  /** CPU time of the cache worker process during the epoch. */
  workerCpuMs: number;
  rows: number;
  batches: number;
  wallMs: number;
  rowsPerSec: number;
  fetchMs: number;
  decodeMs: number;
  assembleMs: number;
  loaderStallMs: number;
  /** Consumer-side: time spent waiting in `next()` for batches 1..n-1 (includes assembly). */
  stallAfterFirstMs: number;
  /** From receiving batch 0 to the end of the last step. */
  epochAfterFirstMs: number;
  firstBatchMs: number;
  stepMs: number;
  /** Measured time of all steps (a step can overrun when the thread is descheduled). */
  stepTotalMs: number;
  /**
   * CPU from receiving batch 0 to the end of the epoch: the training thread (the main
   * thread: its steps and its part of next()), the loader process's other threads, and
   * the cache worker process. Linux only (NaN elsewhere).
   */
  mainCpuAfterFirstMs: number;
  otherCpuAfterFirstMs: number;
  /** The part of otherCpuAfterFirstMs the process's helper threads used (see `helperTids`). */
  helperCpuAfterFirstMs: number;
  workerCpuAfterFirstMs: number;
  /** Per-batch waits in `next()` after batch 0. */
  waitP50Ms: number;
  waitP99Ms: number;
  waitMaxMs: number;
}

/** CPU ms (user + system) a process, or one of its threads, has used, from /proc (Linux); NaN elsewhere. Resolution 10 ms. */
function procCpuMs(pid: number, tid?: number): number {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, in USER_HZ (100 on Linux)
  } catch {
    return Number.NaN;
  }
}

let workerPid = 0;

/**
 * The threads this process had before any loader started: V8's garbage-collector and
 * compiler threads, libuv's pool (started by the dataset's generation), tsx's loader
 * thread. Threads started later are the loader's: its loader thread and decode threads.
 */
let helperTids = new Set<number>();

/** This process's thread ids (Linux; none elsewhere). */
function threadIds(): number[] {
  try {
    return readdirSync(`/proc/${process.pid}/task`).map(Number);
  } catch {
    return [];
  }
}

/** CPU ms the helper threads (all but the training thread) have used; a thread that has ended counts 0. */
function helperCpuMs(): number {
  let total = 0;
  for (const tid of helperTids) {
    if (tid === process.pid) continue;
    const ms = procCpuMs(process.pid, tid);
    if (Number.isFinite(ms)) total += ms;
  }
  return total;
}

async function epoch(label: string, ds: Dataset, epochNo: number, prefetch: number, stepMs: number, shuffle: 'buffer' | 'none' = 'buffer'): Promise<EpochRun> {
  const cpu0 = process.cpuUsage();
  const wcpu0 = workerPid ? procCpuMs(workerPid) : Number.NaN;
  const stream = ds.batches({ batchSize: BATCH, epoch: epochNo, seed: SEED, shuffle, prefetch });
  const it = stream[Symbol.asyncIterator]();
  const t0 = performance.now();
  let tFirst = 0;
  let stall = 0;
  let stepTotal = 0;
  const waits: number[] = [];
  let rows = 0;
  let n = 0;
  let first = { cpu: process.cpuUsage(), main: Number.NaN, worker: Number.NaN, helpers: Number.NaN };
  for (;;) {
    const ta = performance.now();
    const r = await it.next();
    const tb = performance.now();
    if (r.done) break;
    if (n === 0) {
      first = { cpu: process.cpuUsage(), main: procCpuMs(process.pid, process.pid), worker: workerPid ? procCpuMs(workerPid) : Number.NaN, helpers: helperCpuMs() };
      tFirst = performance.now();
    } else {
      stall += tb - ta;
      waits.push(tb - ta);
    }
    n++;
    rows += r.value.numRows;
    if (stepMs > 0) {
      const tc = performance.now();
      burn(stepMs);
      stepTotal += performance.now() - tc;
    }
  }
  const tEnd = performance.now();
  const st = stream.stats();
  const cpu = process.cpuUsage(cpu0);
  const cpuAfterFirst = process.cpuUsage(first.cpu);
  const mainCpuAfterFirstMs = procCpuMs(process.pid, process.pid) - first.main;
  return {
    mainCpuAfterFirstMs,
    otherCpuAfterFirstMs: (cpuAfterFirst.user + cpuAfterFirst.system) / 1000 - mainCpuAfterFirstMs,
    helperCpuAfterFirstMs: helperCpuMs() - first.helpers,
    workerCpuAfterFirstMs: workerPid ? procCpuMs(workerPid) - first.worker : 0,
    cpuMs: (cpu.user + cpu.system) / 1000,
    workerCpuMs: workerPid ? procCpuMs(workerPid) - wcpu0 : Number.NaN,
    label,
    rows,
    batches: n,
    wallMs: tEnd - t0,
    rowsPerSec: (rows * 1000) / (tEnd - t0),
    fetchMs: st.fetchMs,
    decodeMs: st.decodeMs,
    assembleMs: st.assembleMs,
    loaderStallMs: st.stallMs,
    stallAfterFirstMs: stall,
    epochAfterFirstMs: tEnd - tFirst,
    firstBatchMs: tFirst - t0,
    stepMs,
    stepTotalMs: stepTotal,
    waitP50Ms: quantile(waits, 0.5),
    waitP99Ms: quantile(waits, 0.99),
    waitMaxMs: quantile(waits, 1),
  };
}

/**
 * Pure decode time per batch: every row group of the dataset fed straight to the pool,
 * one at a time (bytes already in memory, no prefetch, no assembly), plus the Arrow IPC
 * read the stream also does, divided by the epoch's batch count.
 */
async function decodePerBatchMs(fs: UnderFileSystem, prefix: string, pool: DecodePool, batches: number): Promise<{ perBatchMs: number; totalMs: number; rowGroups: number }> {
  const metas: ParquetFileMeta[] = [];
  for await (const info of fs.list(prefix)) {
    const { meta, metaLength } = await readParquetFooter(fs, info);
    metas.push(describeParquet(info, meta, metaLength, COLUMNS));
  }
  const tasks: { meta: ParquetFileMeta; rg: number; pieces: { offset: number; bytes: Uint8Array }[]; rows: number }[] = [];
  for (const meta of metas) {
    for (const rg of meta.rowGroups) {
      const pieces = await Promise.all(rg.ranges.map(async (r) => ({ offset: r.offset, bytes: await fs.read(meta.url, r.offset, r.length) })));
      tasks.push({ meta, rg: rg.index, pieces, rows: rg.numRows });
    }
  }
  let total = 0;
  for (const t of tasks) {
    const pieces = t.pieces.map((p) => ({ offset: p.offset, bytes: p.bytes.slice() }));
    const t0 = performance.now();
    const ipc = await pool.decode(
      { kind: 'parquet', url: t.meta.url, size: t.meta.size, footer: rowGroupFooter(t.meta, t.rg), pieces, columns: COLUMNS, numRows: t.rows },
      pieces.map((p) => p.bytes.buffer),
    );
    tableFromIPC(ipc);
    total += performance.now() - t0;
  }
  return { perBatchMs: total / batches, totalMs: total, rowGroups: tasks.length };
}

function summarize(runs: EpochRun[]): Record<string, number> {
  const m = (f: (r: EpochRun) => number): number => median(runs.map(f));
  return {
    rowsPerSec: m((r) => r.rowsPerSec),
    wallMs: m((r) => r.wallMs),
    fetchMs: m((r) => r.fetchMs),
    decodeMs: m((r) => r.decodeMs),
    assembleMs: m((r) => r.assembleMs),
    loaderStallMs: m((r) => r.loaderStallMs),
    stallAfterFirstMs: m((r) => r.stallAfterFirstMs),
    epochAfterFirstMs: m((r) => r.epochAfterFirstMs),
    stallPct: m((r) => (100 * r.stallAfterFirstMs) / r.epochAfterFirstMs),
    loaderStallPct: m((r) => (100 * r.loaderStallMs) / r.epochAfterFirstMs),
    waitWithFirstPct: m((r) => (100 * (r.stallAfterFirstMs + r.firstBatchMs)) / r.wallMs),
    firstBatchMs: m((r) => r.firstBatchMs),
    cpuMs: m((r) => r.cpuMs),
    workerCpuMs: m((r) => r.workerCpuMs),
    stepTotalMs: m((r) => r.stepTotalMs),
    waitP50Ms: m((r) => r.waitP50Ms),
    waitP99Ms: m((r) => r.waitP99Ms),
    mainCpuAfterFirstMs: m((r) => r.mainCpuAfterFirstMs),
    otherCpuAfterFirstMs: m((r) => r.otherCpuAfterFirstMs),
    helperCpuAfterFirstMs: m((r) => r.helperCpuAfterFirstMs),
    workerCpuAfterFirstMs: m((r) => r.workerCpuAfterFirstMs),
    stepSharePct: m((r) => (100 * r.batches * r.stepMs) / r.epochAfterFirstMs),
    stepShareCeilingPct: m((r) => stepShareCeiling(r) * 100),
  };
}

/**
 * The largest share of the epoch (after batch 0) the steps can have on this machine's
 * cores, given the CPU everything else used: the steps need S = batches × step of one
 * thread; the loader's other threads and the cache worker used O; K cores give at most
 * K × E, so E >= (S + O) / K and S / E <= K × S / (S + O). O leaves out the training
 * thread's own share of next() (it is not separable from its steps here), so this
 * ceiling is on the generous side. A stall of at most 2 % needs a share of at least 98 %.
 */
function stepShareCeiling(r: EpochRun): number {
  const steps = r.batches * r.stepMs;
  const other = r.otherCpuAfterFirstMs + r.workerCpuAfterFirstMs;
  if (!(steps > 0) || !Number.isFinite(other)) return Number.NaN;
  return Math.min(1, (machineInfo().cpus * steps) / (steps + other));
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const loadStart = loadavg();
  const threads = args.threads ? Number(args.threads) : Math.max(1, machine.cpus - 1);
  const root = mkdtempSync(join(tmpdir(), 'granary-bench-loader-'));
  const local = new LocalUfs({ fsync: false });
  const cleanup: (() => Promise<void>)[] = [];
  const md: string[] = [];
  const out: Record<string, unknown> = {
    machine,
    command: `npx tsx bench/loader.ts ${process.argv.slice(2).join(' ')}`.trim(),
    params: { rows: ROWS, runs: RUNS, stallRuns: STALL_RUNS, batchSize: BATCH, stepFactor: STEP_FACTOR, decodeThreads: threads, columns: COLUMNS, shuffle: 'buffer' },
  };
  try {
    // ------------------------------------------------------------ dataset A
    const dirA = join(root, 'a');
    mkdirSync(dirA);
    const prefixA = `${pathToFileURL(dirA).href}/`;
    let t = performance.now();
    const genA = await generateParquetDataset(local, prefixA, { rows: ROWS, files: 8, rowGroupRows: 65_536, codec: 'snappy', embeddingBytes: EMBEDDING_BYTES, seed: SEED });
    console.log(`dataset A: ${ROWS} rows, ${genA.files.length} files, ${fmt(genA.bytes / MiB)} MiB (snappy) in ${fmt((performance.now() - t) / 1000)} s`);
    // Every thread up to here is Node's or V8's own: the loader's threads start later.
    helperTids = new Set(threadIds());
    out.datasetA = { rows: ROWS, files: genA.files.length, bytes: genA.bytes, rowGroupRows: 65_536, codec: 'snappy', embeddingBytes: EMBEDDING_BYTES };

    // The same bytes in memory, under the same URLs.
    const mem = new MemoryUfs();
    for (const f of genA.files) {
      const info = await local.stat(f.url);
      await mem.write(f.url, await local.read(f.url, 0, info.size));
    }

    // A warm cache worker in its own process.
    const worker = await spawnWorker({ memoryBytes: Math.max(256 * MiB, 2 * genA.bytes), fileRoot: root });
    cleanup.push(() => worker.stop());
    workerPid = worker.pid;
    const client = new CacheClient({ workers: [worker.url], ufs: local });
    cleanup.push(() => client.close());

    const pool = new DecodePool({ threads });
    cleanup.push(() => pool.close());
    const dsMem = await Dataset.parquet(prefixA, { fs: mem, columns: COLUMNS, pool });
    // The default: fetch, decode and assembly in the dataset's loader thread.
    const dsCache = await Dataset.parquet(prefixA, { fs: client, columns: COLUMNS, pool, fetchInDecoder: FETCH_IN_DECODER });
    // The same pipeline on the main thread (loaderThread: false): the comparison, and the naive loader.
    const dsCacheMain = await Dataset.parquet(prefixA, { fs: client, columns: COLUMNS, pool, loaderThread: false });
    if (!dsCache.loaderThread || dsCacheMain.loaderThread) throw new Error('expected the cache dataset in a loader thread and the other on the main thread');
    cleanup.push(() => dsMem.close(), () => dsCache.close(), () => dsCacheMain.close());
    const cacheStats = async (): Promise<{ misses: number; fallbacks: number }> => {
      const c = (await dsCache.readStats()).cache;
      return { misses: c?.misses ?? 0, fallbacks: c?.fallbacks ?? 0 };
    };

    t = performance.now();
    const warm = await epoch('warm-up (cold cache)', dsCache, 1000, 4, 0);
    await epoch('warm-up (main thread)', dsCacheMain, 1000, 4, 0);
    const afterWarm = await cacheStats();
    console.log(`warm-up epoch through the cache: ${fmt(warm.wallMs)} ms, loader thread's client ${JSON.stringify(afterWarm)}`);
    await epoch('warm-up (memory)', dsMem, 1000, 4, 0);

    let batches = Math.ceil(ROWS / BATCH);
    if (ONLY.has('throughput')) {
      // ------------------------------------------------------------ 1. throughput
      // Three sources, alternated so drift on a shared machine hits all alike: decoding bytes
      // already in memory with the loader thread (local files in the page cache) and without
      // it (MemoryUfs, main thread), and the warm cache through the loader thread (the default).
      const dsLocal = await Dataset.parquet(prefixA, { fs: local, columns: COLUMNS, pool });
      cleanup.push(() => dsLocal.close());
      await epoch('warm-up (page cache)', dsLocal, 1000, 4, 0);
      const sides = [
        { key: 'memThread', label: 'pure decode: bytes in memory (local files in the page cache), loader thread', ds: dsLocal, runs: [] as EpochRun[] },
        { key: 'memMain', label: 'pure decode: bytes in memory (MemoryUfs), main thread', ds: dsMem, runs: [] as EpochRun[] },
        { key: 'cache', label: 'warm cache: CacheClient → worker process, loader thread', ds: dsCache, runs: [] as EpochRun[] },
      ];
      for (let r = 0; r < RUNS; r++) {
        const order = r % 2 === 0 ? sides : [...sides].reverse();
        for (const side of order) side.runs.push(await epoch(side.label, side.ds, r, 4, 0));
        console.log(`run ${r}: ${sides.map((x) => `${x.key} ${fmt(x.runs[r]?.rowsPerSec ?? 0, 0)} rows/s`).join(', ')}`);
      }
      batches = sides[0]?.runs[0]?.batches ?? batches;
      const afterRuns = await cacheStats();
      const summaries = sides.map((x) => ({ ...x, s: summarize(x.runs) }));
      const [memThreadS, memMainS, cacheS] = summaries.map((x) => x.s) as [Record<string, number>, Record<string, number>, Record<string, number>];
      const ratio = (cacheS.rowsPerSec ?? 0) / (memThreadS.rowsPerSec ?? 1);
      const ratioMain = (cacheS.rowsPerSec ?? 0) / (memMainS.rowsPerSec ?? 1);
      const missesDuringRuns = afterRuns.misses - afterWarm.misses + (afterRuns.fallbacks - afterWarm.fallbacks);
      out.throughput = {
        pureThread: memThreadS,
        pureMain: memMainS,
        cache: cacheS,
        ratio,
        ratioVsMainThreadPureDecode: ratioMain,
        target: 0.85,
        met: ratio >= 0.85,
        missesOrFallbacksDuringRuns: missesDuringRuns,
        runs: Object.fromEntries(sides.map((x) => [x.key, x.runs])),
      };
      const thrTable = markdownTable(
        ['source', 'rows/s (median)', 'epoch ms', 'fetch ms (summed)', 'decode ms (summed)', 'assemble ms', 'CPU ms: loader process', 'CPU ms: cache worker'],
        summaries.map(({ label, key, s: x }) => [
          label,
          fmt(x.rowsPerSec ?? 0, 0),
          fmt(x.wallMs ?? 0, 0),
          fmt(x.fetchMs ?? 0, 0),
          fmt(x.decodeMs ?? 0, 0),
          fmt(x.assembleMs ?? 0, 0),
          fmt(x.cpuMs ?? 0, 0),
          key === 'cache' ? fmt(x.workerCpuMs ?? 0, 0) : '—',
        ]),
        ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      );
      md.push(
        `### 1. Warm-cache epoch vs pure decode\n\n${ROWS} rows, batch ${BATCH}, shuffle 'buffer', prefetch 4, ${threads} decode thread(s), no training step (the loader as fast as it goes), median of ${RUNS} epochs each, alternating.\n\n${thrTable}\n\nwarm cache / pure decode, both through the loader thread = **${fmt(100 * ratio)} %** (target ≥ 85 %: ${ratio >= 0.85 ? 'met' : 'missed'}); against pure decode on the main thread: ${fmt(100 * ratioMain)} %. Cache misses + fallbacks during the measured epochs: ${missesDuringRuns}.`,
      );
      console.log(`\n${md[md.length - 1]}\n`);

    }

    // ------------------------------------------------------------ 2. async-step stall
    if (ONLY.has('async-stall')) {
      // The measurement that matches training: the step awaits a timer (as a loop awaits
      // its accelerator), so the CPU is the loader's while the "device" works.
      const results: AsyncStallResult[] = [];
      for (const shuffle of ['none', 'buffer'] as const) {
        results.push(await asyncStall(dsCache, { batchSize: BATCH, seed: SEED, shuffle, prefetch: 4, factor: STEP_FACTOR, speedEpochs: Math.max(2, ASYNC_RUNS), runs: ASYNC_RUNS, log: (l) => console.log(l) }));
      }
      const met = results.every((r) => r.stallPct <= 2);
      out.asyncStall = { stepFactor: STEP_FACTOR, embeddingBytes: EMBEDDING_BYTES, target: 2, met, results };
      md.push(
        `### 2. Data stall with an asynchronous step (the training measurement)\n\n${ROWS} rows with ${EMBEDDING_BYTES}-byte embeddings, batch ${BATCH}, prefetch 4, ${threads} decode thread(s), through the warm cache (CacheClient → a worker process), the default loader (loader thread). Per order, the loader's own warm per-batch time is measured first (epochs with no step, after a lead-in: epoch after batch 0 ÷ (batches − 1), median of ${Math.max(2, ASYNC_RUNS)}); the step then awaits a timer for ${STEP_FACTOR} × that per batch, leaving the CPU free as a step on an accelerator does. After one lead-in epoch with the step (not counted), ${ASYNC_RUNS} epochs back to back; stall = time the loop waited in \`next()\` for batches 1..n−1 ÷ the epoch from batch 0 to the end of the last step (median). Event-loop delay and GC pauses are the main thread's, during the measured epochs.\n\n${asyncStallTable(results, fmt)}\n\nTarget stall ≤ 2 %: ${met ? 'met' : 'missed'} (${results.map((r) => `${r.shuffle === 'none' ? 'file order' : 'buffer shuffle'} ${fmt(r.stallPct, 2)} %`).join(', ')}).`,
      );
      console.log(`\n${md[md.length - 1]}\n`);
    }

    if (ONLY.has('cpu-stall')) {
      // ------------------------------------------------------------ 2b. CPU-step stall (a diagnostic)
      const dec = await decodePerBatchMs(mem, prefixA, pool, batches);
      // --step-ms fixes the step instead (to compare two versions of the code at one step:
      // the measured decode time drifts by tens of percent between runs on a shared machine).
      const stepMs = args['step-ms'] !== undefined ? Number(args['step-ms']) : STEP_FACTOR * dec.perBatchMs;
      if (!(stepMs >= 0)) throw new Error(`Expected --step-ms to be a number of milliseconds, got ${args['step-ms']}`);
      console.log(`decode per batch: ${fmt(dec.perBatchMs, 3)} ms (${dec.rowGroups} row groups in ${fmt(dec.totalMs)} ms, ${batches} batches); step ${fmt(stepMs, 3)} ms`);
      const modes = ['none', 'buffer'] as const;
      const stallRuns: Record<string, EpochRun[]> = {};
      // Each loader runs its epochs back to back, as a training job does (the loader thread
      // primes epoch e + 1 while epoch e ends; another request in between would drop that),
      // after one lead-in epoch that is not counted, so every measured epoch follows one.
      for (const mode of modes) {
        for (const [name, ds, prefetch] of [
          ['granary: loader thread, prefetch 4', dsCache, 4],
          ['same pipeline on the main thread (loaderThread: false), prefetch 4', dsCacheMain, 4],
          ['naive: main thread, no prefetch', dsCacheMain, 0],
        ] as const) {
          const key = `${name}, shuffle '${mode}'`;
          await epoch(key, ds, 99, prefetch, stepMs, mode);
          for (let r = 0; r < STALL_RUNS; r++) {
            const run = await epoch(key, ds, 100 + r, prefetch, stepMs, mode);
            (stallRuns[key] ??= []).push(run);
            logStall(r, key, run);
          }
        }
      }
      function logStall(r: number, key: string, run: EpochRun): void {
        console.log(`stall run ${r} ${key}: ${fmt(run.stallAfterFirstMs)} ms of ${fmt(run.epochAfterFirstMs)} ms (${fmt((100 * run.stallAfterFirstMs) / run.epochAfterFirstMs, 2)} %); steps ${fmt(run.stepTotalMs)} ms; wait p50 ${fmt(run.waitP50Ms, 3)} p99 ${fmt(run.waitP99Ms, 2)} max ${fmt(run.waitMaxMs, 1)} ms`);
      }
      const stallS = Object.fromEntries(Object.entries(stallRuns).map(([k, v]) => [k, summarize(v)]));
      const granaryNone = stallS["granary: loader thread, prefetch 4, shuffle 'none'"] ?? {};
      const granaryBuffer = stallS["granary: loader thread, prefetch 4, shuffle 'buffer'"] ?? {};
      const stallMet = (granaryNone.stallPct ?? 100) <= 2;
      out.stall = { decodePerBatchMs: dec.perBatchMs, decodeTotalMs: dec.totalMs, stepMs, summary: stallS, target: 2, metSequential: stallMet, metBufferShuffle: (granaryBuffer.stallPct ?? 100) <= 2, runs: stallRuns };
      const stallTable = markdownTable(
        ['loader', 'epoch ms', 'first batch ms', 'steps ms (measured)', 'stall after 1st batch ms', 'stall %', 'all waits incl. 1st batch, % of epoch', 'per-batch wait p50 / p99 ms', 'CPU ms: loader process / cache worker', 'assemble ms', 'CPU ms after 1st batch: training thread / other loader threads (of them, Node and V8 helper threads) / cache worker', "steps' share of the epoch: measured / ceiling from CPU"],
        Object.entries(stallS).map(([name, x]) => [
          name,
          fmt(x.wallMs ?? 0, 0),
          fmt(x.firstBatchMs ?? 0, 0),
          fmt(x.stepTotalMs ?? 0, 0),
          fmt(x.stallAfterFirstMs ?? 0, 0),
          fmt(x.stallPct ?? 0, 2),
          fmt(x.waitWithFirstPct ?? 0, 2),
          `${fmt(x.waitP50Ms ?? 0, 3)} / ${fmt(x.waitP99Ms ?? 0, 2)}`,
          `${fmt(x.cpuMs ?? 0, 0)} / ${fmt(x.workerCpuMs ?? 0, 0)}`,
          fmt(x.assembleMs ?? 0, 0),
          `${fmt(x.mainCpuAfterFirstMs ?? 0, 0)} / ${fmt(x.otherCpuAfterFirstMs ?? 0, 0)} (${fmt(x.helperCpuAfterFirstMs ?? 0, 0)}) / ${fmt(x.workerCpuAfterFirstMs ?? 0, 0)}`,
          `${fmt(x.stepSharePct ?? 0, 1)} / ${fmt(x.stepShareCeilingPct ?? 0, 1)} %`,
        ]),
        ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      );
      md.push(
        `### 2b. Data stall with a CPU-burning step (a diagnostic: a CPU step is not a GPU step)\n\nThrough the warm cache, ${threads} decode thread(s). Pure decode per batch, measured first by feeding the pool directly: ${fmt(dec.perBatchMs, 3)} ms; training step = ${args['step-ms'] !== undefined ? 'fixed by --step-ms at' : `${STEP_FACTOR} × that =`} ${fmt(stepMs, 3)} ms of CPU burnt on the main thread per batch (the event loop is blocked meanwhile, as a synchronous step blocks it). Stall = time the loop waited in \`next()\` after batch 0, as % of the epoch after batch 0; it includes all the loader's work on the main thread. With the loader thread (the default) that is taking a finished batch from a MessagePort and wrapping its buffers (shuffle 'buffer': gathered in the loader thread) or slicing a decoded row group the thread transferred (shuffle 'none'); on the main thread it is also the HTTP replies, Arrow IPC reads and gathering, which can only run while the loop waits. Naive: the main-thread pipeline with prefetch 0 (a partition's fetch starts when a batch needs it). Machine CPU available: ${machine.cpus} cores for the step, the loader's threads and the cache worker together. Each loader runs its epochs back to back, as a training loop does (the loader thread prepares each next epoch while the current one ends), after one lead-in epoch not counted; median of the ${STALL_RUNS} that follow. The issue's stall counts from the first batch on; the column after it also counts the wait for the first batch, which a training loop pays at every epoch boundary. The last column sets the steps' share of the epoch after batch 0 (batches × step ÷ epoch) beside the most these ${machine.cpus} cores allow, given the CPU the loader's other threads and the cache worker used in that epoch (O): ${machine.cpus} × S ÷ (S + O), S = batches × step. A stall of at most 2 % needs a share of at least 98 %. O leaves out the training thread's own part of next(), so the ceiling is generous. In brackets, the part of O that the process's own helper threads used: the threads it had before any loader started (V8's garbage-collector and compiler threads, libuv's pool).\n\n${stallTable}\n\nTarget stall ≤ 2 %: ${stallMet ? 'met' : 'missed'} with shuffle 'none' (${fmt(granaryNone.stallPct ?? 0, 2)} %), ${(granaryBuffer.stallPct ?? 100) <= 2 ? 'met' : 'missed'} with shuffle 'buffer' (${fmt(granaryBuffer.stallPct ?? 0, 2)} %).`,
      );
      console.log(`\n${md[md.length - 1]}\n`);

    }

    await dsMem.close();
    await dsCache.close();

    // ------------------------------------------------------------ 3. RSS
    if (!args['skip-rss'] && ONLY.has('rss')) {
      const st = statfsSync(root);
      const freeGiB = (st.bavail * st.bsize) / 2 ** 30;
      console.log(`free disk under ${root}: ${fmt(freeGiB)} GiB`);
      // One ~128 MiB file, hard-linked under new names: every dataset is made of the same
      // file, so generation is quick and the bigger dataset costs no extra disk.
      const embeddingBytes = 4096;
      const rowGroupRows = 4096; // ~16 MiB row groups
      const base = join(root, 'rss-base');
      mkdirSync(base);
      t = performance.now();
      const gen = await generateParquetDataset(local, `${pathToFileURL(base).href}/`, { rows: 8 * rowGroupRows, files: 1, rowGroupRows, codec: 'none', embeddingBytes, seed: SEED });
      const fileBytes = gen.bytes;
      console.log(`RSS base file: ${fmt(fileBytes / MiB)} MiB in ${fmt((performance.now() - t) / 1000)} s`);
      const baseFile = join(base, readdirSync(base)[0] as string);
      const rss: RssResult[] = [];
      for (const gib of RSS_GIB) {
        const copies = Math.max(1, Math.round((gib * 2 ** 30) / fileBytes));
        const dir = join(root, `rss-${gib}`);
        mkdirSync(dir);
        for (let k = 0; k < copies; k++) linkSync(baseFile, join(dir, `part-${String(k).padStart(5, '0')}.parquet`));
        const tries: RssResult[] = [];
        for (let k = 0; k < RSS_RUNS; k++) {
          const child = await spawnChild<{ pid: number }>(self, ['--rss-child', `${pathToFileURL(dir).href}/`, '--batch-size', String(BATCH), '--prefetch-bytes-mib', String(PREFETCH_BYTES / MiB), ...(args.threads ? ['--threads', args.threads] : [])], { timeoutMs: 60_000 });
          const res = (await child.nextResult()) as RssResult;
          await child.stop();
          tries.push(res);
          console.log(`RSS ${gib} GiB, run ${k}: peak ${fmt(res.peakRss / MiB)} MiB (before epoch ${fmt(res.rssBeforeEpoch / MiB)} MiB), ${fmt(res.wallMs / 1000)} s`);
        }
        // The run with the median peak RSS.
        const sorted = [...tries].sort((a, b) => a.peakRss - b.peakRss);
        const res = sorted[Math.floor((sorted.length - 1) / 2)] as RssResult;
        rss.push({ ...res, peakRssRuns: tries.map((x) => x.peakRss) });
        rmSync(dir, { recursive: true, force: true });
      }
      rmSync(base, { recursive: true, force: true });
      const small = rss[0];
      const big = rss[rss.length - 1];
      const growth = small && big ? big.peakRss / small.peakRss - 1 : Number.NaN;
      out.rss = { prefetchBytes: PREFETCH_BYTES, prefetch: 4, fileBytes, rowGroups: 8, freeDiskGiB: freeGiB, runs: rss, growth, target: 0.15, met: growth < 0.15 };
      const rssTable = markdownTable(
        ['dataset', 'files', 'row groups', 'rows', 'epoch s', 'rows/s', 'RSS before epoch MiB', 'peak RSS MiB (median)', 'peak RSS of each run MiB', 'peak prefetched MiB'],
        rss.map((r) => [
          `${fmt(r.datasetBytes / 2 ** 30, 2)} GiB`,
          Math.round(r.datasetBytes / fileBytes),
          r.partitions,
          r.rows,
          fmt(r.wallMs / 1000, 1),
          fmt(r.rowsPerSec, 0),
          fmt(r.rssBeforeEpoch / MiB, 0),
          fmt(r.peakRss / MiB, 0),
          (r.peakRssRuns ?? []).map((x) => fmt(x / MiB, 0)).join(', '),
          fmt(r.peakResidentBytes / MiB, 0),
        ]),
        ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      );
      md.push(
        `### 3. Peak RSS vs dataset size\n\nLocal files (codec none, ~16 MiB row groups, ${embeddingBytes}-byte embeddings), one shuffled epoch per child process, ${RSS_RUNS} child process(es) per size (the run with the median peak is shown), prefetch 4, prefetchBytes ${PREFETCH_BYTES / MiB} MiB, batch ${BATCH}; RSS sampled every 10 ms and after every batch. Every dataset is one generated ${fmt(fileBytes / MiB)} MiB file (8 row groups) hard-linked under N names (so reads come from the page cache, and only the loader's own memory differs).\n\n${rssTable}\n\nPeak RSS growth ${fmt(RSS_GIB[0] ?? 0, 2)} GiB → ${fmt(RSS_GIB[RSS_GIB.length - 1] ?? 0, 2)} GiB: **${fmt(100 * growth)} %** (target < 15 %: ${growth < 0.15 ? 'met' : 'missed'}).`,
      );
      console.log(`\n${md[md.length - 1]}\n`);
    }

    const loadEnd = loadavg();
    out.loadavg = { start: loadStart, end: loadEnd };
    const header = `Machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node} (${machine.platform}); load average (1 min) ${fmt(loadStart[0] ?? 0)} at the start, ${fmt(loadEnd[0] ?? 0)} at the end.\nCommand: \`${out.command as string}\`.`;
    const mdText = `${header}\n\n${md.join('\n\n')}\n`;
    const jsonPath = writeResults('loader', out);
    const mdPath = join(dirname(jsonPath), 'loader.md');
    writeFileSync(mdPath, mdText);
    console.log(`wrote ${jsonPath} and ${mdPath}`);
  } finally {
    for (const c of cleanup.reverse()) await c().catch((e: unknown) => console.error('cleanup:', e));
    rmSync(root, { recursive: true, force: true });
  }
}

await main();

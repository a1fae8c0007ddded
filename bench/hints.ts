/**
 * Clairvoyant cache hints on real workers: shuffled epochs through the loader with
 * hints (prefetch + Belady) beside plain LRU in the same run, and two jobs with
 * different seeds sharing one cache.
 *
 *   npx tsx bench/hints.ts [--files 96] [--file-kib 1400] [--page-kib 256] [--workers 2] [--cache-ratio 0.5]
 *                          [--epochs 3] [--batch 2] [--step-ms 40] [--prefetch 4] [--lookahead 8] [--profile emulatedCloud] [--out file.json]
 *
 * s3rver, the fault proxy (the emulated cloud store) and each cache worker run in
 * their own processes; the loader (Dataset.files over a CacheClient) runs here and
 * sleeps `--step-ms` per batch to stand in for a training step. The workers' memory
 * tiers together hold `--cache-ratio` of the dataset. Store bytes are what the workers
 * read from the store (their `bytesFromStore`) plus the client's own fallback reads.
 * Read classes are counted by the workers (see `ReadClassStats` in src/cache/hints.ts).
 *
 * Prints markdown tables and writes bench/results/hints.json.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CacheClient } from '../src/cache/client.js';
import type { WorkerInfoResponse, WorkerOptions } from '../src/cache/worker.js';
import { Dataset } from '../src/loader/dataset.js';
import { createUfs } from '../src/ufs/router.js';
import { S3Ufs } from '../src/ufs/s3.js';
import { PROFILES } from '../src/netem/fault-proxy.js';
import { startProxyProcess } from './lib/proxy.js';
import { startS3rver, stopChild } from '../test/support/s3rver.js';
import { createInterface } from 'node:readline';
import { startWorker } from '../src/cache/worker.js';

const { values: args } = parseArgs({
  options: {
    files: { type: 'string', default: '96' },
    'file-kib': { type: 'string', default: '1400' },
    'page-kib': { type: 'string', default: '256' },
    workers: { type: 'string', default: '2' },
    'cache-ratio': { type: 'string', default: '0.5' },
    epochs: { type: 'string', default: '3' },
    batch: { type: 'string', default: '2' },
    'step-ms': { type: 'string', default: '40' },
    prefetch: { type: 'string', default: '4' },
    lookahead: { type: 'string', default: '8' },
    profile: { type: 'string', default: 'emulatedCloud' },
    seed: { type: 'string', default: '42' },
    'worker-child': { type: 'string' },
    out: { type: 'string' },
  },
});

const KiB = 1024;
const MiB = 1024 * KiB;
const FILES = Number(args.files);
const FILE_BYTES = Number(args['file-kib']) * KiB;
const PAGE = Number(args['page-kib']) * KiB;
const WORKERS = Number(args.workers);
const RATIO = Number(args['cache-ratio']);
const EPOCHS = Number(args.epochs);
const BATCH = Number(args.batch);
const STEP_MS = Number(args['step-ms']);
const PREFETCH = Number(args.prefetch);
const LOOKAHEAD = Number(args.lookahead);
const SEED = Number(args.seed);
const PROFILE_NAME = args.profile as keyof typeof PROFILES;
const profile = PROFILES[PROFILE_NAME];
if (!profile) throw new Error(`Unknown --profile ${args.profile} (known: ${Object.keys(PROFILES).join(', ')})`);
for (const [k, v] of Object.entries({ FILES, FILE_BYTES, PAGE, WORKERS, EPOCHS, BATCH })) {
  if (!Number.isSafeInteger(v) || v < 1) throw new Error(`Expected a positive integer for ${k}, got ${v}`);
}
if (!(RATIO > 0 && RATIO < 1)) throw new Error(`Expected --cache-ratio between 0 and 1, got ${RATIO}`);

const PREFIX = 's3://bench/ds/';


interface WorkerProcess {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** A cache worker in its own process: this file with `--worker-child <options JSON>` (works bundled, too). */
async function workerChild(json: string): Promise<void> {
  const w = await startWorker(JSON.parse(json) as WorkerOptions);
  const stop = (): void => {
    void w.close().then(() => process.exit(0));
  };
  // Before the ready line: a signal sent as soon as the parent reads it must find the handler.
  process.on('SIGTERM', stop);
  process.on('disconnect', stop);
  process.stdout.write(`${JSON.stringify({ url: w.url })}\n`);
}

async function spawnWorker(options: WorkerOptions): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--worker-child', JSON.stringify(options)], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`worker process exited with ${String(code)} before it was ready`)));
  });
  const { url } = JSON.parse(line) as { url: string };
  return { url, child, stop: () => stopChild(child) };
}

interface Counts {
  storeBytes: number;
  ready: number;
  prefetchedReady: number;
  joined: number;
  waited: number;
  prefetchPages: number;
  bypassed: number;
}

async function infos(workers: readonly WorkerProcess[]): Promise<WorkerInfoResponse[]> {
  return Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/info`)).json()) as WorkerInfoResponse));
}

function total(list: readonly WorkerInfoResponse[], client: readonly CacheClient[]): Counts {
  const c: Counts = { storeBytes: 0, ready: 0, prefetchedReady: 0, joined: 0, waited: 0, prefetchPages: 0, bypassed: 0 };
  for (const i of list) {
    c.storeBytes += i.counters.bytesFromStore;
    c.ready += i.hints?.reads.ready ?? 0;
    c.prefetchedReady += i.hints?.reads.prefetchedReady ?? 0;
    c.joined += i.hints?.reads.joined ?? 0;
    c.waited += i.hints?.reads.waited ?? 0;
    c.prefetchPages += i.hints?.prefetch.pages ?? 0;
    c.bypassed += i.hints?.bypassed ?? 0;
  }
  for (const cl of client) c.storeBytes += cl.stats().bytesFromUfs;
  return c;
}

function diff(a: Counts, b: Counts): Counts {
  const out = { ...b };
  for (const k of Object.keys(out) as (keyof Counts)[]) out[k] = b[k] - a[k];
  return out;
}

type Mode = 'hints' | 'lru';

interface Env {
  proxyUrl: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  datasetBytes: number;
  cacheBytes: number;
}

async function startWorkers(env: Env, mode: Mode): Promise<WorkerProcess[]> {
  const opts = (i: number): WorkerOptions => ({
    id: `${mode}-${i}`,
    pageSize: PAGE,
    memoryBytes: Math.floor(env.cacheBytes / WORKERS),
    ufs: { s3: { endpoint: env.proxyUrl, credentials: env.credentials, forcePathStyle: true, region: 'us-east-1' } },
    // Plain LRU: no hints are sent, and the prefetcher is off; the Belady policy
    // without hints is exactly LRU, and the read classes are still counted.
    hints: mode === 'hints' ? {} : { concurrency: 0 },
  });
  return Promise.all(Array.from({ length: WORKERS }, (_, i) => spawnWorker(opts(i))));
}

function newClient(env: Env, workers: readonly WorkerProcess[]): CacheClient {
  return new CacheClient({
    workers: workers.map((w) => w.url),
    ufs: createUfs({ s3: { endpoint: env.proxyUrl, credentials: env.credentials, forcePathStyle: true, region: 'us-east-1' } }),
    requestTimeoutMs: 60_000,
  });
}

interface EpochRow {
  scenario: string;
  mode: Mode;
  epoch: number;
  seconds: number;
  stallSeconds: number;
  rows: number;
  counts: Counts;
}

/** One epoch of one job: read every batch, sleeping `STEP_MS` per batch as a training step would. */
async function runEpoch(ds: Dataset, mode: Mode, epoch: number, seed: number): Promise<{ rows: number; seconds: number; stallSeconds: number }> {
  const stream = ds.batches({
    batchSize: BATCH,
    epoch,
    seed,
    shuffle: true,
    prefetch: PREFETCH,
    hints: mode === 'hints' ? { lookahead: LOOKAHEAD } : false,
  });
  const t0 = performance.now();
  let rows = 0;
  for await (const b of stream) {
    rows += b.numRows;
    if (STEP_MS > 0) await sleep(STEP_MS);
  }
  return { rows, seconds: (performance.now() - t0) / 1000, stallSeconds: stream.stats().stallMs / 1000 };
}

async function multiEpoch(env: Env, mode: Mode): Promise<EpochRow[]> {
  const workers = await startWorkers(env, mode);
  const client = newClient(env, workers);
  const out: EpochRow[] = [];
  try {
    const ds = await Dataset.files(PREFIX, { fs: client, filesPerPartition: 1 });
    for (let epoch = 0; epoch < EPOCHS; epoch++) {
      const before = total(await infos(workers), [client]);
      const r = await runEpoch(ds, mode, epoch, SEED);
      await sleep(200); // let the hint `end` and any last prefetch land in this epoch's counts
      const after = total(await infos(workers), [client]);
      if (r.rows !== FILES) throw new Error(`${mode} epoch ${epoch}: ${r.rows} rows, expected ${FILES}`);
      out.push({ scenario: 'one job', mode, epoch: epoch + 1, seconds: r.seconds, stallSeconds: r.stallSeconds, rows: r.rows, counts: diff(before, after) });
      process.stderr.write(`${mode} epoch ${epoch + 1}: ${(diff(before, after).storeBytes / MiB).toFixed(1)} MiB from the store, ${r.seconds.toFixed(1)} s\n`);
    }
    await ds.close();
  } finally {
    await client.close();
    await Promise.all(workers.map((w) => w.stop()));
  }
  return out;
}

async function crossJob(env: Env, mode: Mode): Promise<EpochRow> {
  const workers = await startWorkers(env, mode);
  const clients = [newClient(env, workers), newClient(env, workers)];
  try {
    const sets = await Promise.all(clients.map((fs) => Dataset.files(PREFIX, { fs, filesPerPartition: 1 })));
    const before = total(await infos(workers), clients);
    const t0 = performance.now();
    const rs = await Promise.all(sets.map((ds, j) => runEpoch(ds, mode, 0, SEED + 1 + j)));
    await sleep(200);
    const after = total(await infos(workers), clients);
    for (const ds of sets) await ds.close();
    const counts = diff(before, after);
    process.stderr.write(`${mode} two jobs: ${(counts.storeBytes / MiB).toFixed(1)} MiB from the store\n`);
    return {
      scenario: 'two jobs, seeds differ',
      mode,
      epoch: 1,
      seconds: (performance.now() - t0) / 1000,
      stallSeconds: rs.reduce((a, r) => a + r.stallSeconds, 0),
      rows: rs.reduce((a, r) => a + r.rows, 0),
      counts,
    };
  } finally {
    for (const c of clients) await c.close();
    await Promise.all(workers.map((w) => w.stop()));
  }
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

async function main(): Promise<void> {
  const s3 = await startS3rver({ buckets: ['bench'] });
  const proxy = await startProxyProcess(s3.port, PROFILE_NAME);
  const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
  const rows: EpochRow[] = [];
  let env: Env | undefined;
  try {
    const writer = new S3Ufs({ endpoint: s3.endpoint, credentials, forcePathStyle: true, region: 'us-east-1' });
    let datasetBytes = 0;
    for (let i = 0; i < FILES; i++) {
      // Sizes vary (0.75x-1.25x) so files do not line up with pages.
      const size = Math.round(FILE_BYTES * (0.75 + ((i * 7919) % 97) / 194));
      await writer.write(`${PREFIX}f-${String(i).padStart(4, '0')}.bin`, randomBytes(size));
      datasetBytes += size;
    }
    await writer.close();
    env = { proxyUrl: proxy.url, credentials, datasetBytes, cacheBytes: Math.floor(RATIO * datasetBytes) };
    // LRU first, then hints: each gets fresh workers, so order only matters for machine noise.
    rows.push(...(await multiEpoch(env, 'lru')));
    rows.push(...(await multiEpoch(env, 'hints')));
    rows.push(await crossJob(env, 'lru'));
    rows.push(await crossJob(env, 'hints'));
  } finally {
    await proxy.handle.stop();
    await s3.close();
  }
  const D = env.datasetBytes;
  const optimum = (1 - env.cacheBytes / D) * D;
  const profileText = `${PROFILE_NAME} (${profile.firstByteLatencyMs} ms first byte, ${profile.bandwidthPerConnBps / 1e6} MB/s per connection)`;
  const reads = (c: Counts): number => c.ready + c.joined + c.waited;
  const header = [
    `Dataset: ${FILES} objects, ${(D / MiB).toFixed(1)} MiB; ${WORKERS} workers, ${PAGE / KiB} KiB pages, memory tiers ${(env.cacheBytes / MiB).toFixed(1)} MiB in all (${pct(env.cacheBytes / D)} of the dataset).`,
    `Store: s3rver behind the fault proxy, profile ${profileText}. Loader: Dataset.files, 1 object per partition, batch ${BATCH}, shuffle 'buffer', prefetch ${PREFETCH}, ${STEP_MS} ms per batch (training step), hint lookahead ${LOOKAHEAD}. ${availableParallelism()} CPUs.`,
    `Optimum per epoch after the first: (1 - cache/dataset) x dataset = ${(optimum / MiB).toFixed(1)} MiB.`,
  ];
  const table1 = [
    '| policy | epoch | store MiB | x dataset | vs optimum | reads | ready (no store wait) | of which prefetched | joined a prefetch | waited on store | loader stall s | epoch s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows
      .filter((r) => r.scenario === 'one job')
      .map((r) => {
        const c = r.counts;
        const n = reads(c);
        return `| ${r.mode === 'hints' ? 'hints (prefetch + Belady)' : 'LRU'} | ${r.epoch} | ${(c.storeBytes / MiB).toFixed(1)} | ${(c.storeBytes / D).toFixed(2)} | ${
          r.epoch > 1 ? `${(c.storeBytes / optimum).toFixed(2)}x` : '-'
        } | ${n} | ${pct(c.ready / n)} | ${pct(c.prefetchedReady / n)} | ${pct(c.joined / n)} | ${pct(c.waited / n)} | ${r.stallSeconds.toFixed(1)} | ${r.seconds.toFixed(1)} |`;
      }),
  ];
  const table2 = [
    '| policy | jobs | store MiB, both first epochs | x dataset | ready | loader stall s (sum) |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows
      .filter((r) => r.scenario !== 'one job')
      .map(
        (r) =>
          `| ${r.mode === 'hints' ? 'hints (prefetch + Belady)' : 'LRU'} | 2 | ${(r.counts.storeBytes / MiB).toFixed(1)} | ${(r.counts.storeBytes / D).toFixed(2)} | ${pct(
            r.counts.ready / reads(r.counts),
          )} | ${r.stallSeconds.toFixed(1)} |`,
      ),
  ];
  console.log([...header, '', ...table1, '', ...table2].join('\n'));
  const out = args.out ?? join(dirname(fileURLToPath(import.meta.url)), 'results', 'hints.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    JSON.stringify(
      {
        args,
        profile: { name: PROFILE_NAME, ...profile },
        datasetBytes: D,
        cacheBytes: env.cacheBytes,
        optimumBytesPerEpoch: optimum,
        rows,
      },
      null,
      2,
    ),
  );
}

if (args['worker-child'] !== undefined) {
  await workerChild(args['worker-child']);
} else {
  await main();
}

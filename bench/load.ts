/**
 * `npm run bench -- load [--seconds 60] [--procs 4] [--clients 16]`: 64 concurrent clients
 * (16 loops in each of 4 processes, one `CacheClient` per process) making mixed requests
 * against 3 cache workers (child processes, static membership) in front of s3rver:
 * small and large ranges of a hot set the workers hold (cached) and of a cold set three
 * times what their memory holds together (mostly uncached: each read goes through to
 * the store and evicts), stats and lists. Reports throughput, p50/p99/p999 latency by
 * kind, errors, and each worker's RSS every 2 s against its page-store budget.
 * Writes bench/results/load.json.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { CacheClient } from '../src/cache/client.js';
import { S3Ufs } from '../src/ufs/s3.js';
import { startS3rver } from '../test/support/s3rver.js';
import { spawnWorker, type WorkerProcess } from '../test/support/workers.js';
import { KINDS, type Kind, type LoadClientConfig, type LoadClientResult } from './load-mix.js';
import { MiB, fmt, machineInfo, markdownTable, quantile, writeResults } from './lib/report.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string' },
    procs: { type: 'string' },
    clients: { type: 'string' },
    'memory-mib': { type: 'string' },
  },
});
const seconds = Number(values.seconds ?? 60);
const procs = Number(values.procs ?? 4);
const clientsPerProc = Number(values.clients ?? 16);
const memoryMiB = Number(values['memory-mib'] ?? 16);
const HOT = 8;
const HOT_BYTES = 1 * MiB;
const COLD = 36;
const COLD_BYTES = 4 * MiB;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Seconds since the sampler started at which each client process began its loops. */
const started: number[] = [];
let t0 = 0;

function runClient(cfg: LoadClientConfig): Promise<LoadClientResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', new URL('./load-client.ts', import.meta.url).pathname, JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    let last = '';
    rl.on('line', (l) => {
      if (l === 'started') started.push((performance.now() - t0) / 1000);
      else last = l;
    });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(last) as LoadClientResult) : reject(new Error(`load client exited with ${String(code)}`))));
  });
}

const s3 = await startS3rver({ buckets: ['load'] });
const s3opts = {
  endpoint: s3.endpoint,
  region: 'us-east-1',
  forcePathStyle: true,
  credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
};
const workers: WorkerProcess[] = [];
try {
  const store = new S3Ufs(s3opts);
  const hot: { url: string; size: number }[] = [];
  const cold: { url: string; size: number }[] = [];
  for (let i = 0; i < HOT; i++) hot.push({ url: `s3://load/hot/obj-${i}.bin`, size: HOT_BYTES });
  for (let i = 0; i < COLD; i++) cold.push({ url: `s3://load/cold/obj-${i}.bin`, size: COLD_BYTES });
  for (const o of [...hot, ...cold]) await store.write(o.url, randomBytes(o.size));
  await store.close();

  for (let i = 0; i < 3; i++) workers.push(await spawnWorker({ id: `w${i}`, memoryBytes: memoryMiB * MiB, ufs: { s3: s3opts }, metadataTtlMs: 10_000 }));
  const urls = workers.map((w) => w.url);
  const idleRss = workers.map((w) => rssMiB(w.pid));

  // Warm the hot set.
  const warm = new CacheClient({ workers: urls, ufs: { s3: s3opts }, blockSize: 4 * MiB });
  for (const o of hot) await warm.read(o.url);
  await warm.close();

  const rss: { t: number; mib: number[] }[] = [];
  t0 = performance.now();
  const sampler = setInterval(() => rss.push({ t: Math.round((performance.now() - t0) / 1000), mib: workers.map((w) => Math.round(rssMiB(w.pid))) }), 2000);
  const results = await Promise.all(
    Array.from({ length: procs }, (_, p) =>
      runClient({ workers: urls, s3: s3opts, hot, cold, listPrefix: 's3://load/hot/', clients: clientsPerProc, seconds, seed: p + 1 }),
    ),
  );
  clearInterval(sampler);
  const wall = (performance.now() - t0) / 1000;

  const lat = Object.fromEntries(KINDS.map((k) => [k, results.flatMap((r) => r.latenciesMs[k])])) as Record<Kind, number[]>;
  const all = KINDS.flatMap((k) => lat[k]);
  const ops = all.length;
  const errors = results.reduce((a, r) => a + r.errors, 0);
  const bytes = results.reduce((a, r) => a + r.bytes, 0);
  const infos = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/info`)).json()) as { counters: { hits: number; misses: number; storeRequests: number } }));
  const row = (name: string, xs: number[]): (string | number)[] => [name, xs.length, fmt(xs.length / seconds, 0), fmt(quantile(xs, 0.5), 2), fmt(quantile(xs, 0.99), 1), fmt(quantile(xs, 0.999), 1)];
  // Growth over the second half of the load (the clients start seconds after the sampler).
  const loadStart = Math.max(0, ...started);
  const half = rss.filter((s) => s.t >= loadStart + seconds / 2);
  const summary = {
    seconds,
    wallSeconds: wall,
    clients: procs * clientsPerProc,
    processes: procs,
    workers: 3,
    memoryBudgetMiB: memoryMiB,
    hotSet: { objects: HOT, bytes: HOT * HOT_BYTES },
    coldSet: { objects: COLD, bytes: COLD * COLD_BYTES },
    ops,
    opsPerSec: ops / seconds,
    mbPerSec: bytes / seconds / 1e6,
    errors,
    errorSamples: results.flatMap((r) => r.errorSamples).slice(0, 10),
    latencyMs: Object.fromEntries(KINDS.map((k) => [k, { n: lat[k].length, p50: quantile(lat[k], 0.5), p99: quantile(lat[k], 0.99), p999: quantile(lat[k], 0.999) }])),
    allLatencyMs: { p50: quantile(all, 0.5), p99: quantile(all, 0.99), p999: quantile(all, 0.999) },
    idleRssMiB: idleRss,
    loadStartedAtSecond: loadStart,
    rssMiB: rss,
    maxRssMiB: workers.map((_, i) => Math.max(...rss.map((s) => s.mib[i] ?? 0))),
    rssSecondHalfGrowthMiB: workers.map((_, i) => (half.at(-1)?.mib[i] ?? 0) - (half[0]?.mib[i] ?? 0)),
    workerCounters: infos.map((i) => i.counters),
    machine: machineInfo(),
    startedAt: new Date().toISOString(),
  };
  process.stdout.write(
    `${markdownTable(['kind', 'ops', 'ops/s', 'p50 ms', 'p99 ms', 'p999 ms'], [...KINDS.map((k) => row(k, lat[k])), row('all', all)], ['l', 'r', 'r', 'r', 'r', 'r'])}\n\n` +
      `${summary.clients} clients in ${procs} processes, ${seconds} s: ${fmt(summary.opsPerSec, 0)} ops/s, ${fmt(summary.mbPerSec, 0)} MB/s, ${errors} errors\n` +
      `worker RSS MiB idle ${idleRss.map((x) => fmt(x, 0)).join('/')}, max ${summary.maxRssMiB.join('/')}, growth over the load's second half ${summary.rssSecondHalfGrowthMiB.join('/')} (load from ${fmt(loadStart, 0)} s; page budget ${memoryMiB} MiB each)\n` +
      `rss over time: ${rss.map((s) => `${s.t}s:${s.mib.join('/')}`).join(' ')}\n`,
  );
  process.stdout.write(`wrote ${writeResults('load', summary)}\n`);
} finally {
  await Promise.all(workers.map((w) => w.stop()));
  await s3.close();
}

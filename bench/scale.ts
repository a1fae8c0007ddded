/**
 * At scale, on paper: what granary costs and saves for a large job, computed from the
 * real hash ring (src/cache/ring.ts) on samples of block keys, the registration code's
 * lease settings, and the eviction simulator (bench/cache-sim.ts, run as a child for
 * the store share of warm shuffled epochs). Nothing of the dataset's size is built.
 *
 *   npx tsx bench/scale.ts [--workers 1000] [--ranks 4096] [--dataset-tb 100] [--worker-cache-gb 50]
 *                          [--rank-mbps 200] [--nic-gbps 25] [--balance-keys 300000] [--move-keys 100000]
 *
 * Prints markdown tables and writes bench/results/scale.json.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { encodeWorkerInfo, workerKey } from '../src/cache/etcd.js';
import { HashRing, ringKey } from '../src/cache/ring.js';
import { fmt, machineInfo, markdownTable, writeResults } from './lib/report.js';
import { storeRequestsPerEpoch, type Shape } from './scale/requests.js';

const { values: args } = parseArgs({
  options: {
    workers: { type: 'string', default: '1000' },
    ranks: { type: 'string', default: '4096' },
    'dataset-tb': { type: 'string', default: '100' },
    'worker-cache-gb': { type: 'string', default: '50' },
    'rank-mbps': { type: 'string', default: '200' },
    'nic-gbps': { type: 'string', default: '25' },
    'balance-keys': { type: 'string', default: '300000' },
    'move-keys': { type: 'string', default: '100000' },
    'leave-pct': { type: 'string', default: '1' },
    'ttl-s': { type: 'string', default: '10' },
    'metadata-ttl-s': { type: 'string', default: '10' },
  },
});
const num = (k: keyof typeof args): number => {
  const v = Number(args[k]);
  if (!(v > 0) || !Number.isFinite(v)) throw new Error(`Expected --${k} to be a positive number, got ${String(args[k])}`);
  return v;
};

const WORKERS = num('workers');
const RANKS = num('ranks');
const DATASET = num('dataset-tb') * 1e12;
const WORKER_CACHE = num('worker-cache-gb') * 1e9;
const RANK_BPS = num('rank-mbps') * 1e6;
const NIC_BPS = (num('nic-gbps') * 1e9) / 8;
const BALANCE_KEYS = num('balance-keys');
const MOVE_KEYS = num('move-keys');
const LEAVE = Math.max(1, Math.round((WORKERS * num('leave-pct')) / 100));
/** Worker lease TTL: `etcd.ttlSeconds` of startWorker (src/cache/worker.ts), default 10. */
const TTL_S = num('ttl-s');
/** etcd3's Lease renews every TTL / 3 (node_modules/etcd3/lib/lease.js). */
const KEEPALIVE_S = TTL_S / 3;
/** CacheClient's default block size (src/cache/client-options.ts): one ring key per 16 MiB of an object. */
const BLOCK = 16 * 2 ** 20;
const MiB = 2 ** 20;

const t0 = performance.now();
const out: Record<string, unknown> = { machine: machineInfo(), command: `npx tsx bench/scale.ts ${process.argv.slice(2).join(' ')}`.trim() };

// ---------------------------------------------------------------- etcd
// A realistic registration: what startWorker publishes (src/cache/worker.ts), with a
// cluster name, a UUID id, a node's address and two labels.
const info = {
  id: '3f2a9c4e-8b1d-4e6f-a2c3-9d8e7f6a5b4c',
  url: 'http://10.123.45.67:7070',
  capacityBytes: WORKER_CACHE,
  startedAt: 1_800_000_000_000,
  version: '0.1.0',
  host: 'gpu-node-0123.train.example.internal',
  pageSize: MiB,
  labels: { node: 'gpu-node-0123', zone: 'us-east-1a' },
};
const key = workerKey('training-cluster', info.id);
const value = encodeWorkerInfo(info);
// A watch event carries the KeyValue: key, value, and four int64 revisions/lease (~25 bytes
// as varints), plus the event and response framing (~20 bytes).
const eventBytes = key.length + value.length + 45;
const watchers = RANKS; // one CacheClient (one watch) per rank process, shared by its loader and decode threads
const etcd = {
  watchers,
  keepalivesPerSec: WORKERS / KEEPALIVE_S,
  registrationBytes: key.length + value.length,
  bytesPerChange: eventBytes * watchers,
  bytesForLeave: eventBytes * watchers * LEAVE,
  /** Every client reads the whole membership once when it starts (a range over the prefix). */
  bytesAtJobStart: (key.length + value.length + 25) * WORKERS * RANKS,
};
out.etcd = { ...etcd, key, value, eventBytes, ttlSeconds: TTL_S, keepaliveIntervalS: KEEPALIVE_S };

// ---------------------------------------------------------------- the ring
const members = Array.from({ length: WORKERS }, (_, i) => ({ id: `worker-${String(i).padStart(5, '0')}`, url: `http://10.0.${i >> 8}.${i & 255}:7070` }));
const ring = new HashRing(members);
const FILE_BYTES = 2 ** 30; // 1 GiB Parquet files: 64 blocks each
const blocksPerFile = FILE_BYTES / BLOCK;
const totalBlocks = Math.ceil(DATASET / BLOCK);
/** The i-th block key of a sample spread over the whole dataset. */
const sampleKey = (i: number, n: number): string => {
  const b = Math.floor((i * totalBlocks) / n);
  const f = Math.floor(b / blocksPerFile);
  return ringKey(`s3://datasets/train/part-${String(f).padStart(6, '0')}.parquet`, `"${(f * 2654435761) >>> 0}"`, b % blocksPerFile);
};

let t = performance.now();
const load = new Map<string, number>();
for (let i = 0; i < BALANCE_KEYS; i++) {
  const id = ring.owner(sampleKey(i, BALANCE_KEYS))?.id as string;
  load.set(id, (load.get(id) ?? 0) + 1);
}
const lookupUs = ((performance.now() - t) * 1000) / BALANCE_KEYS;
const loads = members.map((m) => load.get(m.id) ?? 0);
const mean = BALANCE_KEYS / WORKERS;
const maxLoad = Math.max(...loads);
// Ideal random placement of the same sample (what a perfect hash gives): max ≈ mean + z·√mean.
const z = Math.sqrt(2 * Math.log(WORKERS));
const idealMaxOverMean = (n: number): number => 1 + z / Math.sqrt(n / WORKERS);
const balance = {
  sampleKeys: BALANCE_KEYS,
  maxOverMean: maxLoad / mean,
  minOverMean: Math.min(...loads) / mean,
  idealMaxOverMeanAtSample: idealMaxOverMean(BALANCE_KEYS),
  totalBlocks,
  expectedMaxOverMeanAtFullSize: idealMaxOverMean(totalBlocks),
  ownerLookupUs: lookupUs,
};
out.balance = balance;

t = performance.now();
// 1 % of the workers leave: every `WORKERS / LEAVE`-th one, so the choice is not the hash's.
const leaving = new Set(members.filter((_, i) => i % Math.floor(WORKERS / LEAVE) === 0).slice(0, LEAVE).map((m) => m.id));
const smaller = new HashRing(members.filter((m) => !leaving.has(m.id)));
let moved = 0;
let movedNotFromLeavers = 0;
for (let i = 0; i < MOVE_KEYS; i++) {
  const k = sampleKey(i, MOVE_KEYS);
  const before = ring.owner(k)?.id as string;
  const after = smaller.owner(k)?.id as string;
  if (before !== after) {
    moved++;
    if (!leaving.has(before)) movedNotFromLeavers++;
  }
}
const movedFraction = moved / MOVE_KEYS;
const movement = {
  leaving: LEAVE,
  sampleKeys: MOVE_KEYS,
  movedFraction,
  movedNotFromLeavers,
  blocksMoved: Math.round(movedFraction * totalBlocks),
  bytesMoved: movedFraction * totalBlocks * BLOCK,
  ms: performance.now() - t,
};
out.movement = movement;

// ---------------------------------------------------------------- the simulator
// Store share of warm shuffled epochs by cache size and policy: bench/cache-sim.ts's
// numbers (1,000 partitions, 4 ranks, buffer shuffle; the share is what scales).
const here = dirname(fileURLToPath(import.meta.url));
t = performance.now();
const sim = spawnSync(process.execPath, [...process.execArgv, join(here, 'cache-sim.ts')], { encoding: 'utf8', timeout: 120_000 });
if (sim.status !== 0) throw new Error(`bench/cache-sim.ts failed (${String(sim.status)}): ${sim.stderr}`);
const simRows = (JSON.parse(readFileSync(join(here, 'results', 'cache-sim.json'), 'utf8')) as { rows: { policy: string; jobs: number; cacheRatio: number; storeByEpoch: number[] }[] }).rows;
const cacheRatio = (WORKERS * WORKER_CACHE) / DATASET;
/** Store share of a warm epoch (epochs 2..n, mean) for `policy`, at the simulated ratio nearest this cache, or 0 when the cache holds the dataset. */
const warmShare = (policy: string): { share: number; atRatio: number } => {
  if (cacheRatio >= 1) return { share: 0, atRatio: cacheRatio };
  const rows = simRows.filter((r) => r.policy === policy && r.jobs === 1);
  const best = rows.reduce((a, r) => (Math.abs(r.cacheRatio - cacheRatio) < Math.abs(a.cacheRatio - cacheRatio) ? r : a));
  const warm = best.storeByEpoch.slice(1);
  return { share: warm.reduce((a, b) => a + b, 0) / warm.length, atRatio: best.cacheRatio };
};
const lru = warmShare('LRU');
const hints = warmShare('Belady (hints)');
out.simulator = { cacheRatio, lru, hints, ms: performance.now() - t };

// ---------------------------------------------------------------- store requests and limits
const epochS = DATASET / (RANKS * RANK_BPS);
const shapes: Shape[] = [
  { name: 'Parquet, 1 GiB files, 128 MiB row groups', objects: Math.ceil(DATASET / FILE_BYTES), readBytes: 128 * MiB },
  { name: 'raw objects of 100 KiB (images)', objects: Math.ceil(DATASET / (100 * 1024)), readBytes: 100 * 1024 },
];
const requests = shapes.map((s) => storeRequestsPerEpoch(s, { dataset: DATASET, ranks: RANKS, epochS, metadataTtlS: num('metadata-ttl-s'), lruShare: lru.share, hintsShare: hints.share }));
out.requests = requests;

const aggregate = RANKS * RANK_BPS;
const perWorker = aggregate / WORKERS;
const limits = {
  epochS,
  aggregateBps: aggregate,
  perWorkerBps: perWorker,
  nicUtilisation: perWorker / NIC_BPS,
  /** A cold epoch: each worker reads its share from the store while it serves it (in + out on the NIC). */
  nicUtilisationCold: perWorker / NIC_BPS,
};
out.limits = limits;

// ---------------------------------------------------------------- print
const md: string[] = [];
md.push(
  `### At scale: ${WORKERS} workers, ${RANKS} ranks, ${fmt(DATASET / 1e12, 0)} TB\n\n` +
    markdownTable(
      ['quantity', 'value', 'from'],
      [
        ['etcd watchers', `${watchers}`, 'one membership watch per rank process (its loader and decode threads share it)'],
        ['lease keep-alives per second', fmt(etcd.keepalivesPerSec, 0), `${WORKERS} workers, TTL ${TTL_S} s, etcd3 renews every TTL/3`],
        ['registration value', `${etcd.registrationBytes} B`, `key ${key.length} B + JSON value ${value.length} B (src/cache/registration.ts)`],
        ['bytes per membership change', `${fmt(etcd.bytesPerChange / 1e6, 2)} MB`, `${eventBytes} B per watch event × ${watchers} watchers`],
        [`bytes when ${LEAVE} workers (${num('leave-pct')} %) leave`, `${fmt(etcd.bytesForLeave / 1e6, 1)} MB`, `${LEAVE} events × ${watchers} watchers`],
        ['bytes at job start', `${fmt(etcd.bytesAtJobStart / 1e9, 2)} GB`, `each rank reads the ${WORKERS} registrations once`],
        ['blocks moved when workers leave', `${fmt(100 * movedFraction, 2)} % = ${fmt(movement.blocksMoved / 1e3, 0)} k blocks (${fmt(movement.bytesMoved / 1e12, 2)} TB)`, `real HashRing, ${MOVE_KEYS} sampled block keys of ${fmt(totalBlocks / 1e6, 2)} M (16 MiB blocks); keys moved that the leavers did not own: ${movedNotFromLeavers}`],
        ['ring balance, max / mean load', `${fmt(balance.maxOverMean, 3)} (min ${fmt(balance.minOverMean, 3)})`, `${BALANCE_KEYS} sampled keys (${fmt(mean, 0)} per worker); ideal random placement at that sample: ${fmt(balance.idealMaxOverMeanAtSample, 3)}; at the full ${fmt(totalBlocks / 1e6, 2)} M blocks: ≈ ${fmt(balance.expectedMaxOverMeanAtFullSize, 3)}`],
        ['owner lookup', `${fmt(lookupUs, 1)} µs`, `rendezvous over ${WORKERS} members, one per 16 MiB block read`],
        ['epoch length at the ranks\' pace', `${fmt(epochS, 0)} s`, `${RANKS} ranks × ${fmt(RANK_BPS / 1e6, 0)} MB/s = ${fmt(aggregate / 1e9, 0)} GB/s`],
        ['per-worker egress', `${fmt(perWorker / 1e6, 0)} MB/s = ${fmt(100 * limits.nicUtilisation, 0)} % of a ${num('nic-gbps')} Gb/s NIC`, 'warm; a cold epoch adds the same again inbound from the store'],
        ['cache / dataset', `${fmt(cacheRatio, 2)}`, `${WORKERS} × ${fmt(WORKER_CACHE / 1e9, 0)} GB; warm-epoch store share from bench/cache-sim.ts at ${fmt(hints.atRatio, 2)}: LRU ${fmt(lru.share, 3)}, hints ${fmt(hints.share, 3)}`],
      ],
      ['l', 'r', 'l'],
    ),
);
md.push(
  `### Store requests per epoch\n\n` +
    markdownTable(
      ['dataset', 'direct, every epoch', 'direct, job start (per job)', 'granary, cold epoch', 'granary, warm epoch (LRU)', 'granary, warm epoch (hints)', 'granary, job start', 'peak GET/s: direct / granary cold', 'S3 prefix partitions needed (5,500 GET/s each): direct / cold / warm (hints)'],
      requests.map((r) => [
        r.shape,
        `${fmt(r.direct.epoch / 1e6, 2)} M`,
        `${fmt(r.direct.start / 1e6, 2)} M`,
        `${fmt(r.granary.cold / 1e6, 2)} M`,
        `${fmt(r.granary.warmLru / 1e6, 2)} M`,
        `${fmt(r.granary.warmHints / 1e6, 2)} M`,
        `${fmt(r.granary.start / 1e6, 3)} M`,
        `${fmt(r.direct.epoch / epochS / 1e3, 0)} k / ${fmt(r.granary.cold / epochS / 1e3, 0)} k`,
        `${fmt(r.partitions.direct, 0)} / ${fmt(r.partitions.cold, 0)} / ${fmt(r.partitions.warm, 0)}`,
      ]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ) +
    `\n\n${requests.map((r) => `- ${r.shape}: ${r.note}`).join('\n')}`,
);
const binding = requests.map((r) => r.binding).join(' ');
md.push(`### The limit that binds first\n\n${binding}`);
out.binding = binding;
out.ms = performance.now() - t0;
const text = md.join('\n\n');
console.log(text);
console.log(`\ncomputed in ${fmt((performance.now() - t0) / 1000, 1)} s; wrote ${writeResults('scale', out)}`);

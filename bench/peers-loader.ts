/**
 * The loader rows of the peers bench: what a training job reading a store through the
 * network profile sees, epoch by epoch.
 *
 *  (a) a Parquet dataset (~1 GB; --quick ~100 MB) as 3 shuffled epochs through
 *      `Dataset.parquet` + `CacheClient` on two cache worker processes (epoch 1 cold,
 *      2 and 3 warm), the same straight from the store (`S3Ufs` through the proxy), and
 *      pure decode: the same files on local disk, read again from the page cache (the
 *      ceiling; bench/loader.ts's "pure decode, loader thread").
 *  (b) W2, 2,000 × 100 KiB raw objects (--quick 200), through `Dataset.files` and the
 *      cache as 2 shuffled epochs.
 *
 * Every epoch is verified after its clock stops: every row id exactly once, every file's
 * sha256. s3rver runs behind the fault proxy, each in its own process, and the workers
 * are separate processes with a static membership.
 *
 *   npx tsx bench/peers-loader.ts [--quick] [--profile sameRegion]
 *
 * bench/peers.ts imports `loaderRows` from here.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { RecordBatch } from 'apache-arrow';
import { request } from 'undici';
import { CacheClient } from '../src/cache/client.js';
import { generateParquetDataset } from '../src/gen/parquet.js';
import { Dataset } from '../src/loader/index.js';
import { PROFILES } from '../src/netem/fault-proxy.js';
import { LocalUfs } from '../src/ufs/local.js';
import { S3Ufs } from '../src/ufs/s3.js';
import { startS3rver } from '../test/support/s3rver.js';
import { spawnWorker, type WorkerProcess } from '../test/support/workers.js';
import { startProxyProcess } from './lib/proxy.js';
import { MiB, fmt, markdownTable } from './lib/report.js';

export interface LoaderRowsOptions {
  profile: string;
  quick: boolean;
  workDir: string;
  log: (line: string) => void;
}

export interface LoaderRow {
  workload: string;
  contender: string;
  pass: string;
  wallS: number;
  rate: number;
  unit: string;
  verified: boolean;
  storeRequests?: Record<string, number>;
  cpuS?: Record<string, number>;
  note?: string;
}

const SEED = 42;
const COLUMNS = ['id', 'label', 'score', 'embedding'];
const EMBEDDING_BYTES = 1024;
const ROW_GROUP_ROWS = 16_384; // ~17 MB row groups
const BATCH = 1024;
const FILE_BATCH = 32;

/** The named profile, or `emulatedCloud` where this checkout does not know the name yet. */
function resolveProfile(name: string): { name: keyof typeof PROFILES; note?: string } {
  if (Object.hasOwn(PROFILES, name)) return { name: name as keyof typeof PROFILES };
  return { name: 'emulatedCloud', note: `profile ${name} unknown here: ran emulatedCloud` };
}

/** Store requests the workers made, by kind, from their Prometheus counters. */
async function workerStoreRequests(ws: readonly WorkerProcess[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const w of ws) {
    const res = await request(`${w.url}/metrics`);
    const text = await res.body.text();
    for (const m of text.matchAll(/^granary_worker_store_requests_total\{([^}]*)\} (\d+)/gm)) {
      const k = `workers ${/kind="(\w+)"/.exec(m[1] as string)?.[1] ?? '?'}`;
      out[k] = (out[k] ?? 0) + Number(m[2]);
    }
  }
  return out;
}

function diff(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) !== 0) out[k] = v - (before[k] ?? 0);
  return out;
}

/** CPU seconds (user + system, all threads) a process has used, from /proc; NaN where unreadable. */
function procCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

type Meter = () => Record<string, number>;

/** CPU seconds each named group of processes (and this one, as `reader`) used from now to the call of the result. */
function cpuMeter(groups: Record<string, readonly number[]>): Meter {
  const read = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [name, pids] of Object.entries(groups)) out[name] = pids.reduce((a, pid) => a + procCpuSeconds(pid), 0);
    const u = process.cpuUsage();
    out.reader = (u.user + u.system) / 1e6;
    return out;
  };
  const before = read();
  return () => {
    const after = read();
    return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, Math.round((v - (before[k] ?? 0)) * 100) / 100]));
  };
}

/** One shuffled Parquet epoch; every id checked exactly once (a byte per row, cheap enough to do inside the loop). */
async function parquetEpoch(ds: Dataset, epoch: number): Promise<{ seconds: number; rows: number; verified: boolean }> {
  const seen = new Uint8Array(ds.numRows);
  let dup = 0;
  let bad = 0;
  let rows = 0;
  const t0 = performance.now();
  for await (const b of ds.batches({ batchSize: BATCH, epoch, seed: SEED, shuffle: true })) {
    const ids = b.getChild('id')?.toArray() as BigInt64Array | undefined;
    if (!ids) throw new Error('batch without an id column');
    for (let i = 0; i < ids.length; i++) {
      const id = Number(ids[i]);
      if (!(id >= 0 && id < seen.length)) bad++;
      else if ((seen[id] = (seen[id] ?? 0) + 1) !== 1) dup++;
    }
    rows += b.numRows;
  }
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, rows, verified: dup === 0 && bad === 0 && rows === ds.numRows && seen.every((x) => x === 1) };
}

/** One shuffled `Dataset.files` epoch; every file's sha256 checked after the clock stops. */
async function filesEpoch(ds: Dataset, epoch: number, sums: ReadonlyMap<string, string>): Promise<{ seconds: number; files: number; verified: boolean }> {
  const kept: RecordBatch[] = [];
  const t0 = performance.now();
  for await (const b of ds.batches({ batchSize: FILE_BATCH, epoch, seed: SEED, shuffle: true })) kept.push(b);
  const seconds = (performance.now() - t0) / 1000;
  const seen = new Set<string>();
  let ok = true;
  for (const b of kept) {
    const keys = b.getChild('key');
    const bytes = b.getChild('bytes');
    for (let i = 0; i < b.numRows; i++) {
      const key = String(keys?.get(i));
      const body = bytes?.get(i) as Uint8Array | null | undefined;
      if (seen.has(key) || !body || createHash('sha256').update(body).digest('hex') !== sums.get(key)) ok = false;
      seen.add(key);
    }
  }
  return { seconds, files: seen.size, verified: ok && seen.size === sums.size };
}

export async function loaderRows(o: LoaderRowsOptions): Promise<LoaderRow[]> {
  const { name: profile, note: profileNote } = resolveProfile(o.profile);
  if (profileNote) o.log(profileNote);
  const datasetBytes = o.quick ? 100e6 : 1e9;
  const rowsTotal = Math.round(datasetBytes / (EMBEDDING_BYTES + 40));
  const files = o.quick ? 4 : 16;
  const nFiles = o.quick ? 200 : 2000;
  const root = mkdtempSync(join(o.workDir, 'peers-loader-'));
  const rows: LoaderRow[] = [];
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    const s3 = await startS3rver({ buckets: ['bench'] });
    cleanup.push(() => s3.close());
    const proxy = await startProxyProcess(s3.port, profile);
    cleanup.push(() => proxy.handle.stop());
    const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
    const storeOpts = { endpoint: proxy.url, credentials, timeoutMs: 300_000 };
    const pids = { s3rver: [s3.pid], proxy: [proxy.handle.pid] };

    // The dataset: generated once on local disk (the pure-decode side reads it there), then uploaded.
    const local = new LocalUfs({ fsync: false });
    const localPrefix = `${pathToFileURL(join(root, 'pq')).href}/`;
    const t = performance.now();
    const gen = await generateParquetDataset(local, localPrefix, { rows: rowsTotal, files, rowGroupRows: ROW_GROUP_ROWS, codec: 'none', embeddingBytes: EMBEDDING_BYTES, seed: SEED });
    const writer = new S3Ufs({ endpoint: s3.endpoint, credentials, partSize: 16 * MiB, timeoutMs: 300_000 });
    cleanup.push(() => writer.close());
    for (const f of gen.files) await writer.write(`s3://bench/pq/${f.url.slice(localPrefix.length)}`, await local.read(f.url, 0, (await local.stat(f.url)).size));
    const sums = new Map<string, string>();
    for (let i = 0; i < nFiles; i++) {
      const key = `img-${String(i).padStart(5, '0')}.bin`;
      const body = randomBytes(100 * 1024);
      sums.set(key, createHash('sha256').update(body).digest('hex'));
      await writer.write(`s3://bench/w2/${key}`, body);
    }
    o.log(`peers-loader: ${rowsTotal} rows in ${gen.files.length} Parquet files, ${fmt(gen.bytes / 1e6, 0)} MB, and ${nFiles} × 100 KiB objects, written in ${fmt((performance.now() - t) / 1000)} s (profile ${profile})`);
    const pqMB = gen.bytes / 1e6;
    const note = (s: string): string => [profileNote, s].filter(Boolean).join('; ');

    const ws = await Promise.all([0, 1].map((i) => spawnWorker({ id: `w${i}`, memoryBytes: 2 * 1024 * MiB, ufs: { s3: storeOpts } })));
    cleanup.push(() => Promise.all(ws.map((w) => w.stop())));
    const groups = { ...pids, workers: ws.map((w) => w.pid) };
    const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: { s3: storeOpts } });
    cleanup.push(() => client.close());

    // (a) Parquet: through the cache, straight from the store, pure decode.
    const workload = `Parquet ${fmt(pqMB, 0)} MB, ${rowsTotal} rows, 3 shuffled epochs`;
    const direct = new S3Ufs(storeOpts);
    cleanup.push(() => direct.close());
    const contenders: { contender: string; fs: CacheClient | S3Ufs | LocalUfs; prefix: string; passes: string[]; cache: boolean }[] = [
      { contender: 'granary (Dataset.parquet + CacheClient)', fs: client, prefix: 's3://bench/pq/', passes: ['epoch 1 (cold)', 'epoch 2 (warm)', 'epoch 3 (warm)'], cache: true },
      { contender: 'direct S3 (Dataset.parquet + S3Ufs)', fs: direct, prefix: 's3://bench/pq/', passes: ['epoch 1', 'epoch 2', 'epoch 3'], cache: false },
      { contender: 'pure decode (bytes in the page cache, no network)', fs: local, prefix: localPrefix, passes: ['epoch 1', 'epoch 2', 'epoch 3'], cache: false },
    ];
    // The three side by side, epoch by epoch (granary's cold epoch first), so drift on a
    // shared machine hits them alike; the rows come out grouped by contender.
    const opened: Dataset[] = [];
    const byContender = contenders.map(() => [] as LoaderRow[]);
    try {
      for (const c of contenders) opened.push(await Dataset.parquet(c.prefix, { fs: c.fs, columns: COLUMNS }));
      for (let e = 0; e < 3; e++) {
        for (const [i, c] of contenders.entries()) {
          const ds = opened[i] as Dataset;
          const pass = c.passes[e] as string;
          const w0 = c.cache ? await workerStoreRequests(ws) : {};
          const r0 = (await ds.readStats()).requests;
          const cpu = cpuMeter(c.cache ? groups : pids);
          const r = await parquetEpoch(ds, e);
          const cpuS = cpu();
          const r1 = (await ds.readStats()).requests;
          const reader = { 'reader get': r1.get - r0.get, 'reader stat': r1.stat - r0.stat, 'reader list': r1.list - r0.list };
          const storeRequests = c.fs === local ? {} : { ...diff(c.cache ? await workerStoreRequests(ws) : {}, w0), ...diff(reader, {}) };
          const row: LoaderRow = { workload, contender: c.contender, pass, wallS: r.seconds, rate: r.rows / r.seconds, unit: 'rows/s', verified: r.verified, storeRequests, cpuS, note: note(`${fmt(pqMB / r.seconds, 0)} MB/s`) };
          byContender[i]?.push(row);
          o.log(`${c.contender} ${pass}: ${fmt(r.seconds, 2)} s, ${fmt(row.rate, 0)} rows/s (${fmt(pqMB / r.seconds, 0)} MB/s), verified ${r.verified}, store ${JSON.stringify(storeRequests)}, CPU-s ${JSON.stringify(cpuS)}`);
        }
      }
    } finally {
      for (const ds of opened) await ds.close();
    }
    rows.push(...byContender.flat());

    // (b) W2 through Dataset.files and the cache.
    const fds = await Dataset.files('s3://bench/w2/', { fs: client });
    try {
      for (const [e, pass] of ['epoch 1 (cold)', 'epoch 2 (warm)'].entries()) {
        const w0 = await workerStoreRequests(ws);
        const r0 = (await fds.readStats()).requests;
        const cpu = cpuMeter(groups);
        const r = await filesEpoch(fds, e, sums);
        const cpuS = cpu();
        const r1 = (await fds.readStats()).requests;
        const storeRequests = { ...diff(await workerStoreRequests(ws), w0), ...diff({ 'reader get': r1.get - r0.get, 'reader stat': r1.stat - r0.stat, 'reader list': r1.list - r0.list }, {}) };
        rows.push({ workload: `W2 ${nFiles} × 100 KiB, Dataset.files, 2 shuffled epochs`, contender: 'granary (Dataset.files + CacheClient)', pass, wallS: r.seconds, rate: r.files / r.seconds, unit: 'files/s', verified: r.verified, storeRequests, cpuS, ...(profileNote ? { note: profileNote } : {}) });
        o.log(`Dataset.files ${pass}: ${fmt(r.seconds, 2)} s, ${fmt(r.files / r.seconds, 0)} files/s, verified ${r.verified}, store ${JSON.stringify(storeRequests)}, CPU-s ${JSON.stringify(cpuS)}`);
      }
    } finally {
      await fds.close();
    }
    // Warm epochs (2 and 3) against pure decode's epochs 2 and 3 (its first pays the threads' start and compilation).
    const wall = (prefix: string, passes: readonly string[]): number => rows.filter((r) => r.contender.startsWith(prefix) && passes.includes(r.pass)).reduce((a, r) => a + r.wallS, 0);
    const ratio = wall('pure decode', ['epoch 2', 'epoch 3']) / wall('granary (Dataset.parquet', ['epoch 2 (warm)', 'epoch 3 (warm)']);
    o.log(`warm epochs / pure decode (epochs 2 and 3 of each): ${fmt(ratio, 3)} (target ≥ 0.9: ${ratio >= 0.9 ? 'met' : 'missed'})`);
    const warm = rows.find((r) => r.contender.startsWith('granary (Dataset.parquet') && r.pass === 'epoch 3 (warm)');
    if (warm) warm.note = [warm.note, `epochs 2–3: ${fmt(ratio, 2)}× pure decode's epochs 2–3`].filter(Boolean).join('; ');
  } finally {
    for (const c of cleanup.reverse()) await c().catch((e: unknown) => o.log(`cleanup: ${String(e)}`));
    rmSync(root, { recursive: true, force: true });
  }
  return rows;
}

/** The rows as a markdown table. */
export function loaderRowsTable(rows: readonly LoaderRow[]): string {
  return markdownTable(
    ['workload', 'contender', 'pass', 'wall s', 'rate', 'verified', 'store requests', 'CPU-s', 'note'],
    rows.map((r) => [r.workload, r.contender, r.pass, fmt(r.wallS, 2), `${fmt(r.rate, 0)} ${r.unit}`, r.verified ? 'yes' : '**NO**', Object.entries(r.storeRequests ?? {}).map(([k, v]) => `${k} ${v}`).join(', ') || '0', Object.entries(r.cpuS ?? {}).map(([k, v]) => `${k} ${fmt(v, 2)}`).join(', '), r.note ?? '']),
    ['l', 'l', 'l', 'r', 'r', 'l', 'l', 'l', 'l'],
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, profile: { type: 'string', default: 'sameRegion' } } });
  const rows = await loaderRows({ profile: values.profile, quick: values.quick, workDir: tmpdir(), log: (l) => console.log(l) });
  console.log(`\n${loaderRowsTable(rows)}`);
  if (rows.some((r) => !r.verified)) process.exitCode = 1;
}

/**
 * The engine of `granary demo`: an emulated cloud store, two cache workers, and one
 * training job reading a Parquet dataset, first straight from the store and then for
 * several shuffled epochs through the cache. Everything runs on this machine and
 * starts from nothing: s3rver (npm) in a child process, the fault proxy in front of
 * it, the workers in this process.
 */
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { CacheClient } from '../cache/client.js';
import type { WorkerInfoResponse } from '../cache/worker.js';
import { InvalidArgumentError, UnavailableError, throwIfAborted } from '../errors.js';
import { generateParquetDataset } from '../gen/parquet.js';
import { Dataset } from '../loader/dataset.js';
import { DecodePool } from '../loader/decode-pool.js';
import type { StreamStats } from '../loader/stream.js';
import { PROFILE_NAMES, PROFILES, type FaultProfile, type ProfileName } from '../netem/fault-proxy.js';
import { S3Ufs } from '../ufs/s3.js';
import type { RequestCounts } from '../ufs/types.js';
import { checkInt } from '../util/validate.js';
import { startEmbeddedS3, type EmbeddedS3 } from './embedded-s3.js';
import { startThreadedWorker, type ThreadedWorker } from './threaded-worker.js';
import { SimulatedDevice, trainStep } from './train-step.js';

const MiB = 1024 * 1024;
export const DEMO_BUCKET = 'granary-demo';

export interface DemoOptions {
  /** Approximate dataset size in bytes. */
  sizeBytes: number;
  /** Parquet files. */
  files: number;
  /** Width of the FixedSizeBinary `embedding` column: most of a row's bytes. */
  embeddingBytes: number;
  /** Rows per row group; absent: about 8 MiB row groups, at least two per file. */
  rowGroupRows?: number | undefined;
  /** Epochs read through the cache (the first is cold). */
  epochs: number;
  /** Also read one epoch directly from the store, for comparison. */
  direct: boolean;
  batchSize: number;
  /** Simulated step time per batch, in ms. */
  stepMs: number;
  seed: number;
  /** Cache workers started in this process. */
  workers: number;
  /** Memory tier of each worker; absent: enough for the dataset. */
  workerMemoryBytes?: number | undefined;
  /** Network profile of the emulated store. */
  profile: ProfileName;
  /** etcd endpoints: workers register there and the client watches them. Absent: static membership. */
  etcd?: readonly string[] | undefined;
  /** Cluster name in etcd. @default a fresh `demo-<random>` */
  cluster?: string | undefined;
  /** Partitions prefetched, fetches in flight and decode threads of the loader. */
  prefetch: number;
  fetchConcurrency: number;
  decodeThreads: number;
  /** Directory for the store's files (it must exist or be creatable). */
  storeDir: string;
  signal?: AbortSignal | undefined;
  /** Progress and messages. */
  onEvent?: ((event: DemoEvent) => void) | undefined;
}

export type DemoEvent =
  | { type: 'phase'; phase: string; total: number; unit: string }
  | { type: 'progress'; phase: string; value: number; detail?: string }
  | { type: 'phase-end'; phase: string }
  | { type: 'info'; message: string };

export type EpochKind = 'direct' | 'cold' | 'warm';

export interface EpochResult {
  /** `direct`, `epoch 1`, ... */
  label: string;
  kind: EpochKind;
  /** The loader epoch (the order's seed input); the direct read uses epoch 0, like the cold one. */
  epoch: number;
  seconds: number;
  rows: number;
  batches: number;
  rowsPerSec: number;
  /** Share of page reads the workers answered from their cache; null for the direct read, and for an epoch that read nothing itself (all read ahead at the end of the previous one). */
  cacheHitPct: number | null;
  /** Requests that reached the store (through the network profile) during the epoch. */
  storeRequests: number;
  storeBytes: number;
  /** Share of the epoch's wall time the training loop waited for data. */
  stallPct: number;
  /**
   * The job's utilization: the simulated accelerator's busy time (`stepMs` per batch)
   * over the epoch's wall time (see `SimulatedDevice`: the device idles only while the
   * host has no batch for it, so waiting on data and a host later than a whole step
   * count against it, as they would on a real GPU).
   */
  stepPct: number;
  /** The loader's own per-stage figures. */
  loader: StreamStats;
  /** Reads the client sent straight to the store because no worker answered. */
  fallbacks: number;
  /** Checksum of every value the steps read (the same for every epoch: same rows, other order). */
  checksum: number;
}

export interface DemoResult {
  dataset: { url: string; files: number; rows: number; bytes: number; partitions: number; rowGroupRows: number; generateSeconds: number };
  store: { endpoint: string; profile: ProfileName; settings: FaultProfile; proxy: string };
  membership: 'static' | 'etcd';
  cluster?: string;
  workers: WorkerInfoResponse[];
  epochs: EpochResult[];
  options: { batchSize: number; stepMs: number; seed: number; prefetch: number; fetchConcurrency: number; decodeThreads: number };
  totalSeconds: number;
}

/** Bytes of one generated row: id (8) + score (4) + label (~4 + offset 4) + embedding. */
function rowBytes(embeddingBytes: number): number {
  return embeddingBytes + 20;
}

/** The dataset shape for the options: rows and rows per row group. */
export function datasetShape(o: Pick<DemoOptions, 'sizeBytes' | 'files' | 'embeddingBytes' | 'rowGroupRows'>): { rows: number; rowGroupRows: number } {
  const rows = Math.max(o.files, Math.floor(o.sizeBytes / rowBytes(o.embeddingBytes)));
  const perFile = Math.ceil(rows / o.files);
  const rowGroupRows = o.rowGroupRows ?? Math.max(1, Math.min(Math.floor((8 * MiB) / rowBytes(o.embeddingBytes)), Math.ceil(perFile / 2)));
  return { rows, rowGroupRows };
}

interface Counters {
  requests: number;
  bytes: number;
  hits: number;
  misses: number;
  fallbacks: number;
}

function storeTotal(c: RequestCounts): number {
  return c.list + c.stat + c.get + c.put + c.delete;
}

function sumWorkers(infos: readonly WorkerInfoResponse[]): WorkerInfoResponse['counters'] {
  const out = { hits: 0, misses: 0, storeRequests: 0, bytesServed: 0, bytesFromStore: 0, evictions: 0 };
  for (const i of infos) {
    for (const k of Object.keys(out) as (keyof typeof out)[]) out[k] += i.counters[k];
  }
  return out;
}

/** Run the whole demo and return its measurements. Everything it started is stopped before it returns or throws. */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  checkInt('sizeBytes', o.sizeBytes, 1);
  checkInt('files', o.files, 1, 10_000);
  checkInt('epochs', o.epochs, 1, 100);
  checkInt('workers', o.workers, 1, 64);
  checkInt('batchSize', o.batchSize, 1);
  checkInt('stepMs', o.stepMs, 0, 60_000);
  if (!(o.profile in PROFILES)) throw new InvalidArgumentError(`Unknown network profile \`${o.profile}\` (known: ${PROFILE_NAMES.join(', ')})`);
  const emit = (e: DemoEvent): void => o.onEvent?.(e);
  const signal = o.signal;
  const started = performance.now();
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    await mkdir(o.storeDir, { recursive: true });
    const settings: FaultProfile = { ...PROFILES[o.profile] };
    const s3: EmbeddedS3 = await startEmbeddedS3({ dir: o.storeDir, buckets: [DEMO_BUCKET], profile: settings });
    cleanup.push(() => s3.close());
    emit({ type: 'info', message: `store: s3rver ${s3.endpoint}, seen through the ${o.profile} network profile at ${s3.proxyEndpoint} (child process ${s3.pid}, files in ${o.storeDir})` });
    const s3Options = (endpoint: string) => ({ endpoint, region: 'us-east-1', credentials: s3.credentials, forcePathStyle: true });

    // Generating is setup, not the thing measured: write straight to s3rver, not through the network profile.
    const { rows, rowGroupRows } = datasetShape(o);
    const prefix = `s3://${DEMO_BUCKET}/train/`;
    const writer = new S3Ufs(s3Options(s3.endpoint));
    cleanup.push(() => writer.close());
    emit({ type: 'phase', phase: 'generate', total: o.files, unit: 'files' });
    let t = performance.now();
    const summary = await generateParquetDataset(writer, prefix, {
      rows,
      files: o.files,
      rowGroupRows,
      embeddingBytes: o.embeddingBytes,
      codec: 'snappy',
      seed: o.seed,
      signal,
      onFile: (_f, i) => emit({ type: 'progress', phase: 'generate', value: i + 1 }),
    });
    const generateSeconds = (performance.now() - t) / 1000;
    emit({ type: 'phase-end', phase: 'generate' });

    const pool = new DecodePool({ threads: o.decodeThreads });
    cleanup.push(() => pool.close());
    const store = new S3Ufs(s3Options(s3.proxyEndpoint));
    cleanup.push(() => store.close());
    const batchesOptions = (epoch: number) => ({
      batchSize: o.batchSize,
      epoch,
      seed: o.seed,
      shuffle: true,
      prefetch: o.prefetch,
      fetchConcurrency: o.fetchConcurrency,
      signal,
    });
    const epochs: EpochResult[] = [];
    let partitions = 0;

    const runEpoch = async (
      ds: Dataset,
      label: string,
      kind: EpochKind,
      epoch: number,
      before: () => Counters | Promise<Counters>,
    ): Promise<void> => {
      throwIfAborted(signal);
      const b0 = await before();
      const total = Math.ceil(ds.numRows / o.batchSize);
      emit({ type: 'phase', phase: label, total, unit: 'batches' });
      t = performance.now();
      const stream = ds.batches(batchesOptions(epoch));
      const device = new SimulatedDevice(o.stepMs);
      let checksum = 0;
      let n = 0;
      let rowsSeen = 0;
      for await (const batch of stream) {
        checksum += await trainStep(batch, device, signal);
        rowsSeen += batch.numRows;
        n++;
        if (n % 4 === 0 || n === total) {
          const st = stream.stats();
          const secs = (performance.now() - t) / 1000;
          emit({ type: 'progress', phase: label, value: n, detail: `${Math.round(rowsSeen / secs)} rows/s, data stall ${pct(st.stallMs, secs * 1000).toFixed(0)}%` });
        }
      }
      // The epoch ends when its last step does.
      await device.synchronize(signal);
      const wallMs = performance.now() - t;
      emit({ type: 'phase-end', phase: label });
      const b1 = await before();
      const loader = stream.stats();
      const pages = b1.hits - b0.hits + (b1.misses - b0.misses);
      epochs.push({
        label,
        kind,
        epoch,
        seconds: wallMs / 1000,
        rows: loader.rows,
        batches: loader.batches,
        rowsPerSec: loader.rows / (wallMs / 1000),
        // No page reads in this epoch's window: the loader read all it needed ahead, while
        // the previous epoch ended (the next epoch's first partitions are primed then).
        cacheHitPct: kind === 'direct' || pages === 0 ? null : (100 * (b1.hits - b0.hits)) / pages,
        storeRequests: b1.requests - b0.requests,
        storeBytes: b1.bytes - b0.bytes,
        stallPct: pct(loader.stallMs, wallMs),
        stepPct: pct(device.stats().busyMs, wallMs),
        loader,
        fallbacks: b1.fallbacks - b0.fallbacks,
        checksum,
      });
    };

    if (o.direct) {
      const ds = await Dataset.parquet(prefix, { fs: store, pool, signal });
      partitions = ds.partitions.length;
      // The loader reads in its own thread with its own store client: the dataset sums both.
      await runEpoch(ds, 'direct', 'direct', 0, async () => {
        const c = (await ds.readStats()).requests;
        return { requests: storeTotal(c), bytes: c.bytesRead, hits: 0, misses: 0, fallbacks: 0 };
      });
      await ds.close();
    }

    // Workers: enough memory for the whole dataset, with room for the ring's uneven split.
    const memoryBytes = o.workerMemoryBytes ?? Math.max(64 * MiB, Math.ceil((summary.bytes * 1.5) / o.workers / MiB) * MiB + 64 * MiB);
    const cluster = o.etcd ? (o.cluster ?? `demo-${randomUUID().slice(0, 8)}`) : undefined;
    // Each worker serves pages on its own thread, not on the training loop's event loop (threaded-worker.ts).
    const workers: ThreadedWorker[] = [];
    for (let i = 0; i < o.workers; i++) {
      const w = await startThreadedWorker({
        memoryBytes,
        ufs: { s3: s3Options(s3.proxyEndpoint) },
        ...(o.etcd && cluster ? { etcd: { endpoints: [...o.etcd], cluster, ttlSeconds: 5 } } : {}),
      });
      workers.push(w);
      cleanup.push(() => w.close());
    }
    emit({ type: 'info', message: `${o.workers} cache workers, each in its own thread (${Math.round(memoryBytes / MiB)} MiB memory each): ${workers.map((w) => w.url).join(', ')}${cluster ? ` registered in etcd cluster ${cluster}` : ''}` });
    const client = new CacheClient({
      ...(o.etcd && cluster ? { etcd: { endpoints: [...o.etcd], cluster } } : { workers: workers.map((w) => w.url) }),
      ufs: store,
    });
    cleanup.push(() => client.close());
    await client.ready();
    if (o.etcd) await waitForMembers(client, o.workers, o.etcd, signal);

    const ds = await Dataset.parquet(prefix, { fs: client, pool, signal });
    partitions = ds.partitions.length;
    const cacheCounters = async (): Promise<Counters> => {
      const w = sumWorkers(await Promise.all(workers.map((x) => x.info())));
      const r = await ds.readStats();
      return {
        requests: w.storeRequests + storeTotal(r.requests),
        bytes: w.bytesFromStore + (r.cache?.bytesFromUfs ?? 0),
        hits: w.hits,
        misses: w.misses,
        fallbacks: r.cache?.fallbacks ?? 0,
      };
    };
    for (let e = 0; e < o.epochs; e++) {
      await runEpoch(ds, `epoch ${e + 1}`, e === 0 ? 'cold' : 'warm', e, cacheCounters);
    }
    await ds.close();
    const workerInfos = await Promise.all(workers.map((w) => w.info()));
    return {
      dataset: { url: prefix, files: summary.files.length, rows: summary.rows, bytes: summary.bytes, partitions, rowGroupRows, generateSeconds },
      store: { endpoint: s3.endpoint, profile: o.profile, settings, proxy: s3.proxyEndpoint },
      membership: o.etcd ? 'etcd' : 'static',
      ...(cluster ? { cluster } : {}),
      workers: workerInfos,
      epochs,
      options: { batchSize: o.batchSize, stepMs: o.stepMs, seed: o.seed, prefetch: o.prefetch, fetchConcurrency: o.fetchConcurrency, decodeThreads: o.decodeThreads },
      totalSeconds: (performance.now() - started) / 1000,
    };
  } finally {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
  }
}

function pct(part: number, whole: number): number {
  return whole > 0 ? Math.min(100, (100 * part) / whole) : 0;
}

async function waitForMembers(client: CacheClient, want: number, endpoints: readonly string[], signal: AbortSignal | undefined): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (client.workers().length < want) {
    throwIfAborted(signal);
    if (performance.now() > deadline) {
      throw new UnavailableError(`etcd ${endpoints.join(',')}: only ${client.workers().length} of ${want} demo workers appeared within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

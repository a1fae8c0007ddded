/**
 * The fault matrix's cluster: real etcd, real s3rver behind an HTTP fault proxy (503s,
 * resets mid-body, held requests), N cache workers as child processes each behind a TCP
 * fault proxy (stalls, resets, refused connections), and a generated Parquet dataset.
 * `runEpoch` reads one full shuffled epoch through `Dataset.batches` over `worldSize`
 * ranks, calling the test's hooks after each batch (to inject a fault after batch K);
 * `verifyEpoch` then checks every row exactly once and every value byte-identical to a
 * direct read of the store.
 *
 * @example
 * const c = await startFaultCluster({ workers: 3 });
 * const r = await c.runEpoch({ at: { 4: () => c.workers[1]!.kill() } });
 * verifyEpoch(r, c.reference);
 * await c.close();
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CacheClient, type CacheClientOptions } from '../../src/cache/client.js';
import type { WorkerInfoResponse, WorkerOptions } from '../../src/cache/worker.js';
import { encodeParquetFile } from '../../src/gen/parquet.js';
import { resolveTableOptions } from '../../src/gen/options.js';
import { generateParquetDataset } from '../../src/gen/parquet.js';
import type { DatasetSummary } from '../../src/gen/types.js';
import { Dataset, type BatchesOptions, type DatasetOptions } from '../../src/loader/index.js';
import { startFaultProxy, type FaultProxy } from '../../src/netem/fault-proxy.js';
import { startHttpFaultProxy, type HttpFaultProxy } from '../../src/netem/http-faults.js';
import { S3Ufs } from '../../src/ufs/s3.js';
import type { S3UfsOptions } from '../../src/ufs/s3/options.js';
import { freePort, startEtcd, type EtcdServer } from './etcd.js';
import { startS3rver, type S3rverHandle } from './s3rver.js';
import { spawnWorker, type WorkerProcess } from './workers.js';
import { digestRows, type EpochResult, type Reference } from './fault-verify.js';

export { verifyEpoch, verifyNoMix, describeError, versionOf, type EpochResult, type Reference, type RankResult } from './fault-verify.js';

const KiB = 1024;

export interface FaultClusterOptions {
  /** Cache workers. @default 3 */
  workers?: number;
  /** Rows of the dataset. @default 6000 */
  rows?: number;
  /** Files of the dataset. @default 4 */
  files?: number;
  /** Rows per row group (a partition). @default 250 */
  rowGroupRows?: number;
  /** Generator seed. @default 7 */
  seed?: number;
  /** Worker lease TTL: how long a SIGKILLed worker stays in the ring. @default 10 */
  leaseTtlSeconds?: number;
  /** Extra options of worker `i` (a disk tier, a smaller memory tier). */
  worker?: (index: number) => Partial<WorkerOptions>;
  /**
   * Put an HTTP fault proxy between each worker's TCP proxy and the worker
   * (`FaultWorker.http`), for faults inside worker responses (bytes altered in a body).
   * @default false
   */
  workerHttpFaults?: boolean;
}

/** One worker: a child process behind its own TCP fault proxy, which is the URL it advertises. */
export interface FaultWorker {
  readonly index: number;
  readonly id: string;
  /** The proxy's URL: what clients reach. */
  readonly url: string;
  readonly proxy: FaultProxy;
  /** With `workerHttpFaults`: the HTTP fault proxy behind `proxy`, in front of the worker. */
  readonly http: HttpFaultProxy | undefined;
  /** The process, while it runs. */
  readonly process: WorkerProcess | undefined;
  /** SIGKILL (its lease stays until it expires). */
  kill(): Promise<void>;
  /** SIGTERM (it deregisters). */
  stop(): Promise<void>;
  /** Start it again with the same id, port and options (the same disk directory). */
  restart(): Promise<void>;
  /** Whether the process is still running. */
  alive(): boolean;
  /** `/v1/info`, straight from the worker (not through its proxy). */
  info(): Promise<WorkerInfoResponse>;
}

export interface EpochOptions {
  /** @default 0 */
  epoch?: number;
  /** @default 11 */
  seed?: number;
  /** Ranks, each with its own `CacheClient` and `Dataset`, run concurrently. @default 2 */
  worldSize?: number;
  /** @default 200 */
  batchSize?: number;
  /** Shuffle mode. @default true */
  shuffle?: BatchesOptions['shuffle'];
  /** Options of each rank's client, over `cluster.clientOptions()`. */
  client?: Partial<CacheClientOptions>;
  /** Options of each rank's dataset. @default { decodeThreads: 1, loaderThread: false } */
  dataset?: Partial<DatasetOptions>;
  /** Options of each rank's `batches` call, over the ones above. */
  batches?: Partial<BatchesOptions>;
  /**
   * Faults by global batch count: `at[K]` runs once, awaited, right after the K-th batch
   * of the epoch (over all ranks) was yielded; that rank waits for it, the others go on.
   */
  at?: Record<number, () => unknown>;
  /** Runs after every batch, with the global count and the rank. */
  onBatch?: (k: number, rank: number) => unknown;
}

export interface FaultCluster {
  readonly etcd: EtcdServer;
  readonly s3: S3rverHandle;
  /** The HTTP fault proxy every client and worker reaches the store through. */
  readonly store: HttpFaultProxy;
  readonly workers: FaultWorker[];
  readonly cluster: string;
  readonly dataset: DatasetSummary;
  /** The dataset's prefix URL (`s3://train/ds/`). */
  readonly prefix: string;
  /** S3 options through the store proxy (quick retries). */
  readonly s3Options: S3UfsOptions;
  /** A client of s3rver itself, bypassing every proxy: the truth, and how tests overwrite objects. */
  readonly direct: S3Ufs;
  /** Row digests of a direct read, by id. */
  readonly reference: Reference;
  clientOptions(overrides?: Partial<CacheClientOptions>): CacheClientOptions;
  /** One full epoch over all ranks; never throws for a rank's failure (see `EpochResult.error`). */
  runEpoch(options?: EpochOptions): Promise<EpochResult>;
  /**
   * Overwrite file `index` in the store with rows regenerated from `seed` (same ids,
   * other values); `reference()` of the new version reads it back (kept apart, so the
   * write itself is quick).
   */
  overwrite(index: number, seed: number): Promise<{ url: string; reference: () => Promise<Reference> }>;
  close(): Promise<void>;
}

/** Rows of the dataset at `prefix` read straight from `fs` in file order, as digests. */
export async function readReference(fs: CacheClient | S3Ufs, prefix: string | string[]): Promise<Reference> {
  const ds = await Dataset.parquet(prefix, { fs, decodeThreads: 1, loaderThread: false });
  try {
    const byId = new Map<number, string>();
    for await (const b of ds.batches({ batchSize: 1000, shuffle: false, hints: false })) digestRows(b, byId);
    return byId;
  } finally {
    await ds.close();
  }
}

export async function startFaultCluster(options: FaultClusterOptions = {}): Promise<FaultCluster> {
  const n = options.workers ?? 3;
  const genOptions = { rows: options.rows ?? 6000, files: options.files ?? 4, rowGroupRows: options.rowGroupRows ?? 250, seed: options.seed ?? 7, embeddingBytes: 64, codec: 'snappy' as const };
  const cluster = `faults${Date.now()}${Math.floor(Math.random() * 1e6)}`;
  const cleanup: (() => Promise<unknown>)[] = [];
  const close = async (): Promise<void> => {
    for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
  };
  try {
    const etcd = await startEtcd();
    if (!etcd) throw new Error('etcd is not installed (apt-get install etcd-server)');
    cleanup.push(() => etcd.close());
    const s3 = await startS3rver({ buckets: ['train'] });
    cleanup.push(() => s3.close());
    const store = await startHttpFaultProxy({ target: { host: '127.0.0.1', port: s3.port } });
    cleanup.push(() => store.close());
    const base = { region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } };
    const s3Options: S3UfsOptions = { ...base, endpoint: store.url, retryBaseDelayMs: 10, retryMaxDelayMs: 200, timeoutMs: 10_000 };
    const direct = new S3Ufs({ ...base, endpoint: s3.endpoint });
    cleanup.push(() => direct.close());
    const prefix = 's3://train/ds/';
    const dataset = await generateParquetDataset(direct, prefix, genOptions);
    const reference = await readReference(direct, prefix);

    const workers: FaultWorker[] = [];
    // One at a time: each is a node + tsx process, and booting several at once on a busy
    // two-core machine can take longer than the spawn timeout.
    for (let i = 0; i < n; i++) {
      const w = await startFaultWorker(i, options.workerHttpFaults === true, {
        id: `w${i}`,
        pageSize: 16 * KiB,
        memoryBytes: 64 * 1024 * KiB,
        metadataTtlMs: 60_000,
        ufs: { s3: s3Options },
        etcd: { endpoints: [etcd.endpoint], cluster, ttlSeconds: options.leaseTtlSeconds ?? 10 },
        ...options.worker?.(i),
      });
      cleanup.push(() => w.kill().then(() => Promise.all([w.proxy.close(), w.http?.close()])));
      workers.push(w);
    }

    const clientOptions = (overrides: Partial<CacheClientOptions> = {}): CacheClientOptions => ({
      etcd: { endpoints: [etcd.endpoint], cluster },
      ufs: { s3: s3Options },
      // Every row group spans blocks on several workers.
      blockSize: 32 * KiB,
      requestTimeoutMs: 2000,
      ...overrides,
    });

    const runEpoch = (o: EpochOptions = {}): Promise<EpochResult> => runEpochOn(prefix, clientOptions, o);

    const overwrite = async (index: number, seed: number): Promise<{ url: string; reference: () => Promise<Reference> }> => {
      const file = dataset.files[index];
      if (!file) throw new Error(`no file ${index}`);
      const bytes = encodeParquetFile(resolveTableOptions({ ...genOptions, seed }), index);
      await direct.write(file.url, bytes);
      return { url: file.url, reference: () => readReference(direct, [file.url]) };
    };

    return { etcd, s3, store, workers, cluster, dataset, prefix, s3Options, direct, reference, clientOptions, runEpoch, overwrite, close };
  } catch (err) {
    await close();
    throw err;
  }
}

async function startFaultWorker(index: number, httpFaults: boolean, options: WorkerOptions & { id: string }): Promise<FaultWorker> {
  const port = await freePort();
  const http = httpFaults ? await startHttpFaultProxy({ target: { host: '127.0.0.1', port } }) : undefined;
  const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: http?.port ?? port } });
  const opts: WorkerOptions = { ...options, port, advertiseUrl: proxy.url };
  let proc: WorkerProcess | undefined = await spawnWorker(opts).catch(async (err: unknown) => {
    await proxy.close();
    await http?.close();
    throw err;
  });
  const alive = (): boolean => proc !== undefined && proc.child.exitCode === null && proc.child.signalCode === null;
  return {
    index,
    id: options.id,
    url: proxy.url,
    proxy,
    http,
    get process() {
      return proc;
    },
    async kill() {
      await proc?.kill();
    },
    async stop() {
      await proc?.stop();
    },
    async restart() {
      await proc?.kill();
      proc = await spawnWorker(opts);
    },
    alive,
    async info() {
      const res = await fetch(`http://127.0.0.1:${port}/v1/info`);
      return (await res.json()) as WorkerInfoResponse;
    },
  };
}

async function runEpochOn(prefix: string, clientOptions: (o?: Partial<CacheClientOptions>) => CacheClientOptions, o: EpochOptions): Promise<EpochResult> {
  const worldSize = o.worldSize ?? 2;
  let k = 0;
  const pending = new Map(Object.entries(o.at ?? {}).map(([key, fn]) => [Number(key), fn]));
  const result: EpochResult = { ranks: [], byId: new Map(), duplicates: [], error: undefined, stats: { fallbacks: 0, bytesFromCache: 0, bytesFromUfs: 0, hits: 0, misses: 0 } };
  const runRank = async (rank: number): Promise<void> => {
    const fs = new CacheClient(clientOptions(o.client));
    const r = { rank, batches: 0, rows: 0 };
    result.ranks.push(r);
    let ds: Dataset | undefined;
    try {
      // Membership first: reads made before it is known go straight to the store.
      await fs.ready();
      ds = await Dataset.parquet(prefix, { fs, decodeThreads: 1, loaderThread: false, ...o.dataset });
      const stream = ds.batches({ batchSize: o.batchSize ?? 200, epoch: o.epoch ?? 0, seed: o.seed ?? 11, shuffle: o.shuffle ?? true, rank, worldSize, prefetch: 2, ...o.batches });
      for await (const batch of stream) {
        r.batches++;
        r.rows += batch.numRows;
        result.duplicates.push(...digestRows(batch, result.byId).duplicates);
        k++;
        const fault = pending.get(k);
        if (fault) {
          pending.delete(k);
          await fault();
        }
        await o.onBatch?.(k, rank);
      }
      const s = (await ds.readStats()).cache;
      for (const key of ['fallbacks', 'bytesFromCache', 'bytesFromUfs', 'hits', 'misses'] as const) result.stats[key] += s?.[key] ?? 0;
    } catch (err) {
      result.error ??= err;
    } finally {
      await ds?.close();
      await fs.close();
    }
  };
  await Promise.all(Array.from({ length: worldSize }, (_, rank) => runRank(rank)));
  result.ranks.sort((a, b) => a.rank - b.rank);
  return result;
}

/** A temp directory removed by the returned function. */
export async function tempDir(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

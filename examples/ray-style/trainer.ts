/**
 * One data-parallel trainer, as a Ray Train worker would be: the driver starts it as a
 * child process with its rank and the world size in the environment, it reads its
 * shard of every epoch, runs a simulated step per batch, and reports one JSON line.
 *
 * Environment (set by driver.ts):
 *   GRANARY_RANK, GRANARY_WORLD_SIZE   this trainer's place in its job
 *   GRANARY_TRAINER                    JSON: TrainerConfig below
 */
import type { RecordBatch } from 'apache-arrow';
import { SimulatedDevice } from '../../src/demo/train-step.js';
import { CacheClient, Dataset, S3Ufs, type UnderFileSystem } from '../../src/index.js';

export interface TrainerConfig {
  job: string;
  mode: 'direct' | 'granary';
  dataset: string;
  /** The store as the trainers see it (through the network profile). */
  s3: { endpoint: string; region: string; credentials: { accessKeyId: string; secretAccessKey: string }; forcePathStyle: boolean };
  /** Cache workers (granary mode). */
  workers: string[];
  epochs: number;
  batchSize: number;
  stepMs: number;
  seed: number;
  decodeThreads: number;
}

export interface EpochTimes {
  wallMs: number;
  /** Accelerator busy time. */
  busyMs: number;
  /** Time the training loop waited for the next batch. */
  stallMs: number;
}

export interface TrainerReport {
  job: string;
  mode: 'direct' | 'granary';
  rank: number;
  worldSize: number;
  epochs: number;
  rows: number;
  batches: number;
  /** Sum of the `id` column per epoch: the driver checks every row came once per job. */
  idSums: number[];
  rowsPerEpoch: number[];
  openMs: number;
  /** From the first batch asked for to the end of the last epoch. */
  wallMs: number;
  /** Simulated accelerator busy time: stepMs per batch. */
  stepMs: number;
  /** Time the training loop waited for the next batch. */
  stallMs: number;
  /** Accelerator busy time / wallMs, in %: the device idles only while the trainer has no batch for it. */
  utilizationPct: number;
  /** stallMs / wallMs, in %. */
  dataWaitPct: number;
  /** The same times per epoch: the first one reads a cold cache (granary) or the store (direct), the others a warm cache or the store again. */
  perEpoch: EpochTimes[];
  /** Requests this trainer's own store client sent (direct reads, or the cache client's fallbacks). */
  storeRequests: number;
  storeBytes: number;
  fallbacks: number;
}

function idSum(batch: RecordBatch): number {
  const ids = batch.getChild('id')?.toArray() as BigInt64Array | undefined;
  let s = 0;
  if (ids) for (const v of ids) s += Number(v);
  return s;
}

async function main(): Promise<void> {
  const rank = Number(process.env.GRANARY_RANK);
  const worldSize = Number(process.env.GRANARY_WORLD_SIZE);
  const cfg = JSON.parse(process.env.GRANARY_TRAINER ?? '{}') as TrainerConfig;
  if (!Number.isInteger(rank) || !Number.isInteger(worldSize) || rank < 0 || rank >= worldSize) {
    throw new Error(`GRANARY_RANK=${String(process.env.GRANARY_RANK)} and GRANARY_WORLD_SIZE=${String(process.env.GRANARY_WORLD_SIZE)} must be 0 <= rank < worldSize`);
  }
  const store = new S3Ufs(cfg.s3);
  const client = cfg.mode === 'granary' ? new CacheClient({ workers: cfg.workers, ufs: store }) : undefined;
  const fs: UnderFileSystem = client ?? store;
  let t = performance.now();
  const ds = await Dataset.parquet(cfg.dataset, { fs, decodeThreads: cfg.decodeThreads });
  const openMs = performance.now() - t;

  const idSums: number[] = [];
  const rowsPerEpoch: number[] = [];
  let rows = 0;
  let batches = 0;
  let stallMs = 0;
  // The step runs like a GPU's (see SimulatedDevice): launched asynchronously, one step queued at most.
  const device = new SimulatedDevice(cfg.stepMs);
  t = performance.now();
  const perEpoch: EpochTimes[] = [];
  for (let epoch = 0; epoch < cfg.epochs; epoch++) {
    const e0 = performance.now();
    const busy0 = device.stats().busyMs;
    const stream = ds.batches({ batchSize: cfg.batchSize, epoch, seed: cfg.seed, shuffle: true, rank, worldSize });
    let sum = 0;
    let n = 0;
    for await (const batch of stream) {
      sum += idSum(batch);
      n += batch.numRows;
      batches++;
      await device.step();
    }
    await device.synchronize();
    const epochStallMs = stream.stats().stallMs;
    perEpoch.push({ wallMs: performance.now() - e0, busyMs: device.stats().busyMs - busy0, stallMs: epochStallMs });
    stallMs += epochStallMs;
    idSums.push(sum);
    rowsPerEpoch.push(n);
    rows += n;
  }
  const wallMs = performance.now() - t;
  // Reads run in the dataset's loader thread, on its own copy of the clients: ask the dataset.
  const read = await ds.readStats();
  await ds.close();
  const counts = read.requests;
  const report: TrainerReport = {
    job: cfg.job,
    mode: cfg.mode,
    rank,
    worldSize,
    epochs: cfg.epochs,
    rows,
    batches,
    idSums,
    rowsPerEpoch,
    openMs,
    wallMs,
    stepMs: device.stats().busyMs,
    stallMs,
    utilizationPct: wallMs > 0 ? Math.min(100, (100 * device.stats().busyMs) / wallMs) : 0,
    dataWaitPct: wallMs > 0 ? Math.min(100, (100 * stallMs) / wallMs) : 0,
    perEpoch,
    storeRequests: counts.get + counts.stat + counts.list,
    storeBytes: counts.bytesRead,
    fallbacks: read.cache?.fallbacks ?? 0,
  };
  await client?.close();
  await store.close();
  process.stdout.write(`GRANARY_TRAINER_REPORT ${JSON.stringify(report)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`trainer rank ${String(process.env.GRANARY_RANK)}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

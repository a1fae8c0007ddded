import { setMaxListeners } from 'node:events';
import { availableParallelism } from 'node:os';
import { tableFromIPC, type Schema } from 'apache-arrow';
import PQueue from 'p-queue';
import { ClosedError, InvalidArgumentError, SchemaMismatchError, throwIfAborted } from '../errors.js';
import { planBatchCount, planEpoch, resumeInput, parseResumeState } from '../shuffle/index.js';
import type { EpochPlanInput, ShuffleMode } from '../shuffle/types.js';
import type { FileInfo, UnderFileSystem } from '../ufs/types.js';
import { readArrowFile } from './arrow-file.js';
import { DecodePool } from './decode-pool.js';
import { describeParquet, readParquetFooter, schemaOnlyFooter } from './parquet-footer.js';
import { LoaderHints, isHintTarget, type LoaderHintOptions } from './hints.js';
import { ArrowSource, FilesSource, ParquetSource, checkColumns, pickSchema, readsInDecoder, sourceSpec } from './sources.js';
import { ufsSpecOf } from './portable-fs.js';
import { addReadStats, sourceReadStats, type DatasetReadStats } from './read-stats.js';
import { PipelineStream, type BatchStream, type LoaderState, type PartitionSource } from './stream.js';
import { LoaderThread } from './thread-stream.js';
import { linkedController } from './signals.js';
import { checkInt, optionalInt } from '../util/validate.js';

export interface DatasetOptions {
  /** Where every read goes: a store adapter, the UFS router or a `CacheClient`. */
  fs: UnderFileSystem;
  /**
   * Top-level columns to read, in the order batches hold them.
   * @default every column
   */
  columns?: readonly string[] | undefined;
  /**
   * Threads of the Parquet decode pool.
   * @default max(1, cores - 1)
   */
  decodeThreads?: number | undefined;
  /**
   * A decode pool to share between datasets (Parquet only); the dataset does not close it.
   * @default a pool of its own, ended by `close()`
   */
  pool?: DecodePool | undefined;
  /** Abort opening the dataset (listing, footers). */
  signal?: AbortSignal | undefined;
  /**
   * Run each stream's pipeline (fetch, decode, batch assembly) in a loader thread of the
   * dataset's own, so that a training step that keeps the main thread busy never holds
   * it up; batches reach the main thread ready-made (docs/loader.md). Needs an `fs` that
   * can be rebuilt in a thread (`LocalUfs`, `S3Ufs`, `HttpUfs`, `createUfs`, `CacheClient`
   * without custom adapters or functions in their options); with any other `fs` (an
   * in-memory store, a custom adapter) the pipeline runs on the calling thread.
   * @default true
   */
  loaderThread?: boolean | undefined;
  /**
   * Parquet: each decode thread reads the column chunks of the row group it decodes,
   * through its own copy of `fs`, instead of one thread reading every byte and handing
   * it over. Spreads the read work (HTTP replies from the cache or the store) over the
   * decode threads, which matters once there are many of them (16 cores, 15 decode
   * threads: warm cache 97 % of pure decode instead of 70 %). With one or two decode
   * threads a separate reader adds parallelism instead (2 cores: 80 % instead of 91 %),
   * so `'auto'` turns it on from 4 decode threads. Needs an `fs` that can be rebuilt in a
   * thread (as `loaderThread`); otherwise, or when false, the bytes are read where the
   * pipeline runs.
   * @default 'auto'
   */
  fetchInDecoder?: boolean | 'auto' | undefined;
}

export interface FilesDatasetOptions extends DatasetOptions {
  /**
   * Objects per partition (the unit of fetch and of shuffling).
   * @default 64
   */
  filesPerPartition?: number | undefined;
}

/** One partition: a Parquet row group, an Arrow record batch, or a group of raw files. */
export interface PartitionInfo {
  index: number;
  /** The file it lives in (the first file, for a group of raw files). */
  url: string;
  rows: number;
  /** Bytes a fetch of it reads. */
  bytes: number;
}

export interface BatchesOptions {
  /** Rows per batch (a rank's last batch may be shorter unless `dropLast`). */
  batchSize: number;
  /** @default 0 */
  epoch?: number | undefined;
  /** @default 0 */
  seed?: number | undefined;
  /**
   * `false`/'none': dataset order; `true`/'buffer': seeded partition order with rows mixed
   * across `bufferPartitions` partitions (bounded memory); 'global': a full permutation
   * (holds every partition a rank touches).
   * @default false
   */
  shuffle?: boolean | ShuffleMode | undefined;
  /** @default 4 */
  bufferPartitions?: number | undefined;
  /** @default 0 */
  rank?: number | undefined;
  /** @default 1 */
  worldSize?: number | undefined;
  /**
   * Partitions fetched ahead of the batch being assembled.
   * @default 4
   */
  prefetch?: number | undefined;
  /**
   * Most fetched bytes held (in flight or not yet freed) at once, beyond the partitions the current batch needs.
   * @default 268435456 (256 MiB)
   */
  prefetchBytes?: number | undefined;
  /**
   * Concurrent partition fetches.
   * @default 4
   */
  fetchConcurrency?: number | undefined;
  /** Parquet decode threads; replaces the dataset's pool size when no stream is running. */
  decodeThreads?: number | undefined;
  /** @default false */
  dropLast?: boolean | undefined;
  /** A `stream.state()` saved earlier: yields exactly the batches that run had not yet yielded. */
  resume?: LoaderState | undefined;
  /**
   * Send the cache workers this epoch's reads ahead of time, so they prefetch them and
   * keep what is still to be read (docs/hints.md). Needs `fs` to take hints (a
   * `CacheClient`); ignored otherwise. Never changes what is yielded.
   * @default true
   */
  hints?: boolean | LoaderHintOptions | undefined;
  signal?: AbortSignal | undefined;
}

const DEFAULT_PREFETCH_BYTES = 256 * 1024 * 1024;
/**
 * Finished batches the loader thread may hold for the consumer beyond the one it is
 * training on, and the bytes they may hold together (one batch always goes). The queue
 * is what carries a training step over the loader's bursts: a partition's decode landing
 * on the thread's core, a GC, the OS giving the core to another process. With an
 * asynchronous step of 1.2x the loader's own pace, 32 batches stalled half as often as 8
 * (bench/NOTES.md, "Data stall with an asynchronous step").
 */
const READY_BATCHES = 32;
const READY_BYTES = 64 * 1024 * 1024;

/**
 * Run the opening of a dataset (listing, footers, the schema) under a signal of its own:
 * the caller's abort rejects with `signal.reason`, and the first failure stops the reads
 * still queued or running.
 */
async function opening<T>(signal: AbortSignal | undefined, open: (signal: AbortSignal) => Promise<T>): Promise<T> {
  throwIfAborted(signal);
  const { controller, dispose } = linkedController(signal);
  // Every queued footer read listens on it (a dataset may have thousands of files).
  setMaxListeners(0, controller.signal);
  try {
    return await open(controller.signal);
  } catch (err) {
    const reason: unknown = signal?.aborted ? signal.reason : err;
    controller.abort(reason);
    throw reason;
  } finally {
    dispose();
  }
}

/** Options of a call that only reads: `ds.readStats()`. */
export interface ReadStatsOptions {
  /** Abort the call: it rejects with `signal.reason`. */
  signal?: AbortSignal | undefined;
}

/** Files of a source: a prefix URL (listed, recursively; names starting with `_` or `.` skipped) or a list of URLs. */
async function resolveFiles(fs: UnderFileSystem, source: string | readonly string[], signal?: AbortSignal): Promise<{ files: FileInfo[]; prefix: string | undefined }> {
  if (typeof source === 'string') {
    const files: FileInfo[] = [];
    for await (const f of fs.list(source, { signal })) {
      const base = f.url.slice(f.url.lastIndexOf('/') + 1);
      if (base.startsWith('_') || base.startsWith('.')) continue;
      files.push(f);
    }
    return { files, prefix: source };
  }
  const q = new PQueue({ concurrency: 8 });
  const files = await Promise.all(source.map((u) => q.add(() => fs.stat(u, { signal }), { signal })));
  return { files, prefix: undefined };
}

/**
 * A dataset of Parquet, Arrow IPC or raw files behind any `UnderFileSystem`, read as
 * a stream of apache-arrow RecordBatches. See docs/loader.md.
 *
 * @example
 * const ds = await Dataset.parquet('s3://bucket/train/', { fs, columns: ['id', 'x'] });
 * for await (const batch of ds.batches({ batchSize: 1024, epoch, seed: 42, shuffle: true, rank, worldSize })) train(batch);
 * await ds.close();
 */
export class Dataset {
  readonly #source: PartitionSource;
  readonly #partitions: PartitionInfo[];
  #pool: DecodePool | undefined;
  #threads: number | undefined;
  readonly #streams = new Set<BatchStream>();
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Pools of an earlier `decodeThreads`, still ending: `close()` waits for them. */
  readonly #retiring = new Set<Promise<void>>();
  readonly #sharedPool: boolean;
  /** Undefined when streams run on the calling thread; created on the first `batches()`. */
  #thread: LoaderThread | undefined | false;
  readonly #wantThread: boolean;

  private constructor(
    source: PartitionSource,
    partitions: PartitionInfo[],
    pool: DecodePool | undefined,
    threads: number | undefined,
    sharedPool: boolean,
    loaderThread: boolean | undefined,
  ) {
    this.#wantThread = loaderThread !== false;
    this.#sharedPool = sharedPool;
    this.#source = source;
    this.#partitions = partitions;
    this.#pool = pool;
    this.#threads = threads;
  }

  /** Parquet files under a prefix URL, or a list of URLs: partitions are row groups. */
  static async parquet(source: string | readonly string[], options: DatasetOptions): Promise<Dataset> {
    return opening(options.signal, (signal) => Dataset.#openParquet(source, options, signal));
  }

  static async #openParquet(source: string | readonly string[], options: DatasetOptions, signal: AbortSignal): Promise<Dataset> {
    const { fs, columns } = options;
    const { files } = await resolveFiles(fs, source, signal);
    const q = new PQueue({ concurrency: 8 });
    const metas = await Promise.all(
      files.map((info) =>
        q.add(
          async () => {
            const { meta, metaLength } = await readParquetFooter(fs, info, signal);
            return describeParquet(info, meta, metaLength, columns);
          },
          { signal },
        ),
      ),
    );
    const first = metas[0];
    if (first) {
      const cols = columns ?? first.columns;
      for (const m of metas.slice(1)) {
        for (const c of cols) {
          const a = first.columnSignatures.get(c);
          const b = m.columnSignatures.get(c);
          if (a !== b) {
            throw new SchemaMismatchError(
              `Schema of ${m.url} disagrees with ${first.url} on column "${c}": ${b ?? 'missing'} vs ${a ?? 'missing'}`,
              { url: m.url },
            );
          }
        }
      }
    }
    const threads = options.decodeThreads;
    const shared = options.pool;
    const fetchInDecoder = resolveFetchInDecoder(options.fetchInDecoder, shared?.threads ?? threads);
    let holder: Dataset | undefined = undefined;
    const src = new ParquetSource(fs, metas, columns, () => (holder as Dataset).#getPool(), fetchInDecoder);
    const pool = shared ?? new DecodePool({ threads, threadsRead: readsInDecoder(src) });
    try {
      if (first) {
        const ipc = await pool.decode(
          { kind: 'parquet', url: first.url, size: first.size, footer: schemaOnlyFooter(first), pieces: [], numRows: 0, schemaOnly: true },
          [],
          { signal },
        );
        const schema = tableFromIPC(ipc).schema;
        src.schema = pickSchema(schema, columns);
      }
    } catch (err) {
      if (!shared) await pool.close();
      throw err;
    }
    const partitions = src.parts.map((p, index) => ({ index, url: p.file.url, rows: p.rows, bytes: p.bytes }));
    holder = new Dataset(src, partitions, pool, threads, shared !== undefined, options.loaderThread);
    return holder;
  }

  /** Arrow IPC files (the file format, with a footer): partitions are record batches. */
  static async arrow(source: string | readonly string[], options: DatasetOptions): Promise<Dataset> {
    return opening(options.signal, (signal) => Dataset.#openArrow(source, options, signal));
  }

  static async #openArrow(source: string | readonly string[], options: DatasetOptions, signal: AbortSignal): Promise<Dataset> {
    const { fs, columns } = options;
    const { files } = await resolveFiles(fs, source, signal);
    const q = new PQueue({ concurrency: 8 });
    const metas = await Promise.all(files.map((f) => q.add(() => readArrowFile(fs, f, signal), { signal })));
    const first = metas[0];
    for (const m of metas) checkColumns(m.url, m.schema.fields.map((f) => f.name), columns);
    if (first) {
      const sig = (s: Schema, c: string): string => {
        const f = s.fields.find((x) => x.name === c);
        return f ? `${(f.type as { toString(): string }).toString()}${f.nullable ? '?' : ''}` : 'missing';
      };
      const cols = columns ?? first.schema.fields.map((f) => f.name);
      for (const m of metas.slice(1)) {
        for (const c of cols) {
          if (sig(first.schema, c) !== sig(m.schema, c)) {
            throw new SchemaMismatchError(
              `Schema of ${m.url} disagrees with ${first.url} on column "${c}": ${sig(m.schema, c)} vs ${sig(first.schema, c)}`,
              { url: m.url },
            );
          }
        }
      }
    }
    const src = new ArrowSource(fs, metas, columns);
    const partitions = src.parts.map((p, index) => ({ index, url: p.file.url, rows: p.rows, bytes: p.bytes }));
    return new Dataset(src, partitions, undefined, undefined, false, options.loaderThread);
  }

  /**
   * Raw objects (images, audio, documents): one row per object, `{ key: Utf8, bytes: Binary }`,
   * where `key` is the URL relative to the prefix (the full URL for a list of URLs).
   */
  static async files(source: string | readonly string[], options: FilesDatasetOptions): Promise<Dataset> {
    const per = optionalInt('filesPerPartition', options.filesPerPartition, 64, 1);
    const { files, prefix } = await opening(options.signal, (signal) => resolveFiles(options.fs, source, signal));
    const src = new FilesSource(options.fs, files, prefix, per, options.columns);
    const partitions = src.groups.map((g, index) => ({ index, url: g.files[0]?.url ?? '', rows: g.files.length, bytes: g.bytes }));
    return new Dataset(src, partitions, undefined, undefined, false, options.loaderThread);
  }

  get numRows(): number {
    return this.#source.partitionRows.reduce((a, b) => a + b, 0);
  }

  get partitions(): readonly PartitionInfo[] {
    return this.#partitions;
  }

  get schema(): Schema {
    return this.#source.schema;
  }

  /** Whether streams run in a loader thread (see `DatasetOptions.loaderThread`). */
  get loaderThread(): boolean {
    return this.#loaderThread() !== undefined;
  }

  #loaderThread(): LoaderThread | undefined {
    if (this.#thread === undefined) {
      const fs = this.#wantThread ? ufsSpecOf(this.#source.fs) : undefined;
      const source = fs ? sourceSpec(this.#source) : undefined;
      this.#thread = fs && source ? new LoaderThread({ fs, source, decodeThreads: this.#threads ?? this.#pool?.threads, decodeTimeoutMs: this.#pool?.timeoutMs }) : false;
    }
    return this.#thread || undefined;
  }

  #getPool(): DecodePool {
    if (this.#closed) throw new ClosedError('Dataset is closed');
    this.#pool ??= new DecodePool({ threads: this.#threads, threadsRead: readsInDecoder(this.#source) });
    return this.#pool;
  }

  /** One epoch's batches for one rank. See docs/loader.md for the ordering and sharding semantics. */
  batches(options: BatchesOptions): BatchStream {
    if (this.#closed) throw new ClosedError('Dataset is closed');
    const batchSize = checkInt('batchSize', options.batchSize, 1);
    const worldSize = checkInt('worldSize', options.worldSize ?? 1, 1);
    const rank = checkInt('rank', options.rank ?? 0, 0);
    if (rank >= worldSize) throw new InvalidArgumentError(`Expected \`rank\` below worldSize ${worldSize}, got ${rank}`);
    const prefetch = checkInt('prefetch', options.prefetch ?? 4, 0);
    const prefetchBytes = checkInt('prefetchBytes', options.prefetchBytes ?? DEFAULT_PREFETCH_BYTES, 1);
    const fetchConcurrency = checkInt('fetchConcurrency', options.fetchConcurrency ?? 4, 1);
    const dropLast = options.dropLast ?? false;
    if (options.decodeThreads !== undefined) {
      checkInt('decodeThreads', options.decodeThreads, 1);
      if (options.decodeThreads !== this.#threads && this.#streams.size === 0 && this.#pool && !this.#sharedPool) {
        const old = this.#pool;
        this.#pool = undefined;
        const gone: Promise<void> = old.close().then(() => {
          this.#retiring.delete(gone);
        });
        this.#retiring.add(gone);
      }
      this.#threads = options.decodeThreads;
      if (this.#thread) this.#thread.setDecodeThreads(options.decodeThreads);
    }
    const partitionRows = this.#source.partitionRows;
    let input: EpochPlanInput;
    if (options.resume !== undefined) {
      const state = parseResumeState(options.resume);
      input = resumeInput(state, { partitionRows, rank, worldSize, batchSize, dropLast });
    } else {
      const shuffle = options.shuffle ?? false;
      const mode: ShuffleMode = shuffle === true ? 'buffer' : shuffle === false ? 'none' : shuffle;
      if (mode !== 'none' && mode !== 'buffer' && mode !== 'global') {
        throw new InvalidArgumentError(`Expected \`shuffle\` to be a boolean, 'none', 'buffer' or 'global', got ${JSON.stringify(shuffle)}`);
      }
      input = {
        partitionRows,
        seed: checkInt('seed', options.seed ?? 0, 0),
        epoch: checkInt('epoch', options.epoch ?? 0, 0),
        rank,
        worldSize,
        batchSize,
        mode,
        bufferPartitions: options.bufferPartitions,
        dropLast,
      };
    }
    const thread = this.#loaderThread();
    if (thread) {
      // The thread plans and runs the epoch; here only mode 'none' needs the plan (to
      // slice the partitions it receives), the others only the batch count.
      const plan = input.mode === 'none' ? planEpoch(input) : undefined;
      const stream: BatchStream = thread.stream(this.#source.schema, {
        input,
        plan,
        numBatches: plan ? plan.numBatches : planBatchCount(input),
        prefetch,
        prefetchBytes,
        fetchConcurrency,
        ahead: READY_BATCHES,
        aheadBytes: READY_BYTES,
        hints: options.hints === false ? false : options.hints === true || options.hints === undefined ? {} : options.hints,
        signal: options.signal,
        onEnd: () => this.#streams.delete(stream),
      });
      this.#streams.add(stream);
      return stream;
    }
    const plan = planEpoch(input);
    let hints: LoaderHints | undefined;
    const src = this.#source;
    if (options.hints !== false && isHintTarget(src.fs) && src.ranges !== undefined) {
      hints = new LoaderHints(src.fs, plan.partitionOrder, (p) => src.ranges?.(p) ?? [], options.hints === true || options.hints === undefined ? {} : options.hints);
    }
    const stream: BatchStream = new PipelineStream(this.#source, {
      hints,
      plan,
      input,
      prefetch,
      prefetchBytes,
      fetchConcurrency,
      signal: options.signal,
      onEnd: () => this.#streams.delete(stream),
    });
    this.#streams.add(stream);
    return stream;
  }

  /**
   * What the dataset's store clients did so far: `fs` itself (opening the dataset, and
   * every read when streams run on this thread) plus the loader thread's copy of it.
   * Rejects with `GRANARY_ERR_CLOSED` once the dataset is closed.
   */
  async readStats(options: ReadStatsOptions = {}): Promise<DatasetReadStats> {
    if (this.#closed) throw new ClosedError('Dataset is closed');
    throwIfAborted(options.signal);
    const own = sourceReadStats(this.#source);
    const thread = this.#thread ? await this.#thread.readStats({ signal: options.signal }) : undefined;
    return thread ? addReadStats(own, thread) : own;
  }

  /**
   * Close every running stream (a waiting `next()`, and any later one, rejects with
   * `GRANARY_ERR_CLOSED`), then end the loader thread and the decode pool (unless it was
   * given as `pool`). Resolves once their threads have exited. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown(new ClosedError('Dataset is closed'), true);
    return this.#closing;
  }

  /**
   * Stop at once: running streams and calls in flight reject with `err`
   * (`GRANARY_ERR_CLOSED` by default), the loader thread is ended without a goodbye.
   * Resolves once every thread has exited. After `close()` it only waits for that.
   */
  destroy(err?: unknown): Promise<void> {
    this.#closing ??= this.#shutdown(err ?? new ClosedError('Dataset was destroyed'), false);
    return this.#closing;
  }

  async #shutdown(reason: unknown, graceful: boolean): Promise<void> {
    this.#closed = true;
    // Streams first (synchronously, they stop asking the pool and the thread), then what they ran on.
    const streams = [...this.#streams].map((s) => s.destroy(reason));
    this.#streams.clear();
    const pool = this.#sharedPool ? undefined : this.#pool;
    this.#pool = undefined;
    const thread = this.#thread;
    this.#thread = false;
    await Promise.all([
      ...streams,
      ...this.#retiring,
      graceful ? pool?.close() : pool?.destroy(reason),
      thread ? (graceful ? thread.close() : thread.destroy(reason)) : undefined,
    ]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Decode threads from which `fetchInDecoder: 'auto'` reads in the decode threads. */
const FETCH_IN_DECODER_MIN_THREADS = 4;

function resolveFetchInDecoder(option: boolean | 'auto' | undefined, threads: number | undefined): boolean {
  if (option === undefined || option === 'auto') return (threads ?? Math.max(1, availableParallelism() - 1)) >= FETCH_IN_DECODER_MIN_THREADS;
  if (typeof option !== 'boolean') throw new InvalidArgumentError(`Expected \`fetchInDecoder\` to be true, false or 'auto', got ${JSON.stringify(option)}`);
  return option;
}

import { Binary, Field, RecordBatch, Schema, Struct, Utf8, makeData, tableFromIPC } from 'apache-arrow';
import type { Data } from 'apache-arrow';
import PQueue from 'p-queue';
import {
  ClosedError,
  CorruptDataError,
  DecodeError,
  InvalidArgumentError,
  SchemaMismatchError,
  UnknownColumnError,
  throwIfAborted,
} from '../errors.js';
import { planEpoch, resumeInput, parseResumeState } from '../shuffle/index.js';
import type { EpochPlanInput, ShuffleMode } from '../shuffle/types.js';
import type { FileInfo, UnderFileSystem } from '../ufs/types.js';
import { readArrowFile, type ArrowFileMeta } from './arrow-file.js';
import { DecodePool } from './decode-pool.js';
import type { Piece } from './decode-parquet.js';
import { describeParquet, readParquetFooter, rowGroupFooter, schemaOnlyFooter, type ParquetFileMeta } from './parquet-footer.js';
import { LoaderHints, isHintTarget, type HintRange, type LoaderHintOptions } from './hints.js';
import { BatchStream, type LoaderState, type PartitionSource } from './stream.js';

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

function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new InvalidArgumentError(`Expected \`${name}\` to be an integer from ${min} and up, got \`${String(v)}\` (${typeof v})`);
  }
  return v;
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

function checkColumns(url: string, available: readonly string[], wanted: readonly string[] | undefined): void {
  for (const c of wanted ?? []) {
    if (!available.includes(c)) {
      throw new UnknownColumnError(`Unknown column "${c}" in ${url}; available columns: ${available.join(', ')}`, { url });
    }
  }
}

/** Fields of `schema` in the order of `columns` (arrow's `select` keeps schema order). */
function pickSchema(schema: Schema, columns: readonly string[] | undefined): Schema {
  if (!columns) return schema;
  return new Schema(columns.map((c) => schema.fields.find((f) => f.name === c) as Field), schema.metadata);
}

function selectColumns(batches: RecordBatch[], columns: readonly string[] | undefined): RecordBatch[] {
  if (!columns) return batches;
  return batches.map((b) => {
    const schema = pickSchema(b.schema, columns);
    const children = columns.map((c) => b.data.children[b.schema.fields.findIndex((f) => f.name === c)] as Data);
    return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: b.numRows, nullCount: 0, children }));
  });
}

class ParquetSource implements PartitionSource {
  schema: Schema = new Schema([]);
  readonly partitionRows: number[] = [];
  readonly parts: { file: ParquetFileMeta; rowGroup: number; rows: number; bytes: number }[] = [];

  constructor(
    readonly fs: UnderFileSystem,
    readonly files: ParquetFileMeta[],
    readonly columns: readonly string[] | undefined,
    readonly pool: () => DecodePool,
  ) {
    for (const file of files) {
      for (const rg of file.rowGroups) {
        if (rg.numRows === 0) continue;
        this.parts.push({ file, rowGroup: rg.index, rows: rg.numRows, bytes: rg.bytes });
        this.partitionRows.push(rg.numRows);
      }
    }
  }

  partitionBytes(p: number): number {
    return this.parts[p]?.bytes ?? 0;
  }

  ranges(p: number): HintRange[] {
    const part = this.parts[p];
    if (!part) throw new InvalidArgumentError(`No partition ${p}`);
    const { file } = part;
    const rg = file.rowGroups[part.rowGroup];
    if (!rg) throw new InvalidArgumentError(`No row group ${part.rowGroup} in ${file.url}`);
    // Coalesce chunks that touch: one request instead of several.
    const merged: HintRange[] = [];
    for (const r of [...rg.ranges].sort((a, b) => a.offset - b.offset)) {
      const last = merged[merged.length - 1];
      if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.offset + r.length - last.offset);
      else merged.push({ url: file.url, etag: file.etag, offset: r.offset, length: r.length });
    }
    return merged;
  }

  async fetch(p: number, signal: AbortSignal): Promise<unknown> {
    return Promise.all(
      this.ranges(p).map(async (r): Promise<Piece> => ({ offset: r.offset, bytes: await this.fs.read(r.url, r.offset, r.length, { etag: r.etag, signal }) })),
    );
  }

  async decode(p: number, fetched: unknown, signal: AbortSignal): Promise<RecordBatch[]> {
    const part = this.parts[p];
    if (!part) throw new InvalidArgumentError(`No partition ${p}`);
    const pieces = (fetched as Piece[]).map((x) => ({ offset: x.offset, bytes: ownedBytes(x.bytes) }));
    const ipc = await this.pool().decode(
      {
        kind: 'parquet',
        url: part.file.url,
        size: part.file.size,
        footer: rowGroupFooter(part.file, part.rowGroup),
        pieces,
        columns: this.columns ? [...this.columns] : undefined,
        numRows: part.rows,
      },
      pieces.map((x) => x.bytes.buffer as ArrayBuffer),
      signal,
    );
    const table = tableFromIPC(ipc);
    if (table.numRows !== part.rows) {
      throw new CorruptDataError(
        `Row group ${part.rowGroup} of ${part.file.url} decoded to ${table.numRows} rows, its footer says ${part.rows}`,
        { url: part.file.url },
      );
    }
    return selectColumns(table.batches, this.columns);
  }
}

/** A buffer we may transfer to a worker: the view must own its whole ArrayBuffer (never a pooled Buffer slab). */
function ownedBytes(u8: Uint8Array): Uint8Array {
  const b = u8.buffer;
  if (b instanceof ArrayBuffer && u8.byteOffset === 0 && u8.byteLength === b.byteLength) return u8;
  return u8.slice();
}

class ArrowSource implements PartitionSource {
  readonly schema: Schema;
  readonly partitionRows: number[] = [];
  readonly parts: { file: ArrowFileMeta; block: number; rows: number; bytes: number }[] = [];

  constructor(
    readonly fs: UnderFileSystem,
    files: ArrowFileMeta[],
    readonly columns: readonly string[] | undefined,
  ) {
    const first = files[0];
    this.schema = first ? pickSchema(first.schema, columns) : new Schema([]);
    for (const file of files) {
      file.batches.forEach((b, block) => {
        if (b.rows === 0) return;
        this.parts.push({ file, block, rows: b.rows, bytes: b.metaDataLength + b.bodyLength });
        this.partitionRows.push(b.rows);
      });
    }
  }

  partitionBytes(p: number): number {
    return this.parts[p]?.bytes ?? 0;
  }

  ranges(p: number): HintRange[] {
    const part = this.parts[p] as (typeof this.parts)[number];
    const b = part.file.batches[part.block] as ArrowFileMeta['batches'][number];
    return [{ url: part.file.url, etag: part.file.etag, offset: b.offset, length: b.metaDataLength + b.bodyLength }];
  }

  async fetch(p: number, signal: AbortSignal): Promise<unknown> {
    const part = this.parts[p] as (typeof this.parts)[number];
    const b = part.file.batches[part.block] as ArrowFileMeta['batches'][number];
    return this.fs.read(part.file.url, b.offset, b.metaDataLength + b.bodyLength, { etag: part.file.etag, signal });
  }

  async decode(p: number, fetched: unknown, signal: AbortSignal): Promise<RecordBatch[]> {
    throwIfAborted(signal);
    const part = this.parts[p] as (typeof this.parts)[number];
    const { file } = part;
    const eos = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    const bytes = Buffer.concat([file.schemaMessage, ...file.dictionaries, fetched as Uint8Array, eos]);
    let batches: RecordBatch[];
    try {
      batches = tableFromIPC(bytes).batches;
    } catch (err) {
      throw new DecodeError(`Cannot decode record batch ${part.block} of ${file.url}: ${(err as Error).message}`, { url: file.url, cause: err });
    }
    const rows = batches.reduce((a, b) => a + b.numRows, 0);
    if (rows !== part.rows) {
      throw new CorruptDataError(`Record batch ${part.block} of ${file.url} decoded to ${rows} rows, its metadata says ${part.rows}`, { url: file.url });
    }
    return selectColumns(batches, this.columns);
  }
}

class FilesSource implements PartitionSource {
  readonly schema: Schema;
  readonly partitionRows: number[] = [];
  readonly groups: { files: FileInfo[]; keys: string[]; bytes: number }[] = [];
  readonly #withBytes: boolean;

  constructor(
    readonly fs: UnderFileSystem,
    files: FileInfo[],
    prefix: string | undefined,
    perPartition: number,
    columns: readonly string[] | undefined,
  ) {
    const all = [new Field('key', new Utf8(), false), new Field('bytes', new Binary(), false)];
    const cols = columns ?? ['key', 'bytes'];
    checkColumns(prefix ?? files[0]?.url ?? '(no files)', ['key', 'bytes'], cols);
    this.schema = new Schema(cols.map((c) => all.find((f) => f.name === c) as Field));
    this.#withBytes = cols.includes('bytes');
    for (let i = 0; i < files.length; i += perPartition) {
      const group = files.slice(i, i + perPartition);
      const keys = group.map((f) => (prefix !== undefined && f.url.startsWith(prefix) ? f.url.slice(prefix.length) : f.url));
      this.groups.push({ files: group, keys, bytes: this.#withBytes ? group.reduce((a, f) => a + f.size, 0) : 0 });
      this.partitionRows.push(group.length);
    }
  }

  partitionBytes(p: number): number {
    return this.groups[p]?.bytes ?? 0;
  }

  ranges(p: number): HintRange[] {
    const g = this.groups[p] as (typeof this.groups)[number];
    if (!this.#withBytes) return [];
    return g.files.map((f) => ({ url: f.url, etag: f.etag, offset: 0, length: f.size }));
  }

  async fetch(p: number, signal: AbortSignal): Promise<unknown> {
    const g = this.groups[p] as (typeof this.groups)[number];
    if (!this.#withBytes) return [];
    return Promise.all(g.files.map((f) => this.fs.read(f.url, 0, f.size, { etag: f.etag, signal })));
  }

  async decode(p: number, fetched: unknown): Promise<RecordBatch[]> {
    const g = this.groups[p] as (typeof this.groups)[number];
    const children = this.schema.fields.map((f) => {
      const values = f.name === 'key' ? g.keys.map((k) => Buffer.from(k)) : (fetched as Uint8Array[]);
      const offsets = new Int32Array(values.length + 1);
      let n = 0;
      values.forEach((v, i) => {
        n += v.byteLength;
        offsets[i + 1] = n;
      });
      return makeData({ type: f.type as Utf8 | Binary, length: values.length, nullCount: 0, valueOffsets: offsets, data: Buffer.concat(values) } as never);
    });
    const data = makeData({ type: new Struct(this.schema.fields), length: g.files.length, nullCount: 0, children: children as never });
    return [new RecordBatch(this.schema, data)];
  }
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
  readonly #sharedPool: boolean;

  private constructor(source: PartitionSource, partitions: PartitionInfo[], pool: DecodePool | undefined, threads: number | undefined, sharedPool = false) {
    this.#sharedPool = sharedPool;
    this.#source = source;
    this.#partitions = partitions;
    this.#pool = pool;
    this.#threads = threads;
  }

  /** Parquet files under a prefix URL, or a list of URLs: partitions are row groups. */
  static async parquet(source: string | readonly string[], options: DatasetOptions): Promise<Dataset> {
    const { fs, columns, signal } = options;
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
    const pool = shared ?? new DecodePool({ threads });
    let holder: Dataset | undefined = undefined;
    const src = new ParquetSource(fs, metas, columns, () => (holder as Dataset).#getPool());
    try {
      if (first) {
        const ipc = await pool.decode(
          { kind: 'parquet', url: first.url, size: first.size, footer: schemaOnlyFooter(first), pieces: [], numRows: 0, schemaOnly: true },
          [],
          signal,
        );
        const schema = tableFromIPC(ipc).schema;
        src.schema = pickSchema(schema, columns);
      }
    } catch (err) {
      if (!shared) await pool.close();
      throw err;
    }
    const partitions = src.parts.map((p, index) => ({ index, url: p.file.url, rows: p.rows, bytes: p.bytes }));
    holder = new Dataset(src, partitions, pool, threads, shared !== undefined);
    return holder;
  }

  /** Arrow IPC files (the file format, with a footer): partitions are record batches. */
  static async arrow(source: string | readonly string[], options: DatasetOptions): Promise<Dataset> {
    const { fs, columns, signal } = options;
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
    return new Dataset(src, partitions, undefined, undefined);
  }

  /**
   * Raw objects (images, audio, documents): one row per object, `{ key: Utf8, bytes: Binary }`,
   * where `key` is the URL relative to the prefix (the full URL for a list of URLs).
   */
  static async files(source: string | readonly string[], options: FilesDatasetOptions): Promise<Dataset> {
    const per = checkInt('filesPerPartition', options.filesPerPartition ?? 64, 1);
    const { files, prefix } = await resolveFiles(options.fs, source, options.signal);
    const src = new FilesSource(options.fs, files, prefix, per, options.columns);
    const partitions = src.groups.map((g, index) => ({ index, url: g.files[0]?.url ?? '', rows: g.files.length, bytes: g.bytes }));
    return new Dataset(src, partitions, undefined, undefined);
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

  #getPool(): DecodePool {
    if (this.#closed) throw new ClosedError('Dataset is closed');
    this.#pool ??= new DecodePool({ threads: this.#threads });
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
        void old.close();
      }
      this.#threads = options.decodeThreads;
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
    const plan = planEpoch(input);
    let hints: LoaderHints | undefined;
    const src = this.#source;
    if (options.hints !== false && isHintTarget(src.fs) && src.ranges !== undefined) {
      hints = new LoaderHints(src.fs, plan.partitionOrder, (p) => src.ranges?.(p) ?? [], options.hints === true || options.hints === undefined ? {} : options.hints);
    }
    const stream: BatchStream = new BatchStream(this.#source, {
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

  /** Cancel running streams and end the decode pool. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#streams) s.cancel(new ClosedError('Dataset closed'));
    this.#streams.clear();
    const pool = this.#pool;
    this.#pool = undefined;
    if (!this.#sharedPool) await pool?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

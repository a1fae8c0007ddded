import { Binary, Field, RecordBatch, Schema, Struct, Utf8, makeData, tableFromIPC } from 'apache-arrow';
import type { Data } from 'apache-arrow';
import { CorruptDataError, DecodeError, InvalidArgumentError, UnknownColumnError, throwIfAborted } from '../errors.js';
import type { FileInfo, UnderFileSystem } from '../ufs/types.js';
import type { ArrowFileMeta } from './arrow-file.js';
import type { DecodePool } from './decode-pool.js';
import type { FetchedDecode, ParquetDecodeTask, Piece } from './decode-parquet.js';
import { ufsSpecOf, type UfsSpec } from './portable-fs.js';
import { addReadStats, type DatasetReadStats } from './read-stats.js';
import { rowGroupFooter, type ParquetFileMeta } from './parquet-footer.js';
import type { HintRange } from './hints.js';
import { ownDecoded, type PartitionSource } from './stream.js';
import { allSettledOrThrow } from './signals.js';
import { CompactReader, CompactWriter } from './thrift.js';
import { schemaFromIpc, schemaToIpc } from './wire.js';

/** The three dataset formats as `PartitionSource`s: what to fetch for a partition, and how to decode it. */
export function checkColumns(url: string, available: readonly string[], wanted: readonly string[] | undefined): void {
  for (const c of wanted ?? []) {
    if (!available.includes(c)) {
      throw new UnknownColumnError(`Unknown column "${c}" in ${url}; available columns: ${available.join(', ')}`, { url });
    }
  }
}

/** Fields of `schema` in the order of `columns` (arrow's `select` keeps schema order). */
export function pickSchema(schema: Schema, columns: readonly string[] | undefined): Schema {
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

export class ParquetSource implements PartitionSource {
  schema: Schema = new Schema([]);
  readonly partitionRows: number[] = [];
  readonly parts: { file: ParquetFileMeta; rowGroup: number; rows: number; bytes: number }[] = [];

  /**
   * Where the decode threads read from themselves (`fetchInDecoder`): `fs` as a spec
   * they rebuild it from; undefined to read here and hand them the bytes.
   */
  readonly remote: UfsSpec | undefined;
  /** What the decode threads' own clients did for this source (`ds.readStats()`). */
  remoteStats: DatasetReadStats | undefined;

  constructor(
    readonly fs: UnderFileSystem,
    readonly files: ParquetFileMeta[],
    readonly columns: readonly string[] | undefined,
    readonly pool: () => DecodePool,
    readonly fetchInDecoder = true,
  ) {
    this.remote = fetchInDecoder ? ufsSpecOf(fs) : undefined;
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

  /** The decode task for partition `p`, without its bytes. */
  #task(p: number): Omit<ParquetDecodeTask, 'pieces' | 'fetch'> {
    const part = this.parts[p];
    if (!part) throw new InvalidArgumentError(`No partition ${p}`);
    return {
      kind: 'parquet',
      url: part.file.url,
      size: part.file.size,
      footer: rowGroupFooter(part.file, part.rowGroup),
      columns: this.columns ? [...this.columns] : undefined,
      numRows: part.rows,
    };
  }

  /**
   * The row group's column chunks, read here; or, with `remote`, read and decoded in a
   * decode thread (then `decode` only wraps the result).
   */
  async fetch(p: number, signal: AbortSignal): Promise<unknown> {
    if (this.remote) {
      const ranges = this.ranges(p).map(({ url, etag, offset, length }) => ({ url, etag, offset, length }));
      const done = await this.pool().fetchAndDecode(this.#task(p), this.remote, ranges, {
        signal,
        onStats: (s) => {
          this.remoteStats = this.remoteStats ? addReadStats(this.remoteStats, s) : s;
        },
      });
      return { decodedInThread: done } satisfies RemoteFetched;
    }
    return allSettledOrThrow(
      this.ranges(p).map(async (r): Promise<Piece> => ({ offset: r.offset, bytes: await this.fs.read(r.url, r.offset, r.length, { etag: r.etag, signal }) })),
    );
  }

  timing(fetched: unknown): { fetchMs: number; decodeMs: number } | undefined {
    const r = isRemoteFetched(fetched) ? fetched.decodedInThread : undefined;
    return r && { fetchMs: r.fetchMs, decodeMs: r.decodeMs };
  }

  async decode(p: number, fetched: unknown, signal: AbortSignal, priority?: number): Promise<RecordBatch[]> {
    const part = this.parts[p];
    if (!part) throw new InvalidArgumentError(`No partition ${p}`);
    let ipc: Uint8Array;
    if (isRemoteFetched(fetched)) ipc = fetched.decodedInThread.ipc;
    else {
      const pieces = (fetched as Piece[]).map((x) => ({ offset: x.offset, bytes: ownedBytes(x.bytes) }));
      ipc = await this.pool().decode(
        { ...this.#task(p), pieces },
        pieces.map((x) => x.bytes.buffer as ArrayBuffer),
        { signal, priority },
      );
    }
    const table = tableFromIPC(ipc);
    // The IPC bytes came from a decode thread: nothing but these batches refers to them.
    ownDecoded(ipc.buffer);
    if (table.numRows !== part.rows) {
      throw new CorruptDataError(
        `Row group ${part.rowGroup} of ${part.file.url} decoded to ${table.numRows} rows, its footer says ${part.rows}`,
        { url: part.file.url },
      );
    }
    return selectColumns(table.batches, this.columns);
  }
}

/** Whether the source's decode threads read their own bytes (`fetchInDecoder` in effect). */
export function readsInDecoder(source: unknown): boolean {
  return (source as { remote?: unknown } | null)?.remote !== undefined;
}

/** What `ParquetSource.fetch` returns when a decode thread read and decoded the row group. */
interface RemoteFetched {
  decodedInThread: Extract<FetchedDecode, { ipc: Uint8Array }>;
}

function isRemoteFetched(x: unknown): x is RemoteFetched {
  return typeof x === 'object' && x !== null && 'decodedInThread' in x;
}

/** A buffer we may transfer to a worker: the view must own its whole ArrayBuffer (never a pooled Buffer slab). */
function ownedBytes(u8: Uint8Array): Uint8Array {
  const b = u8.buffer;
  if (b instanceof ArrayBuffer && u8.byteOffset === 0 && u8.byteLength === b.byteLength) return u8;
  return u8.slice();
}

export class ArrowSource implements PartitionSource {
  readonly schema: Schema;
  readonly partitionRows: number[] = [];
  readonly parts: { file: ArrowFileMeta; block: number; rows: number; bytes: number }[] = [];

  constructor(
    readonly fs: UnderFileSystem,
    readonly files: ArrowFileMeta[],
    readonly columns: readonly string[] | undefined,
    schema?: Schema,
  ) {
    const first = files[0];
    this.schema = schema ?? (first ? pickSchema(first.schema, columns) : new Schema([]));
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

export class FilesSource implements PartitionSource {
  readonly schema: Schema;
  readonly partitionRows: number[] = [];
  readonly groups: { files: FileInfo[]; keys: string[]; bytes: number }[] = [];
  readonly #withBytes: boolean;

  constructor(
    readonly fs: UnderFileSystem,
    readonly files: FileInfo[],
    readonly prefix: string | undefined,
    readonly perPartition: number,
    readonly columns: readonly string[] | undefined,
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
    return allSettledOrThrow(g.files.map((f) => this.fs.read(f.url, 0, f.size, { etag: f.etag, signal })));
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


/** A partition source as plain data, to rebuild it in the loader thread (`sourceFromSpec`). */
export type SourceSpec =
  | { kind: 'parquet'; files: (Omit<ParquetFileMeta, 'meta'> & { metaBytes: Uint8Array })[]; columns: string[] | undefined; schemaIpc: Uint8Array; fetchInDecoder: boolean }
  | { kind: 'arrow'; files: Omit<ArrowFileMeta, 'schema'>[]; columns: string[] | undefined; schemaIpc: Uint8Array }
  | { kind: 'files'; files: FileInfo[]; prefix: string | undefined; perPartition: number; columns: string[] | undefined };

export function sourceSpec(src: PartitionSource): SourceSpec | undefined {
  const columns = (c: readonly string[] | undefined): string[] | undefined => (c ? [...c] : undefined);
  if (src instanceof ParquetSource) {
    return {
      kind: 'parquet',
      files: src.files.map(({ meta, ...rest }) => {
        const w = new CompactWriter();
        w.writeStruct(meta);
        return { ...rest, metaBytes: w.finish() };
      }),
      columns: columns(src.columns),
      schemaIpc: schemaToIpc(src.schema),
      fetchInDecoder: src.fetchInDecoder,
    };
  }
  if (src instanceof ArrowSource) {
    return { kind: 'arrow', files: src.files.map(({ schema: _schema, ...rest }) => rest), columns: columns(src.columns), schemaIpc: schemaToIpc(src.schema) };
  }
  if (src instanceof FilesSource) {
    return { kind: 'files', files: src.files, prefix: src.prefix, perPartition: src.perPartition, columns: columns(src.columns) };
  }
  return undefined;
}

export function sourceFromSpec(spec: SourceSpec, fs: UnderFileSystem, pool: () => DecodePool): PartitionSource {
  switch (spec.kind) {
    case 'parquet': {
      const files = spec.files.map(({ metaBytes, ...rest }) => ({ ...rest, meta: new CompactReader(metaBytes).readStruct() }));
      const src = new ParquetSource(fs, files, spec.columns, pool, spec.fetchInDecoder);
      src.schema = schemaFromIpc(spec.schemaIpc);
      return src;
    }
    case 'arrow': {
      const schema = schemaFromIpc(spec.schemaIpc);
      return new ArrowSource(fs, spec.files.map((f) => ({ ...f, schema })), spec.columns, schema);
    }
    case 'files':
      return new FilesSource(fs, spec.files, spec.prefix, spec.perPartition, spec.columns);
  }
}

import { CorruptDataError, DecodeError, GranaryError, UnknownColumnError } from '../errors.js';
import type { FileInfo, UnderFileSystem } from '../ufs/types.js';
import {
  CompactReader,
  CompactWriter,
  TStruct,
  TType,
  ThriftError,
  cloneStruct,
  fieldBytes,
  fieldList,
  fieldNum,
  fieldStruct,
} from './thrift.js';

/**
 * Parquet footers, read with small range reads and parsed with the generic compact
 * Thrift reader. Like hyparquet we read a fixed suffix first (64 KiB: most footers fit,
 * and one round trip beats two on an object store) and only read more when the
 * footer says it is larger.
 */

const MAGIC = 0x31524150; // "PAR1" little-endian
const MAGIC_ENCRYPTED = 0x45524150; // "PARE"
export const FOOTER_PROBE_BYTES = 64 * 1024;

/** One leaf column chunk's bytes inside the file. */
export interface ChunkRange {
  offset: number;
  length: number;
}

export interface ParquetRowGroup {
  index: number;
  numRows: number;
  /** Byte ranges of the projected column chunks, in leaf order. */
  ranges: ChunkRange[];
  /** Bytes those ranges hold together. */
  bytes: number;
}

export interface ParquetFileMeta {
  url: string;
  etag: string;
  size: number;
  numRows: number;
  /** Names of the top-level columns, in schema order. */
  columns: string[];
  rowGroups: ParquetRowGroup[];
  /** Per top-level column, a string that two files agree on exactly when the column's type agrees. */
  columnSignatures: Map<string, string>;
  /** The parsed FileMetaData (generic), kept to rewrite per-row-group footers. */
  meta: TStruct;
}

const dec = new TextDecoder();

function corrupt(url: string, what: string): InstanceType<typeof CorruptDataError> {
  return new CorruptDataError(`Corrupt Parquet file ${url}: ${what}`, { url });
}

/** Read and parse the footer of one Parquet file. */
export async function readParquetFooter(
  fs: UnderFileSystem,
  info: FileInfo,
  signal?: AbortSignal,
): Promise<{ meta: TStruct; metaLength: number }> {
  const { url, size } = info;
  if (size < 12) throw corrupt(url, `file of ${size} bytes is too small to hold a footer (needs at least 12)`);
  const probe = Math.min(size, FOOTER_PROBE_BYTES);
  let tail = await fs.read(url, size - probe, probe, { etag: info.etag, signal });
  const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  const magic = view.getUint32(tail.byteLength - 4, true);
  if (magic === MAGIC_ENCRYPTED) {
    throw new DecodeError(`Parquet file ${url} uses an encrypted footer, which the loader does not support`, { url });
  }
  if (magic !== MAGIC) {
    throw corrupt(url, `no PAR1 magic at offset ${size - 4} (found 0x${magic.toString(16)})`);
  }
  const metaLength = view.getUint32(tail.byteLength - 8, true);
  if (metaLength + 12 > size) {
    throw corrupt(url, `footer length ${metaLength} at offset ${size - 8} exceeds the file size ${size}`);
  }
  if (metaLength + 8 > tail.byteLength) {
    tail = await fs.read(url, size - metaLength - 8, metaLength + 8, { etag: info.etag, signal });
  }
  const start = tail.byteLength - 8 - metaLength;
  const meta = decodeFileMetaData(url, tail.subarray(start, start + metaLength), ` at offset ${size - 8 - metaLength}`);
  return { meta, metaLength };
}

/** Decode the Thrift `FileMetaData`; a malformed one throws `GRANARY_ERR_CORRUPT` naming the file. */
function decodeFileMetaData(url: string, bytes: Uint8Array, where: string): TStruct {
  try {
    return new CompactReader(bytes).readStruct();
  } catch (err) {
    if (err instanceof ThriftError) throw corrupt(url, `footer${where} does not parse: ${err.message}`);
    throw err;
  }
}

/** Where one column chunk's bytes lie, and its page indexes when the writer made them. */
export interface ColumnChunkLayout {
  /** Dotted path of the leaf column (`embedding`, `a.b`). */
  path: string;
  /** First byte of the chunk (its dictionary page, if any). */
  offset: number;
  /** Compressed bytes, page headers included. */
  length: number;
  offsetIndex: ChunkRange | undefined;
  columnIndex: ChunkRange | undefined;
}

export interface RowGroupLayout {
  numRows: number;
  /** Every column chunk, in leaf order. */
  columns: ColumnChunkLayout[];
}

export interface FileMetaDataLayout {
  numRows: number;
  rowGroups: RowGroupLayout[];
}

function indexRange(cc: TStruct, offsetId: number, lengthId: number): ChunkRange | undefined {
  const offset = fieldNum(cc, offsetId);
  const length = fieldNum(cc, lengthId);
  return offset !== undefined && length !== undefined ? { offset, length } : undefined;
}

/**
 * Parse a Parquet footer (the Thrift `FileMetaData`, without the length and magic that
 * follow it) into where its bytes lie: each row group's column chunks and page indexes.
 * Pure, for callers that fetched the footer themselves; `url` names the file in errors.
 */
export function parseFileMetaData(bytes: Uint8Array, url: string): FileMetaDataLayout {
  const meta = decodeFileMetaData(url, bytes, '');
  const numRows = fieldNum(meta, 3);
  if (numRows === undefined) throw corrupt(url, 'footer has no num_rows');
  const rowGroups = (fieldList(meta, 4) ?? []).map((rg, i): RowGroupLayout => {
    if (!(rg instanceof TStruct)) throw corrupt(url, `row group ${i} is not a struct`);
    const columns = (fieldList(rg, 1) ?? []).map((cc, j): ColumnChunkLayout => {
      if (!(cc instanceof TStruct)) throw corrupt(url, `row group ${i} column ${j} is not a struct`);
      const md = fieldStruct(cc, 3);
      if (!md) throw corrupt(url, `row group ${i} column ${j} has no metadata`);
      const path = (fieldList(md, 3) ?? []).map((p) => (p instanceof Uint8Array ? dec.decode(p) : '')).join('.');
      const length = fieldNum(md, 7);
      const dataOffset = fieldNum(md, 9);
      if (length === undefined || dataOffset === undefined || length < 0 || dataOffset < 0) {
        throw corrupt(url, `column chunk ${path} of row group ${i} lacks a valid size or offset (size ${length}, data page offset ${dataOffset})`);
      }
      // Some writers store a dictionary offset of 0 for "none"; a chunk starts at its first page.
      const dictOffset = fieldNum(md, 11);
      const offset = dictOffset !== undefined && dictOffset > 0 && dictOffset < dataOffset ? dictOffset : dataOffset;
      return { path, offset, length, offsetIndex: indexRange(cc, 4, 5), columnIndex: indexRange(cc, 6, 7) };
    });
    return { numRows: fieldNum(rg, 3) ?? 0, columns };
  });
  return { numRows, rowGroups };
}

interface SchemaNode {
  element: TStruct;
  name: string;
  children: SchemaNode[];
}

function buildSchemaTree(url: string, elements: TStruct[]): SchemaNode {
  let i = 0;
  const take = (depth: number): SchemaNode => {
    const element = elements[i];
    if (!element) throw corrupt(url, `schema ends early: ${elements.length} elements, a group needs more`);
    if (depth > 64) throw corrupt(url, 'schema nests deeper than 64 levels');
    i++;
    const n = fieldNum(element, 5) ?? 0;
    if (n < 0 || n > elements.length) throw corrupt(url, `schema element claims ${n} children`);
    const children: SchemaNode[] = [];
    for (let c = 0; c < n; c++) children.push(take(depth + 1));
    return { element, name: dec.decode(fieldBytes(element, 4) ?? new Uint8Array()), children };
  };
  const root = take(0);
  if (i !== elements.length) throw corrupt(url, `schema has ${elements.length - i} elements outside the root`);
  return root;
}

function countLeaves(n: SchemaNode): number {
  return n.children.length === 0 ? 1 : n.children.reduce((a, c) => a + countLeaves(c), 0);
}

function signature(n: SchemaNode): string {
  const e = n.element;
  const w = new CompactWriter();
  const logical = fieldStruct(e, 10);
  if (logical) w.writeStruct(logical);
  const parts = [n.name, fieldNum(e, 1), fieldNum(e, 2), fieldNum(e, 3), fieldNum(e, 6), fieldNum(e, 7), fieldNum(e, 8)];
  return `${parts.join(':')}:${Buffer.from(w.finish()).toString('hex')}(${n.children.map(signature).join(',')})`;
}

/**
 * Interpret a parsed footer: the columns, the projected chunk ranges of each row group,
 * and the checks that make a bad file fail here (naming it) rather than in the decoder.
 */
export function describeParquet(info: FileInfo, meta: TStruct, metaLength: number, projection: readonly string[] | undefined): ParquetFileMeta {
  const { url, size } = info;
  const elements = fieldList(meta, 2);
  if (!elements || elements.length === 0 || !elements.every((e) => e instanceof TStruct)) {
    throw corrupt(url, 'footer has no schema');
  }
  const root = buildSchemaTree(url, elements);
  const columns = root.children.map((c) => c.name);
  const wanted = projection ?? columns;
  for (const c of wanted) {
    if (!columns.includes(c)) {
      throw new UnknownColumnError(`Unknown column "${c}" in ${url}; available columns: ${columns.join(', ')}`, { url });
    }
  }
  const leafOwner: string[] = [];
  for (const c of root.children) for (let k = 0; k < countLeaves(c); k++) leafOwner.push(c.name);
  const columnSignatures = new Map<string, string>();
  for (const c of root.children) columnSignatures.set(c.name, signature(c));

  const dataEnd = size - 8 - metaLength;
  const rgs = fieldList(meta, 4) ?? [];
  const rowGroups: ParquetRowGroup[] = [];
  let numRows = 0;
  rgs.forEach((rg, index) => {
    if (!(rg instanceof TStruct)) throw corrupt(url, `row group ${index} is not a struct`);
    const rows = fieldNum(rg, 3);
    if (rows === undefined || rows < 0 || !Number.isSafeInteger(rows)) throw corrupt(url, `row group ${index} has ${rows} rows`);
    const chunks = fieldList(rg, 1) ?? [];
    if (chunks.length !== leafOwner.length) {
      throw corrupt(url, `row group ${index} has ${chunks.length} column chunks, the schema has ${leafOwner.length} leaf columns`);
    }
    const ranges: ChunkRange[] = [];
    chunks.forEach((cc, leaf) => {
      if (!wanted.includes(leafOwner[leaf] as string)) return;
      if (!(cc instanceof TStruct)) throw corrupt(url, `row group ${index} column ${leaf} is not a struct`);
      if (fieldBytes(cc, 1) !== undefined) {
        throw new DecodeError(`Parquet file ${url} keeps column chunks in other files (file_path), which the loader does not support`, { url });
      }
      const md = fieldStruct(cc, 3);
      if (!md) throw corrupt(url, `row group ${index} column ${leaf} has no metadata`);
      const dataOffset = fieldNum(md, 9) ?? -1;
      const dictOffset = fieldNum(md, 11);
      const length = fieldNum(md, 7) ?? -1;
      const offset = dictOffset !== undefined && dictOffset > 0 && dictOffset < dataOffset ? dictOffset : dataOffset;
      if (offset < 0 || length < 0 || offset + length > dataEnd) {
        throw corrupt(
          url,
          `row group ${index} column ${leaf} claims bytes ${offset}..${offset + length}, outside the data region 0..${dataEnd}`,
        );
      }
      ranges.push({ offset, length });
    });
    numRows += rows;
    rowGroups.push({ index, numRows: rows, ranges, bytes: ranges.reduce((a, r) => a + r.length, 0) });
  });
  return { url, etag: info.etag, size, numRows, columns, rowGroups, columnSignatures, meta };
}

/**
 * A footer for a file that holds only row group `index`: the file keeps its byte
 * layout (the decoder sees a sparse file with the original offsets), the footer is
 * appended after the original end. Page-index offsets are dropped so the decoder
 * never asks for bytes we did not fetch.
 */
export function rowGroupFooter(file: ParquetFileMeta, index: number): Uint8Array {
  const rgs = fieldList(file.meta, 4) ?? [];
  const rg = rgs[index];
  if (!(rg instanceof TStruct)) throw new GranaryError('GRANARY_ERR_INTERNAL', `no row group ${index} in ${file.url}`, { url: file.url });
  const rgCopy = cloneStruct(rg);
  const chunks = (fieldList(rg, 1) ?? []).map((cc) => {
    if (!(cc instanceof TStruct)) return cc;
    const c = cloneStruct(cc);
    for (const id of [4, 5, 6, 7]) c.fields.delete(id);
    return c;
  });
  rgCopy.fields.set(1, { type: TType.LIST, value: { kind: 'list', elemType: TType.STRUCT, items: chunks } });
  const m = cloneStruct(file.meta);
  m.fields.set(3, { type: TType.I64, value: BigInt(fieldNum(rg, 3) ?? 0) });
  m.fields.set(4, { type: TType.LIST, value: { kind: 'list', elemType: TType.STRUCT, items: [rgCopy] } });
  return withTail(m);
}

/** A footer with no row groups: enough for the decoder to read the schema. */
export function schemaOnlyFooter(file: ParquetFileMeta): Uint8Array {
  const m = cloneStruct(file.meta);
  m.fields.set(3, { type: TType.I64, value: 0n });
  m.fields.set(4, { type: TType.LIST, value: { kind: 'list', elemType: TType.STRUCT, items: [] } });
  return withTail(m);
}

function withTail(m: TStruct): Uint8Array {
  const w = new CompactWriter();
  w.writeStruct(m);
  const body = w.finish();
  const out = new Uint8Array(body.byteLength + 8);
  out.set(body);
  const v = new DataView(out.buffer);
  v.setUint32(body.byteLength, body.byteLength, true);
  v.setUint32(body.byteLength + 4, MAGIC, true);
  return out;
}

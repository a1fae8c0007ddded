import { CorruptDataError } from '../errors.js';

/**
 * A reader for just enough of a Parquet footer (Thrift compact protocol) to find
 * where each row group's bytes lie. parquet-wasm's `ParquetFile` wants the whole
 * file, including the page indexes between the data and the footer, so it cannot
 * plan ranged reads from the footer alone.
 */

type ThriftValue = number | boolean | Uint8Array | ThriftValue[] | ThriftStruct | Map<ThriftValue, ThriftValue>;
/** A decoded struct: field id to value. Its own class, so it is told apart from a Thrift map. */
class ThriftStruct extends Map<number, ThriftValue> {}

const T_TRUE = 1;
const T_FALSE = 2;
const T_BYTE = 3;
const T_I16 = 4;
const T_I32 = 5;
const T_I64 = 6;
const T_DOUBLE = 7;
const T_BINARY = 8;
const T_LIST = 9;
const T_SET = 10;
const T_MAP = 11;
const T_STRUCT = 12;

class CompactReader {
  pos = 0;
  constructor(
    readonly bytes: Uint8Array,
    readonly where: string,
  ) {}

  #fail(what: string): never {
    throw new CorruptDataError(`Malformed Parquet footer of ${this.where}: ${what} at footer byte ${this.pos} of ${this.bytes.byteLength}`);
  }

  byte(): number {
    const b = this.bytes[this.pos];
    if (b === undefined) this.#fail('unexpected end');
    this.pos++;
    return b;
  }

  /** An unsigned varint as a double: exact up to 2^53, which covers any real offset. */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return result;
      scale *= 128;
    }
    return this.#fail('varint longer than 10 bytes');
  }

  zigzag(): number {
    const n = this.varint();
    return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
  }

  value(type: number, depth: number): ThriftValue {
    if (depth > 32) this.#fail('nesting deeper than 32');
    switch (type) {
      case T_TRUE:
        return true;
      case T_FALSE:
        return false;
      case T_BYTE:
        return this.byte();
      case T_I16:
      case T_I32:
      case T_I64:
        return this.zigzag();
      case T_DOUBLE: {
        if (this.pos + 8 > this.bytes.byteLength) this.#fail('unexpected end');
        const v = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.pos, 8).getFloat64(0, true);
        this.pos += 8;
        return v;
      }
      case T_BINARY: {
        const len = this.varint();
        if (this.pos + len > this.bytes.byteLength) this.#fail(`binary of ${len} bytes past the end`);
        const v = this.bytes.subarray(this.pos, this.pos + len);
        this.pos += len;
        return v;
      }
      case T_LIST:
      case T_SET: {
        const header = this.byte();
        const size = header >> 4 === 15 ? this.varint() : header >> 4;
        const elem = header & 0x0f;
        this.#checkCount(size);
        const out: ThriftValue[] = [];
        for (let i = 0; i < size; i++) out.push(this.element(elem, depth + 1));
        return out;
      }
      case T_MAP: {
        const size = this.varint();
        const out = new Map<ThriftValue, ThriftValue>();
        if (size === 0) return out;
        this.#checkCount(size);
        const types = this.byte();
        for (let i = 0; i < size; i++) out.set(this.element(types >> 4, depth + 1), this.element(types & 0x0f, depth + 1));
        return out;
      }
      case T_STRUCT:
        return this.struct(depth + 1);
      default:
        return this.#fail(`unknown Thrift type ${type}`);
    }
  }

  /** A list, set or map element: booleans there take one byte each, not a type nibble. */
  element(type: number, depth: number): ThriftValue {
    return type === T_TRUE || type === T_FALSE ? this.byte() === 1 : this.value(type, depth);
  }

  /** Every element takes at least one byte, so a count beyond the bytes left is corrupt (and would spin). */
  #checkCount(size: number): void {
    if (size > this.bytes.byteLength - this.pos) this.#fail(`collection of ${size} elements in ${this.bytes.byteLength - this.pos} bytes`);
  }

  struct(depth = 0): ThriftStruct {
    const out = new ThriftStruct();
    let id = 0;
    for (;;) {
      const header = this.byte();
      if (header === 0) return out;
      const delta = header >> 4;
      id = delta === 0 ? this.zigzag() : id + delta;
      out.set(id, this.value(header & 0x0f, depth));
    }
  }
}

export interface ColumnChunkLayout {
  /** Dotted column path (`embedding`). */
  path: string;
  /** First byte of the chunk (its dictionary page, if any). */
  offset: number;
  /** Compressed bytes, page headers included. */
  length: number;
}

export interface RowGroupLayout {
  numRows: number;
  /** First byte of the row group's first column chunk. */
  offset: number;
  /** Bytes from `offset` to the end of its last column chunk. */
  length: number;
  columns: ColumnChunkLayout[];
}

export interface ParquetFooter {
  numRows: number;
  rowGroups: RowGroupLayout[];
  /** Page-index bytes (column and offset indexes) declared by the column chunks, as one span. */
  pageIndex: { offset: number; length: number } | undefined;
}

function num(s: ThriftStruct, id: number): number | undefined {
  const v = s.get(id);
  return typeof v === 'number' ? v : undefined;
}

function structs(s: ThriftStruct, id: number): ThriftStruct[] {
  const v = s.get(id);
  return Array.isArray(v) ? v.filter((x): x is ThriftStruct => x instanceof ThriftStruct) : [];
}

/**
 * Parse a Parquet footer (the Thrift `FileMetaData`, without the length and magic
 * that follow it) into the byte layout of its row groups. `where` names the file in errors.
 */
export function parseParquetFooter(footer: Uint8Array, where: string): ParquetFooter {
  const meta = new CompactReader(footer, where).struct();
  const numRows = num(meta, 3);
  if (numRows === undefined) throw new CorruptDataError(`Parquet footer of ${where} has no num_rows`);
  let indexStart = Infinity;
  let indexEnd = -Infinity;
  const rowGroups = structs(meta, 4).map((rg, i): RowGroupLayout => {
    const columns = structs(rg, 1).map((cc, j): ColumnChunkLayout => {
      const md = cc.get(3);
      if (!(md instanceof ThriftStruct)) throw new CorruptDataError(`Parquet footer of ${where}: row group ${i} column ${j} has no metadata`);
      const pathParts = md.get(3);
      const path = Array.isArray(pathParts) ? pathParts.map((p) => (p instanceof Uint8Array ? Buffer.from(p).toString('utf8') : '')).join('.') : '';
      const length = num(md, 7);
      const dataPage = num(md, 9);
      const dictPage = num(md, 11);
      if (length === undefined || dataPage === undefined) {
        throw new CorruptDataError(`Parquet footer of ${where}: column chunk ${path} of row group ${i} lacks its size or offset`);
      }
      // Some writers store a dictionary offset of 0 for "none"; a chunk starts at its first page.
      const offset = dictPage !== undefined && dictPage > 0 ? Math.min(dictPage, dataPage) : dataPage;
      for (const [offId, lenId] of [
        [4, 5],
        [6, 7],
      ] as const) {
        const o = num(cc, offId);
        const l = num(cc, lenId);
        if (o !== undefined && l !== undefined) {
          indexStart = Math.min(indexStart, o);
          indexEnd = Math.max(indexEnd, o + l);
        }
      }
      return { path, offset, length };
    });
    const offset = Math.min(...columns.map((c) => c.offset));
    const end = Math.max(...columns.map((c) => c.offset + c.length));
    return { numRows: num(rg, 3) ?? 0, offset: columns.length ? offset : 0, length: columns.length ? end - offset : 0, columns };
  });
  const pageIndex = indexEnd > indexStart ? { offset: indexStart, length: indexEnd - indexStart } : undefined;
  return { numRows, rowGroups, pageIndex };
}

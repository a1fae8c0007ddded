import { DataType, RecordBatch, Struct, makeBuilder, makeData, makeVector } from 'apache-arrow';
import { wrapBatch } from './record-batch.js';
import type { Data, Schema } from 'apache-arrow';

/**
 * Row gather across decoded partitions: apache-arrow JS has no `take` kernel. Flat
 * types, strings/binary, structs, lists and fixed-size lists are gathered with typed
 * array copies; other types (dictionaries, unions, views) go through an arrow builder,
 * which is correct but slow.
 */

type AnyData = Data<DataType>;

interface Bits {
  bitmap: Uint8Array;
  nullCount: number;
}

function hasNulls(d: AnyData): boolean {
  return d.nullBitmap !== undefined && d.nullBitmap !== null && d.nullBitmap.byteLength > 0;
}

function validAt(d: AnyData, row: number): boolean {
  if (!hasNulls(d)) return true;
  const i = d.offset + row;
  return (((d.nullBitmap)[i >> 3] as number) & (1 << (i & 7))) !== 0;
}

function gatherValidity(srcs: AnyData[], s: Int32Array, r: Int32Array): Bits | undefined {
  if (!srcs.some(hasNulls)) return undefined;
  const n = s.length;
  const bitmap = new Uint8Array((n + 7) >> 3);
  let nullCount = 0;
  for (let k = 0; k < n; k++) {
    if (validAt(srcs[s[k] as number] as AnyData, r[k] as number)) bitmap[k >> 3] = (bitmap[k >> 3] as number) | (1 << (k & 7));
    else nullCount++;
  }
  return nullCount === 0 ? undefined : { bitmap, nullCount };
}

function validityProps(bits: Bits | undefined): { nullCount: number; nullBitmap?: Uint8Array } {
  return bits ? { nullCount: bits.nullCount, nullBitmap: bits.bitmap } : { nullCount: 0 };
}

type Typed = {
  length: number;
  buffer: ArrayBufferLike;
  byteOffset: number;
  byteLength: number;
  BYTES_PER_ELEMENT: number;
  [i: number]: number | bigint;
  subarray(a: number, b: number): Typed;
  set(src: Typed, at: number): void;
};
type TypedCtor = new (buffer: ArrayBuffer) => Typed;

/** Rows wider than this many 32-bit words are copied with `set(subarray)`; narrower ones word by word. */
const WORD_LOOP_MAX = 32;
/** Values shorter than this many bytes are copied byte by byte (cheaper than a `subarray` view each). */
const BYTE_LOOP_MAX = 24;

/**
 * Fixed-width values are copied as raw bits: 32-bit words when every row is a whole
 * number of aligned words (no BigInt boxing for 64-bit types, no view per row), bytes
 * otherwise.
 */
function gatherFixed(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const values = gatherFixedValues(srcs, s, r, (srcs[0] as AnyData).stride);
  return makeData({ type, length: s.length, ...validityProps(gatherValidity(srcs, s, r)), data: values } as never) as AnyData;
}

/**
 * Copy rows of `w` (3..WORD_LOOP_MAX) 32-bit words, `out` row k = row r[k] of views[s[k]].
 * Four rows per step, two words of each per inner iteration: the loads of four random
 * rows are independent, so their cache and TLB misses overlap, and the loop's own
 * overhead is paid once per eight words. For 64-byte rows drawn at random from four
 * 65,536-row groups this takes ~57-87 ns per row against ~108-140 ns one row and one
 * word at a time (measured on the 2-core development machine, see bench/NOTES.md).
 */
function copyRowsByWords(out: Int32Array, views: Int32Array[], s: Int32Array, r: Int32Array, w: number): void {
  const n = s.length;
  let k = 0;
  if (w % 2 === 0) {
    const w2 = 2 * w;
    const w3 = 3 * w;
    for (; k + 3 < n; k += 4) {
      const a = views[s[k] as number] as Int32Array;
      const b = views[s[k + 1] as number] as Int32Array;
      const c = views[s[k + 2] as number] as Int32Array;
      const d = views[s[k + 3] as number] as Int32Array;
      const fa = (r[k] as number) * w;
      const fb = (r[k + 1] as number) * w;
      const fc = (r[k + 2] as number) * w;
      const fd = (r[k + 3] as number) * w;
      const t = k * w;
      for (let j = 0; j < w; j += 2) {
        out[t + j] = a[fa + j] as number;
        out[t + w + j] = b[fb + j] as number;
        out[t + w2 + j] = c[fc + j] as number;
        out[t + w3 + j] = d[fd + j] as number;
        out[t + j + 1] = a[fa + j + 1] as number;
        out[t + w + j + 1] = b[fb + j + 1] as number;
        out[t + w2 + j + 1] = c[fc + j + 1] as number;
        out[t + w3 + j + 1] = d[fd + j + 1] as number;
      }
    }
  }
  for (; k < n; k++) {
    const v = views[s[k] as number] as Int32Array;
    const from = (r[k] as number) * w;
    const to = k * w;
    for (let j = 0; j < w; j++) out[to + j] = v[from + j] as number;
  }
}

/** The values of rows (srcs[s[k]], r[k]), each `stride` elements of the sources' value arrays. */
function gatherFixedValues(srcs: AnyData[], s: Int32Array, r: Int32Array, stride: number): Typed {
  const first = srcs[0] as AnyData;
  const firstValues = first.values as unknown as Typed;
  const Ctor = firstValues.constructor as TypedCtor;
  const rowBytes = stride * firstValues.BYTES_PER_ELEMENT;
  const n = s.length;
  const buf = new ArrayBuffer(n * rowBytes);
  const aligned = rowBytes % 4 === 0 && srcs.every((d) => (d.values as unknown as Typed).byteOffset % 4 === 0);
  if (aligned) {
    const w = rowBytes / 4;
    const out = new Int32Array(buf);
    const views = srcs.map((d) => {
      const v = d.values as unknown as Typed;
      return new Int32Array(v.buffer as ArrayBuffer, v.byteOffset, Math.floor(v.byteLength / 4));
    });
    if (w === 1) {
      for (let k = 0; k < n; k++) out[k] = (views[s[k] as number] as Int32Array)[r[k] as number] as number;
    } else if (w === 2) {
      for (let k = 0; k < n; k++) {
        const v = views[s[k] as number] as Int32Array;
        const from = (r[k] as number) * 2;
        out[2 * k] = v[from] as number;
        out[2 * k + 1] = v[from + 1] as number;
      }
    } else if (w <= WORD_LOOP_MAX) {
      copyRowsByWords(out, views, s, r, w);
    } else {
      for (let k = 0; k < n; k++) {
        const from = (r[k] as number) * w;
        out.set((views[s[k] as number] as Int32Array).subarray(from, from + w), k * w);
      }
    }
  } else {
    const out = new Uint8Array(buf);
    const views = srcs.map((d) => {
      const v = d.values as unknown as Typed;
      return new Uint8Array(v.buffer as ArrayBuffer, v.byteOffset, v.byteLength);
    });
    for (let k = 0; k < n; k++) {
      const v = views[s[k] as number] as Uint8Array;
      const from = (r[k] as number) * rowBytes;
      const to = k * rowBytes;
      if (rowBytes <= BYTE_LOOP_MAX) for (let j = 0; j < rowBytes; j++) out[to + j] = v[from + j] as number;
      else out.set(v.subarray(from, from + rowBytes), to);
    }
  }
  return new Ctor(buf);
}

function gatherBool(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const n = s.length;
  const out = new Uint8Array((n + 7) >> 3);
  for (let k = 0; k < n; k++) {
    const d = srcs[s[k] as number] as AnyData;
    const i = d.offset + (r[k] as number);
    if ((((d.values as Uint8Array)[i >> 3] as number) & (1 << (i & 7))) !== 0) out[k >> 3] = (out[k >> 3] as number) | (1 << (k & 7));
  }
  return makeData({ type, length: n, ...validityProps(gatherValidity(srcs, s, r)), data: out } as never) as AnyData;
}

function gatherBinary(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const n = s.length;
  const offs = srcs.map((d) => d.valueOffsets as Int32Array);
  const vals = srcs.map((d) => d.values as Uint8Array);
  const offsets = new Int32Array(n + 1);
  let total = 0;
  for (let k = 0; k < n; k++) {
    const o = offs[s[k] as number] as Int32Array;
    const i = r[k] as number;
    total += (o[i + 1] as number) - (o[i] as number);
    offsets[k + 1] = total;
  }
  const data = new Uint8Array(total);
  for (let k = 0; k < n; k++) {
    const src = s[k] as number;
    const o = offs[src] as Int32Array;
    const v = vals[src] as Uint8Array;
    const i = r[k] as number;
    const a = o[i] as number;
    const len = (o[i + 1] as number) - a;
    const to = offsets[k] as number;
    if (len <= BYTE_LOOP_MAX) for (let j = 0; j < len; j++) data[to + j] = v[a + j] as number;
    else data.set(v.subarray(a, a + len), to);
  }
  return makeData({ type, length: n, ...validityProps(gatherValidity(srcs, s, r)), valueOffsets: offsets, data } as never) as AnyData;
}

function gatherList(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const n = s.length;
  const offsets = new Int32Array(n + 1);
  const cs: number[] = [];
  const cr: number[] = [];
  for (let k = 0; k < n; k++) {
    const d = srcs[s[k] as number] as AnyData;
    const o = d.valueOffsets as Int32Array;
    const i = r[k] as number;
    for (let c = o[i] as number; c < (o[i + 1] as number); c++) {
      cs.push(s[k] as number);
      cr.push(c);
    }
    offsets[k + 1] = cs.length;
  }
  const children = srcs.map((d) => d.children[0] as AnyData);
  const child = gatherData((type.children[0] as { type: DataType }).type, children, Int32Array.from(cs), Int32Array.from(cr));
  return makeData({ type, length: n, ...validityProps(gatherValidity(srcs, s, r)), valueOffsets: offsets, child } as never) as AnyData;
}

function isFixedWidth(type: DataType): boolean {
  return (
    DataType.isInt(type) ||
    DataType.isFloat(type) ||
    DataType.isDate(type) ||
    DataType.isTime(type) ||
    DataType.isTimestamp(type) ||
    DataType.isDecimal(type) ||
    DataType.isDuration(type) ||
    DataType.isInterval(type) ||
    DataType.isFixedSizeBinary(type)
  );
}

function gatherFixedList(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const size = (type as unknown as { listSize: number }).listSize;
  const n = s.length;
  const childType = (type.children[0] as { type: DataType }).type;
  const children = srcs.map((d) => d.children[0] as AnyData);
  if (isFixedWidth(childType) && !children.some(hasNulls)) {
    // A list of `size` fixed-width values without nulls is one fixed-width row of size x stride (an embedding).
    const values = gatherFixedValues(children, s, r, size * (children[0] as AnyData).stride);
    const child = makeData({ type: childType, length: n * size, nullCount: 0, data: values } as never) as AnyData;
    return makeData({ type, length: n, ...validityProps(gatherValidity(srcs, s, r)), child } as never) as AnyData;
  }
  const cs = new Int32Array(n * size);
  const cr = new Int32Array(n * size);
  for (let k = 0; k < n; k++) {
    // Slicing a fixed-size list slices its child too.
    const base = (r[k] as number) * size;
    for (let j = 0; j < size; j++) {
      cs[k * size + j] = s[k] as number;
      cr[k * size + j] = base + j;
    }
  }
  const child = gatherData(childType, children, cs, cr);
  return makeData({ type, length: n, ...validityProps(gatherValidity(srcs, s, r)), child } as never) as AnyData;
}

function gatherStruct(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const children = type.children.map((f, j) => {
    // Slicing a struct slices its children too, so the same row indices apply.
    const kids = srcs.map((d) => d.children[j] as AnyData);
    return gatherData(f.type as DataType, kids, s, r);
  });
  return makeData({ type, length: s.length, ...validityProps(gatherValidity(srcs, s, r)), children } as never) as AnyData;
}

function gatherWithBuilder(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const vectors = srcs.map((d) => makeVector(d));
  const b = makeBuilder({ type, nullValues: [null, undefined] });
  for (let k = 0; k < s.length; k++) b.append((vectors[s[k] as number] as { get(i: number): unknown }).get(r[k] as number));
  return b.finish().flush() as AnyData;
}

/** Rows (srcs[s[k]], row r[k]) for k = 0..n-1, as one contiguous Data. */
export function gatherData(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  if (DataType.isNull(type)) return makeData({ type, length: s.length, nullCount: s.length } as never) as AnyData;
  if (DataType.isBool(type)) return gatherBool(type, srcs, s, r);
  if (isFixedWidth(type)) return gatherFixed(type, srcs, s, r);
  if (DataType.isUtf8(type) || DataType.isBinary(type)) return gatherBinary(type, srcs, s, r);
  if (DataType.isList(type) || DataType.isMap(type)) return gatherList(type, srcs, s, r);
  if (DataType.isFixedSizeList(type)) return gatherFixedList(type, srcs, s, r);
  if (DataType.isStruct(type)) return gatherStruct(type, srcs, s, r);
  return gatherWithBuilder(type, srcs, s, r);
}

/** A RecordBatch of the given rows of `sources` (all of `schema`). */
export function gatherBatch(schema: Schema, sources: RecordBatch[], s: Int32Array, r: Int32Array): RecordBatch {
  if (s.length === 0) return emptyBatch(schema);
  const children = schema.fields.map((f, j) => gatherData(f.type as DataType, sources.map((b) => b.data.children[j] as AnyData), s, r));
  return wrapBatch(schema, makeData({ type: new Struct(schema.fields), length: s.length, nullCount: 0, children }));
}

/** A RecordBatch of `schema` with no rows. */
export function emptyBatch(schema: Schema): RecordBatch {
  const children = schema.fields.map((f) => makeBuilder({ type: f.type as DataType }).finish().flush() as AnyData);
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 0, nullCount: 0, children }));
}

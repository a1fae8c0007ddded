import { DataType, RecordBatch, Struct, makeBuilder, makeData, makeVector } from 'apache-arrow';
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

type Typed = { length: number; [i: number]: number | bigint; subarray(a: number, b: number): Typed; set(src: Typed, at: number): void };
type TypedCtor = new (n: number) => Typed;

function gatherFixed(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const first = srcs[0] as AnyData;
  const stride = first.stride;
  const Ctor = (first.values as unknown as Typed).constructor as TypedCtor;
  const n = s.length;
  const out = new Ctor(n * stride);
  for (let k = 0; k < n; k++) {
    const d = srcs[s[k] as number] as AnyData;
    // Slicing subarrays fixed-width values, so indices are relative to the slice.
    const from = (r[k] as number) * stride;
    const vals = d.values as unknown as Typed;
    if (stride === 1) out[k] = vals[from] as number;
    else out.set(vals.subarray(from, from + stride), k * stride);
  }
  return makeData({ type, length: n, ...validityProps(gatherValidity(srcs, s, r)), data: out } as never) as AnyData;
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
  const offsets = new Int32Array(n + 1);
  let total = 0;
  for (let k = 0; k < n; k++) {
    const d = srcs[s[k] as number] as AnyData;
    const o = d.valueOffsets as Int32Array;
    const i = r[k] as number;
    total += (o[i + 1] as number) - (o[i] as number);
    offsets[k + 1] = total;
  }
  const data = new Uint8Array(total);
  for (let k = 0; k < n; k++) {
    const d = srcs[s[k] as number] as AnyData;
    const o = d.valueOffsets as Int32Array;
    const i = r[k] as number;
    data.set((d.values as Uint8Array).subarray(o[i], o[i + 1]), offsets[k]);
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

function gatherFixedList(type: DataType, srcs: AnyData[], s: Int32Array, r: Int32Array): AnyData {
  const size = (type as unknown as { listSize: number }).listSize;
  const n = s.length;
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
  const children = srcs.map((d) => d.children[0] as AnyData);
  const child = gatherData((type.children[0] as { type: DataType }).type, children, cs, cr);
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
  if (
    DataType.isInt(type) ||
    DataType.isFloat(type) ||
    DataType.isDate(type) ||
    DataType.isTime(type) ||
    DataType.isTimestamp(type) ||
    DataType.isDecimal(type) ||
    DataType.isDuration(type) ||
    DataType.isInterval(type) ||
    DataType.isFixedSizeBinary(type)
  ) {
    return gatherFixed(type, srcs, s, r);
  }
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
  const data = makeData({ type: new Struct(schema.fields), length: s.length, nullCount: 0, children });
  return new RecordBatch(schema, data);
}

/** A RecordBatch of `schema` with no rows. */
export function emptyBatch(schema: Schema): RecordBatch {
  const children = schema.fields.map((f) => makeBuilder({ type: f.type as DataType }).finish().flush() as AnyData);
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 0, nullCount: 0, children }));
}

/**
 * A generic Thrift compact-protocol reader and writer. Parquet footers are compact
 * Thrift; reading them into a generic tree (field id -> typed value) and writing the
 * tree back lets the loader rewrite a footer for one row group without modelling
 * every field of the format: fields it does not know survive byte-for-byte.
 */

export const TType = {
  STOP: 0,
  TRUE: 1,
  FALSE: 2,
  BYTE: 3,
  I16: 4,
  I32: 5,
  I64: 6,
  DOUBLE: 7,
  BINARY: 8,
  LIST: 9,
  SET: 10,
  MAP: 11,
  STRUCT: 12,
} as const;

export type TValue = boolean | number | bigint | Uint8Array | TList | TMap | TStruct;

export interface TList {
  kind: 'list';
  elemType: number;
  items: TValue[];
}

export interface TMap {
  kind: 'map';
  keyType: number;
  valueType: number;
  entries: [TValue, TValue][];
}

export interface TField {
  type: number;
  value: TValue;
}

/** A struct: field id -> field. */
export class TStruct {
  readonly kind = 'struct';
  readonly fields = new Map<number, TField>();
}

/** Thrown for malformed Thrift; callers turn it into a coded error naming the file. */
export class ThriftError extends Error {
  override name = 'ThriftError';
}

const MAX_DEPTH = 64;

export class CompactReader {
  pos = 0;
  readonly #view: DataView;

  constructor(readonly bytes: Uint8Array, offset = 0) {
    this.pos = offset;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  #byte(): number {
    if (this.pos >= this.bytes.byteLength) throw new ThriftError(`thrift read past end of buffer at ${this.pos}`);
    return this.bytes[this.pos++] as number;
  }

  varint(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.#byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 49) throw new ThriftError(`thrift varint too long at ${this.pos}`);
    }
  }

  varbig(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const b = this.#byte();
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw new ThriftError(`thrift varint too long at ${this.pos}`);
    }
  }

  zigzag(): number {
    const n = this.varint();
    return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
  }

  zigzagBig(): bigint {
    const n = this.varbig();
    return (n >> 1n) ^ -(n & 1n);
  }

  readValue(type: number, depth: number): TValue {
    if (depth > MAX_DEPTH) throw new ThriftError(`thrift nesting deeper than ${MAX_DEPTH} at ${this.pos}`);
    switch (type) {
      case TType.TRUE:
        return true;
      case TType.FALSE:
        return false;
      case TType.BYTE: {
        const b = this.#byte();
        return b > 127 ? b - 256 : b;
      }
      case TType.I16:
      case TType.I32:
        return this.zigzag();
      case TType.I64:
        return this.zigzagBig();
      case TType.DOUBLE: {
        if (this.pos + 8 > this.bytes.byteLength) throw new ThriftError(`thrift double past end at ${this.pos}`);
        const v = this.#view.getFloat64(this.pos, true);
        this.pos += 8;
        return v;
      }
      case TType.BINARY: {
        const len = this.varint();
        if (this.pos + len > this.bytes.byteLength) throw new ThriftError(`thrift binary of ${len} bytes past end at ${this.pos}`);
        const v = this.bytes.subarray(this.pos, this.pos + len);
        this.pos += len;
        return v;
      }
      case TType.LIST:
      case TType.SET: {
        const header = this.#byte();
        let size = header >> 4;
        const elemType = header & 0x0f;
        if (size === 15) size = this.varint();
        this.#checkCount(size, type === TType.SET ? 'set' : 'list');
        const items: TValue[] = [];
        for (let i = 0; i < size; i++) items.push(this.#element(elemType, depth + 1));
        return { kind: 'list', elemType, items };
      }
      case TType.MAP: {
        const size = this.varint();
        this.#checkCount(size, 'map');
        const types = size > 0 ? this.#byte() : 0;
        const keyType = types >> 4;
        const valueType = types & 0x0f;
        const entries: [TValue, TValue][] = [];
        for (let i = 0; i < size; i++) entries.push([this.#element(keyType, depth + 1), this.#element(valueType, depth + 1)]);
        return { kind: 'map', keyType, valueType, entries };
      }
      case TType.STRUCT:
        return this.readStruct(depth + 1);
      default:
        throw new ThriftError(`unknown thrift type ${type} at ${this.pos - 1}`);
    }
  }

  /**
   * Every list, set or map element takes at least one byte, so a count beyond the bytes
   * left is corrupt; refusing it up front keeps a hostile footer from making us loop
   * (or allocate) billions of times before running out of bytes.
   */
  #checkCount(size: number, what: string): void {
    const left = this.bytes.byteLength - this.pos;
    if (size > left) throw new ThriftError(`thrift ${what}: collection of ${size} elements in ${left} bytes left at ${this.pos}`);
  }

  /** A list, set or map element: a boolean there is one byte (1 true, 2 false), not a type nibble. */
  #element(type: number, depth: number): TValue {
    if (type === TType.TRUE || type === TType.FALSE) return this.#byte() === TType.TRUE;
    return this.readValue(type, depth);
  }

  readStruct(depth = 0): TStruct {
    const s = new TStruct();
    let lastId = 0;
    for (;;) {
      const header = this.#byte();
      const type = header & 0x0f;
      if (type === TType.STOP) return s;
      const delta = header >> 4;
      const id = delta === 0 ? this.zigzag() : lastId + delta;
      lastId = id;
      s.fields.set(id, { type, value: this.readValue(type, depth) });
    }
  }
}

export class CompactWriter {
  #buf = new Uint8Array(1024);
  #len = 0;

  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.byteLength) return;
    let size = this.#buf.byteLength * 2;
    while (size < this.#len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
  }

  #byte(b: number): void {
    this.#ensure(1);
    this.#buf[this.#len++] = b & 0xff;
  }

  varint(n: number): void {
    while (n >= 0x80) {
      this.#byte((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.#byte(n);
  }

  varbig(n: bigint): void {
    while (n >= 0x80n) {
      this.#byte(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    this.#byte(Number(n));
  }

  zigzag(n: number): void {
    this.varint(n >= 0 ? n * 2 : -n * 2 - 1);
  }

  zigzagBig(n: bigint): void {
    this.varbig(n >= 0n ? n << 1n : (-n << 1n) - 1n);
  }

  writeValue(type: number, v: TValue): void {
    switch (type) {
      case TType.TRUE:
      case TType.FALSE:
        return;
      case TType.BYTE:
        this.#byte(v as number);
        return;
      case TType.I16:
      case TType.I32:
        this.zigzag(v as number);
        return;
      case TType.I64:
        this.zigzagBig(v as bigint);
        return;
      case TType.DOUBLE: {
        this.#ensure(8);
        new DataView(this.#buf.buffer).setFloat64(this.#len, v as number, true);
        this.#len += 8;
        return;
      }
      case TType.BINARY: {
        const b = v as Uint8Array;
        this.varint(b.byteLength);
        this.#ensure(b.byteLength);
        this.#buf.set(b, this.#len);
        this.#len += b.byteLength;
        return;
      }
      case TType.LIST:
      case TType.SET: {
        const l = v as TList;
        const n = l.items.length;
        if (n < 15) this.#byte((n << 4) | l.elemType);
        else {
          this.#byte(0xf0 | l.elemType);
          this.varint(n);
        }
        for (const item of l.items) this.#element(l.elemType, item);
        return;
      }
      case TType.MAP: {
        const m = v as TMap;
        this.varint(m.entries.length);
        if (m.entries.length > 0) this.#byte((m.keyType << 4) | m.valueType);
        for (const [k, val] of m.entries) {
          this.#element(m.keyType, k);
          this.#element(m.valueType, val);
        }
        return;
      }
      case TType.STRUCT:
        this.writeStruct(v as TStruct);
        return;
      default:
        throw new ThriftError(`cannot write thrift type ${type}`);
    }
  }

  #element(type: number, v: TValue): void {
    if (type === TType.TRUE || type === TType.FALSE) this.#byte(v === true ? TType.TRUE : TType.FALSE);
    else this.writeValue(type, v);
  }

  writeStruct(s: TStruct): void {
    let lastId = 0;
    for (const id of [...s.fields.keys()].sort((a, b) => a - b)) {
      const f = s.fields.get(id) as TField;
      let type = f.type;
      if (type === TType.TRUE || type === TType.FALSE) type = f.value === true ? TType.TRUE : TType.FALSE;
      const delta = id - lastId;
      if (delta > 0 && delta <= 15) this.#byte((delta << 4) | type);
      else {
        this.#byte(type);
        this.zigzag(id);
      }
      lastId = id;
      this.writeValue(type, f.value);
    }
    this.#byte(TType.STOP);
  }

  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

/** Typed field access on a generic struct; a wrong type reads as undefined. */
export function fieldNum(s: TStruct, id: number): number | undefined {
  const f = s.fields.get(id);
  if (!f) return undefined;
  if (typeof f.value === 'number') return f.value;
  if (typeof f.value === 'bigint') return Number(f.value);
  return undefined;
}

export function fieldBytes(s: TStruct, id: number): Uint8Array | undefined {
  const v = s.fields.get(id)?.value;
  return v instanceof Uint8Array ? v : undefined;
}

export function fieldStruct(s: TStruct, id: number): TStruct | undefined {
  const v = s.fields.get(id)?.value;
  return v instanceof TStruct ? v : undefined;
}

export function fieldList(s: TStruct, id: number): TValue[] | undefined {
  const v = s.fields.get(id)?.value;
  return v !== undefined && typeof v === 'object' && 'kind' in v && v.kind === 'list' ? v.items : undefined;
}

/** Shallow-copy a struct so one field can be replaced without touching the original. */
export function cloneStruct(s: TStruct): TStruct {
  const c = new TStruct();
  for (const [id, f] of s.fields) c.fields.set(id, f);
  return c;
}

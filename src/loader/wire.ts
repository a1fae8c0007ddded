import { Data, DataType, Table, UnionMode, tableFromIPC, tableToIPC } from 'apache-arrow';
import type { RecordBatch, Schema, Struct } from 'apache-arrow';
import { wrapBatch } from './record-batch.js';

/**
 * Moving RecordBatches between threads without copying their data.
 *
 * The sender lists every buffer the batches use: a buffer inside a large ArrayBuffer
 * travels by reference (the ArrayBuffer is transferred: detached on the sender, no copy),
 * a small one is copied into the message's own header buffer. The receiver rebuilds each
 * `Data` node as typed-array views at the same offsets, with the same `offset`, `length`
 * and null count, so a slice stays a slice and nothing is re-parsed.
 *
 * The sender must not touch the batches after packing them (their large buffers are
 * detached). Small ArrayBuffers are always copied: Node's Buffer pool hands out slices
 * of one shared 8 KiB ArrayBuffer, which must never be transferred.
 *
 * Types whose nodes point at something outside themselves (dictionaries, dense unions,
 * 64-bit offsets, views, run-end encoding) travel as Arrow IPC instead (`ipcBatches`).
 */

/** Typed array constructors, by the code the header stores (0 = no buffer). */
const CTORS = [
  undefined,
  Uint8Array,
  Int8Array,
  Uint16Array,
  Int16Array,
  Uint32Array,
  Int32Array,
  BigUint64Array,
  BigInt64Array,
  Float32Array,
  Float64Array,
  Uint8ClampedArray,
] as const;

type View = ArrayBufferView & { length: number };

/** ArrayBuffers up to this size are copied, never transferred (Node's Buffer pool slab is 8 KiB). */
const INLINE_MAX = 8192;

function ctorCode(a: ArrayBufferView): number {
  const i = CTORS.indexOf(a.constructor as (typeof CTORS)[number]);
  if (i <= 0) throw new TypeError(`Unexpected buffer type ${a.constructor.name}`);
  return i;
}

/** True when every node of `type` can travel as plain buffers (see the module comment). */
export function packable(type: DataType): boolean {
  if (DataType.isDictionary(type)) return false;
  if (DataType.isUnion(type) && (type as unknown as { mode: UnionMode }).mode === UnionMode.Dense) return false;
  if (/Large|View|RunEnd/.test(type.constructor.name)) return false;
  return (type.children ?? []).every((f) => packable(f.type as DataType));
}

/**
 * Packed batches: the header buffer (plus copies of small buffers), then the ArrayBuffers
 * moved with them. All of it goes in the transfer list; a flat array clones cheapest.
 */
export type WireBatches = ArrayBuffer[];

class Packer {
  readonly header: number[] = [0, 0];
  readonly inline: View[] = [];
  inlineBytes = 0;
  readonly bufs: ArrayBuffer[] = [];
  readonly #bufIndex = new Map<ArrayBuffer, number>();

  batch(b: RecordBatch): void {
    this.header.push(b.numRows);
    for (const c of b.data.children) this.#node(c);
  }

  #node(d: Data): void {
    this.header.push(d.offset, d.length, d.nullCount);
    this.#slot(d.valueOffsets as View | undefined);
    this.#slot(d.values as View | undefined);
    this.#slot(d.nullCount !== 0 ? (d.nullBitmap) : undefined);
    this.#slot(d.typeIds as View | undefined);
    for (const c of d.children) this.#node(c);
  }

  #slot(a: View | null | undefined): void {
    if (!a) {
      this.header.push(0, 0, 0, 0);
      return;
    }
    const code = ctorCode(a);
    const ab = a.buffer;
    if (ab instanceof ArrayBuffer && ab.byteLength > INLINE_MAX) {
      let idx = this.#bufIndex.get(ab);
      if (idx === undefined) {
        idx = this.bufs.length;
        this.bufs.push(ab);
        this.#bufIndex.set(ab, idx);
      }
      this.header.push(code, idx, a.byteOffset, a.length);
      return;
    }
    this.inlineBytes = (this.inlineBytes + 7) & ~7;
    this.header.push(code, -1, this.inlineBytes, a.length);
    this.inline.push(a);
    this.inlineBytes += a.byteLength;
  }
}

/** Pack `batches` for `postMessage(w, w)` (w in the transfer list too). The batches' large buffers are detached once sent. */
export function packBatches(batches: readonly RecordBatch[]): WireBatches {
  const p = new Packer();
  p.header[1] = batches.length;
  for (const b of batches) p.batch(b);
  const headerInts = p.header.length;
  p.header[0] = headerInts;
  const dataStart = (headerInts * 4 + 7) & ~7;
  const head = new ArrayBuffer(dataStart + p.inlineBytes);
  new Int32Array(head, 0, headerInts).set(p.header);
  const u8 = new Uint8Array(head);
  let at = 0;
  for (const a of p.inline) {
    at = (at + 7) & ~7;
    u8.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), dataStart + at);
    at += a.byteLength;
  }
  return [head, ...p.bufs];
}

/** Rebuild what `packBatches` packed, as views over the received buffers (no copy). */
export function unpackBatches(schema: Schema, structType: Struct, msg: WireBatches): RecordBatch[] {
  const head = msg[0] as ArrayBuffer;
  const headerInts = new Int32Array(head, 0, 1)[0] as number;
  const h = new Int32Array(head, 0, headerInts);
  const dataStart = (headerInts * 4 + 7) & ~7;
  let i = 2;
  const slot = (): View | undefined => {
    const code = h[i] as number;
    const idx = h[i + 1] as number;
    const off = h[i + 2] as number;
    const len = h[i + 3] as number;
    i += 4;
    if (code === 0) return undefined;
    const C = CTORS[code] as unknown as new (b: ArrayBuffer, o: number, l: number) => View;
    return idx < 0 ? new C(head, dataStart + off, len) : new C(msg[idx + 1] as ArrayBuffer, off, len);
  };
  const node = (type: DataType): Data => {
    const offset = h[i] as number;
    const length = h[i + 1] as number;
    const nullCount = h[i + 2] as number;
    i += 3;
    const buffers = [slot(), slot(), slot(), slot()];
    const children = (type.children ?? []).map((f) => node(f.type as DataType));
    return new Data(type, offset, length, nullCount, buffers as never, children);
  };
  const n = h[1] as number;
  const out: RecordBatch[] = [];
  for (let b = 0; b < n; b++) {
    const numRows = h[i++] as number;
    const children = schema.fields.map((f) => node(f.type as DataType));
    out.push(wrapBatch(schema, new Data(structType, 0, numRows, 0, [] as never, children)));
  }
  return out;
}

/** Arrow IPC stream bytes of batches: for schemas `packable` refuses. */
export function ipcBatches(batches: readonly RecordBatch[]): Uint8Array {
  return tableToIPC(new Table([...batches]), 'stream');
}

/** Rebuild `ipcBatches`. */
export function unipcBatches(bytes: Uint8Array): RecordBatch[] {
  return tableFromIPC(bytes).batches;
}

/** A schema as IPC bytes (schema message of an empty stream), for another thread. */
export function schemaToIpc(schema: Schema): Uint8Array {
  return tableToIPC(new Table(schema), 'stream');
}

export function schemaFromIpc(bytes: Uint8Array): Schema {
  return tableFromIPC(bytes).schema;
}

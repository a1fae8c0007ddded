/**
 * End-to-end page checksums: a worker computes the CRC-32 of each page once, when it
 * reads the page from the store; the CRC stays with the page in memory (here, keyed by
 * the page's array) and on disk (the page file's data CRC), and travels with every read
 * answer as a trailer, so the client can check the bytes it got against what the store
 * sent the worker.
 *
 * Wire form of a `/v1/read` asked with `crc=crc32`: the answer carries the header
 * `x-granary-crc32: <pageSize>` and its body is the range's bytes followed by one
 * little-endian u32 per piece, a piece being the part of one page the range covers (the
 * first and last may be partial). A trailer rather than a header: a 64 MiB read of 4 KiB
 * pages has 16384 pieces, too many for a header block, and a trailer needs no
 * chunked encoding since its length follows from the range and the page size.
 */
import { crc32 } from '../util/crc32.js';
import { ErrorCodes } from '../errors.js';
import type { WorkerInfo } from './membership.js';
import { pagesForRange } from './page-key.js';
import { WorkerFault } from './worker-errors.js';

/** The value of the `crc` query parameter that asks for checksums. */
export const CRC_ALGORITHM = 'crc32';
/** Bytes per checksum in the trailer. */
export const CRC_BYTES = 4;

/** CRCs of page arrays, computed once: a memory hit costs no checksum pass. */
const known = new WeakMap<Uint8Array, number>();

/** Record the CRC of a page (computed from the store's bytes, or read from its page file). */
export function rememberPageCrc(page: Uint8Array, crc: number): void {
  known.set(page, crc);
}

/** The CRC recorded for this page array, if any. */
export function knownPageCrc(page: Uint8Array): number | undefined {
  return known.get(page);
}

/** A copy of a page carries its original's CRC (the page store copies what it keeps). */
export function inheritPageCrc(from: Uint8Array, to: Uint8Array): void {
  const crc = known.get(from);
  if (crc !== undefined) known.set(to, crc);
}

/** The page's CRC: the recorded one, or computed now and recorded. */
export function pageCrc(page: Uint8Array): number {
  let crc = known.get(page);
  if (crc === undefined) {
    crc = crc32(page);
    known.set(page, crc);
  }
  return crc;
}

/** CRC of a piece: the page's own when the piece is the whole page, else computed over the piece. */
export function pieceCrc(page: Uint8Array, from: number, take: number): number {
  if (from === 0 && take === page.byteLength) return pageCrc(page);
  return crc32(page.subarray(from, from + take));
}

/** Pieces of `[offset, offset + length)` at page boundaries. */
export function pieceCount(offset: number, length: number, pageSize: number): number {
  return pagesForRange(offset, length, pageSize).count;
}

/** The trailer for these CRCs. */
export function encodeTrailer(crcs: readonly number[]): Buffer {
  const out = Buffer.allocUnsafe(crcs.length * CRC_BYTES);
  for (let i = 0; i < crcs.length; i++) out.writeUInt32LE((crcs[i] as number) >>> 0, i * CRC_BYTES);
  return out;
}

/**
 * Check `bytes` (the range `[offset, offset + bytes.byteLength)`) against a trailer.
 * Returns the indices of the pages whose piece does not match (empty: all good).
 */
export function badPages(bytes: Uint8Array, offset: number, pageSize: number, trailer: Uint8Array): number[] {
  const { first, count } = pagesForRange(offset, bytes.byteLength, pageSize);
  const bad: number[] = [];
  if (trailer.byteLength !== count * CRC_BYTES) {
    for (let i = 0; i < count; i++) bad.push(first + i);
    return bad;
  }
  const view = new DataView(trailer.buffer, trailer.byteOffset, trailer.byteLength);
  let pos = 0;
  for (let i = 0; i < count; i++) {
    const pageEnd = (first + i + 1) * pageSize - offset;
    const end = Math.min(bytes.byteLength, pageEnd);
    if (crc32(bytes.subarray(pos, end)) !== view.getUint32(i * CRC_BYTES, true)) bad.push(first + i);
    pos = end;
  }
  return bad;
}

/** The page size an `x-granary-crc32` header names, or undefined when it is absent or malformed. */
export function parseCrcHeader(value: unknown): number | undefined {
  if (typeof value !== 'string' || !/^[1-9][0-9]{0,9}$/.test(value)) return undefined;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * A worker's read answer failed its checksum, or came without one: `GRANARY_ERR_CORRUPT`
 * as a worker fault, so the client reads the part from the store (or the next replica)
 * and reports `pages` to the worker.
 */
export class ChecksumFault extends WorkerFault {
  override name = 'ChecksumFault';
  readonly code = ErrorCodes.CORRUPT;
  constructor(
    message: string,
    readonly worker: WorkerInfo,
    readonly url: string,
    readonly etag: string,
    /** Page indices of the version whose bytes are bad. */
    readonly pages: readonly number[],
  ) {
    super(`${ErrorCodes.CORRUPT}: ${message}`);
  }
}

/**
 * Check a read answer: `pageSize` from its `x-granary-crc32` header (undefined when
 * absent), `trailer` the CRCs after the bytes. Throws `ChecksumFault` naming the bad pages.
 */
export function verifyReadAnswer(
  w: WorkerInfo,
  r: { url: string; etag: string; offset: number; length: number; out: Uint8Array; at: number },
  pageSize: number | undefined,
  trailer: Uint8Array | undefined,
): void {
  if (pageSize === undefined || trailer === undefined) {
    throw new ChecksumFault(`worker ${w.id} answered ${r.url} without page checksums`, w, r.url, r.etag, pagesOf(r.offset, r.length, pageSize));
  }
  const bad = badPages(r.out.subarray(r.at, r.at + r.length), r.offset, pageSize, trailer);
  if (bad.length > 0) {
    throw new ChecksumFault(`worker ${w.id} sent ${r.url} bytes ${r.offset}+${r.length} whose checksum does not match (pages ${bad.slice(0, 8).join(', ')}${bad.length > 8 ? ', ...' : ''})`, w, r.url, r.etag, bad);
  }
}

/** Page indices a range covers; without a page size (the worker sent none) nothing can be named. */
function pagesOf(offset: number, length: number, pageSize: number | undefined): number[] {
  if (pageSize === undefined) return [];
  const { first, count } = pagesForRange(offset, length, pageSize);
  return Array.from({ length: count }, (_, i) => first + i);
}

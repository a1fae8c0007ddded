import { crc32 } from '../util/crc32.js';
import { knownPageCrc, rememberPageCrc } from './page-checksum.js';
import type { PageKey } from './page-key.js';

/**
 * The on-disk format of one cached page. One file per page, written to a temp file
 * and renamed into place, so a reader sees a whole old file or a whole new one.
 *
 * ```
 * offset size
 *  0     4    magic "GRPG"
 *  4     2    format version (1)
 *  6     2    fixed header length (32)
 *  8     4    page size of the store that wrote it
 * 12     4    key length in bytes (UTF-8)
 * 16     4    data length in bytes
 * 20     4    CRC-32 of the data
 * 24     4    reserved (0)
 * 28     4    CRC-32 of bytes 0..27 and the key
 * 32     k    the page key (UTF-8), so recovery knows what the file holds
 * 32+k   n    the page's bytes
 * ```
 *
 * Little-endian. The store's page size is in the header because a page index means
 * nothing without it: a store reopened with another page size must not serve these.
 * Without fsync, a power loss can leave a renamed file with missing data; the CRCs
 * catch that as they catch bit rot, and the page is refetched.
 */

export const PAGE_FILE_MAGIC = 0x47505247; // "GRPG" read as little-endian u32
export const PAGE_FILE_VERSION = 1;
export const PAGE_HEADER_BYTES = 32;
/** Longer keys (URLs) than this are refused on recovery as garbage. */
export const MAX_KEY_BYTES = 64 * 1024;

export interface PageHeader {
  pageSize: number;
  keyLength: number;
  dataLength: number;
  dataCrc: number;
  headerCrc: number;
}

/** The header and key bytes to write before `data`. */
export function encodePageHeader(key: PageKey, data: Uint8Array, pageSize: number): { header: Buffer; keyBytes: Buffer } {
  const keyBytes = Buffer.from(key, 'utf8');
  const header = Buffer.alloc(PAGE_HEADER_BYTES);
  header.writeUInt32LE(PAGE_FILE_MAGIC, 0);
  header.writeUInt16LE(PAGE_FILE_VERSION, 4);
  header.writeUInt16LE(PAGE_HEADER_BYTES, 6);
  header.writeUInt32LE(pageSize, 8);
  header.writeUInt32LE(keyBytes.length, 12);
  header.writeUInt32LE(data.byteLength, 16);
  // The CRC computed when the page came from the store, so the file's CRC checks the
  // bytes end to end rather than whatever memory holds now.
  header.writeUInt32LE(knownPageCrc(data) ?? crc32(data), 20);
  header.writeUInt32LE(0, 24);
  header.writeUInt32LE(crc32(keyBytes, crc32(header.subarray(0, 28))), 28);
  return { header, keyBytes };
}

/** The size on disk of a page file for this key and data length. */
export function pageFileBytes(key: PageKey, dataLength: number): number {
  return PAGE_HEADER_BYTES + Buffer.byteLength(key, 'utf8') + dataLength;
}

/** Parse the fixed header; `string` says why it is not a page file header. */
export function parsePageHeader(buf: Uint8Array): PageHeader | string {
  if (buf.byteLength < PAGE_HEADER_BYTES) return `file is ${buf.byteLength} bytes, shorter than the ${PAGE_HEADER_BYTES}-byte header`;
  const view = Buffer.from(buf.buffer, buf.byteOffset, PAGE_HEADER_BYTES);
  if (view.readUInt32LE(0) !== PAGE_FILE_MAGIC) return 'bad magic';
  if (view.readUInt16LE(4) !== PAGE_FILE_VERSION) return `unknown format version ${view.readUInt16LE(4)}`;
  if (view.readUInt16LE(6) !== PAGE_HEADER_BYTES) return `bad header length ${view.readUInt16LE(6)}`;
  const keyLength = view.readUInt32LE(12);
  if (keyLength === 0 || keyLength > MAX_KEY_BYTES) return `bad key length ${keyLength}`;
  return {
    pageSize: view.readUInt32LE(8),
    keyLength,
    dataLength: view.readUInt32LE(16),
    dataCrc: view.readUInt32LE(20),
    headerCrc: view.readUInt32LE(28),
  };
}

/** Check the header CRC given the fixed header and the key bytes that follow it. */
export function headerCrcMatches(fixed: Uint8Array, keyBytes: Uint8Array, expected: number): boolean {
  return crc32(keyBytes, crc32(fixed.subarray(0, 28))) === expected;
}

/**
 * Decode a whole page file and verify it: structure, both CRCs, the store's page
 * size, and that it holds `expectedKey`. Returns the page bytes (a view into `file`),
 * or a string saying what is wrong.
 */
export function decodePageFile(file: Uint8Array, expectedKey: PageKey, pageSize: number): Uint8Array | string {
  const h = parsePageHeader(file);
  if (typeof h === 'string') return h;
  const total = PAGE_HEADER_BYTES + h.keyLength + h.dataLength;
  if (file.byteLength !== total) return `file is ${file.byteLength} bytes, header says ${total}`;
  const keyBytes = file.subarray(PAGE_HEADER_BYTES, PAGE_HEADER_BYTES + h.keyLength);
  if (!headerCrcMatches(file, keyBytes, h.headerCrc)) return 'header checksum mismatch';
  if (h.pageSize !== pageSize) return `written with page size ${h.pageSize}, store uses ${pageSize}`;
  if (h.dataLength > pageSize) return `data length ${h.dataLength} exceeds page size ${pageSize}`;
  if (Buffer.from(keyBytes.buffer, keyBytes.byteOffset, keyBytes.byteLength).toString('utf8') !== expectedKey) {
    return 'file holds another key';
  }
  // A plain Uint8Array view (not a Buffer), like the pages the memory tier returns.
  const data = new Uint8Array(file.buffer, file.byteOffset + PAGE_HEADER_BYTES + h.keyLength, h.dataLength);
  if (crc32(data) !== h.dataCrc) return 'data checksum mismatch';
  rememberPageCrc(data, h.dataCrc);
  return data;
}

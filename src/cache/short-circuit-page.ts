/**
 * One page read straight from a worker's short-circuit tier: open, one scatter read
 * (header and key into a small buffer, the data straight into the caller's buffer),
 * close, on libuv's thread pool. The file is trusted for nothing: its header, the
 * key it holds, the page size, the data length the object's size implies and the data
 * CRC are all checked before its bytes count.
 */
import { close, open, readv } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from '../util/crc32.js';
import { PAGE_HEADER_BYTES, headerCrcMatches, parsePageHeader } from './page-file.js';
import { pageFileName, type PageKey } from './page-key.js';

/** Where one page's bytes go, and what the file must hold. */
export interface ShmPageRead {
  /** The tier's directory. */
  dir: string;
  pageSize: number;
  /** The page it must hold: `pageKey(url, etag, pageIndex)` of the version asked for. */
  key: PageKey;
  /** The data length this page of the version has (the last page may be short). */
  dataLength: number;
  /** Receives the page's data; exactly `dataLength` bytes. */
  into: Uint8Array;
}

function openFile(path: string): Promise<number> {
  return new Promise((resolve, reject) => open(path, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
}

function readAll(fd: number, buffers: Uint8Array[]): Promise<number> {
  return new Promise((resolve, reject) => readv(fd, buffers, 0, (err, n) => (err ? reject(err) : resolve(n))));
}

function closeFile(fd: number): void {
  close(fd, () => undefined);
}

/** The path of a page file in a tier's directory (the page store's own layout). */
export function shmPagePath(dir: string, name: string): string {
  return join(dir, 'pages', name.slice(0, 2), name);
}

/**
 * Read and verify one page into `r.into`. Resolves `undefined` when the page is good,
 * or why it cannot be used (absent, unreadable, corrupt, another key); then `r.into`
 * holds garbage and the caller reads the bytes another way.
 */
export async function readShmPage(r: ShmPageRead): Promise<string | undefined> {
  const key = r.key;
  const keyBytes = Buffer.from(key, 'utf8');
  const head = Buffer.allocUnsafe(PAGE_HEADER_BYTES + keyBytes.byteLength);
  let fd: number;
  try {
    fd = await openFile(shmPagePath(r.dir, pageFileName(key)));
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'open failed';
  }
  let n: number;
  try {
    n = await readAll(fd, [head, r.into]);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'read failed';
  } finally {
    closeFile(fd);
  }
  if (n !== head.byteLength + r.dataLength) return `file holds ${n - head.byteLength} data bytes, expected ${r.dataLength}`;
  const h = parsePageHeader(head);
  if (typeof h === 'string') return h;
  if (h.keyLength !== keyBytes.byteLength || !headerCrcMatches(head, keyBytes, h.headerCrc)) return 'header checksum mismatch';
  if (!keyBytes.equals(head.subarray(PAGE_HEADER_BYTES))) return 'file holds another key';
  if (h.pageSize !== r.pageSize) return `written with page size ${h.pageSize}, expected ${r.pageSize}`;
  if (h.dataLength !== r.dataLength) return `data length ${h.dataLength}, expected ${r.dataLength}`;
  if (crc32(r.into) !== h.dataCrc) return 'data checksum mismatch';
  return undefined;
}

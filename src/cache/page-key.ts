import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../errors.js';

/** The default page size: 1 MiB. Pages are the unit of caching, eviction and transfer. */
export const DEFAULT_PAGE_SIZE = 1024 * 1024;

/**
 * The identity of one cached page: one object version (URL + ETag) and a page index.
 * A branded string so a store can only be asked with keys that `pageKey` built.
 *
 * The encoding is a JSON array `[url, etag, pageIndex]`: unambiguous whatever
 * characters the URL or the ETag hold, stable across processes and releases (page
 * files on disk record it in their header, so warm restart depends on it), and cheap
 * to parse back.
 */
export type PageKey = string & { readonly __brand: 'granary.PageKey' };

/** The parts of a `PageKey`. */
export interface PageKeyParts {
  url: string;
  etag: string;
  pageIndex: number;
}

/**
 * The key of page `pageIndex` of the object version `(url, etag)`.
 *
 * @example
 * const key = pageKey('s3://bucket/train/part-0.parquet', '9b2cf535f27731c974343645a3985328', 3);
 * await store.get(key);
 */
export function pageKey(url: string, etag: string, pageIndex: number): PageKey {
  if (typeof url !== 'string' || url.length === 0) {
    throw new InvalidArgumentError(`Expected \`url\` to be a non-empty string, got \`${String(url)}\` (${typeof url})`);
  }
  if (typeof etag !== 'string') {
    throw new InvalidArgumentError(`Expected \`etag\` of ${url} to be a string, got \`${String(etag)}\` (${typeof etag})`, { url });
  }
  if (!Number.isSafeInteger(pageIndex) || pageIndex < 0) {
    throw new InvalidArgumentError(`Expected \`pageIndex\` of ${url} to be an integer from 0 and up, got \`${pageIndex}\` (${typeof pageIndex})`, { url });
  }
  return JSON.stringify([url, etag, pageIndex]) as PageKey;
}

/** The parts of a key; throws `GRANARY_ERR_INVALID_ARGUMENT` for a string `pageKey` did not make. */
export function parsePageKey(key: string): PageKeyParts {
  const parts = tryParsePageKey(key);
  if (parts === undefined) throw new InvalidArgumentError(`Not a page key: ${JSON.stringify(key).slice(0, 200)}`);
  return parts;
}

/** Like `parsePageKey`, but `undefined` for a malformed key (used when recovering page files). */
export function tryParsePageKey(key: string): PageKeyParts | undefined {
  let v: unknown;
  try {
    v = JSON.parse(key);
  } catch {
    return undefined;
  }
  if (!Array.isArray(v) || v.length !== 3) return undefined;
  const [url, etag, pageIndex] = v as unknown[];
  if (typeof url !== 'string' || url.length === 0 || typeof etag !== 'string') return undefined;
  if (typeof pageIndex !== 'number' || !Number.isSafeInteger(pageIndex) || pageIndex < 0) return undefined;
  // Only the canonical encoding is a key: the same page must never have two spellings.
  if (JSON.stringify([url, etag, pageIndex]) !== key) return undefined;
  return { url, etag, pageIndex };
}

/**
 * A filename-safe, fixed-length name for a page file: hex SHA-256 of the key,
 * truncated to 128 bits (collisions are out of reach, and the header's full key is
 * compared on every read anyway). URLs are too long and too free-form for file names.
 */
export function pageFileName(key: PageKey): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 32) + '.page';
}

/** Validate a page size option: a safe integer from 1 and up (1 MiB unless told). */
export function checkPageSize(pageSize: unknown, option = 'pageSize'): number {
  if (typeof pageSize !== 'number' || !Number.isSafeInteger(pageSize) || pageSize < 1 || pageSize > 0x7fff_ffff) {
    throw new InvalidArgumentError(`Expected \`${option}\` to be an integer from 1 to ${0x7fff_ffff}, got \`${String(pageSize)}\` (${typeof pageSize})`);
  }
  return pageSize;
}

/** The number of pages of an object of `size` bytes (the last may be short). */
export function pageCount(size: number, pageSize: number = DEFAULT_PAGE_SIZE): number {
  return Math.ceil(size / pageSize);
}

/**
 * The pages that cover the byte range `[offset, offset + length)`: the first page
 * index and how many pages. An empty range covers no pages.
 *
 * @example
 * pagesForRange(1.5 * MiB, 1 * MiB, MiB) // { first: 1, count: 2 }
 */
export function pagesForRange(offset: number, length: number, pageSize: number = DEFAULT_PAGE_SIZE): { first: number; count: number } {
  if (length <= 0) return { first: Math.floor(offset / pageSize), count: 0 };
  const first = Math.floor(offset / pageSize);
  const last = Math.floor((offset + length - 1) / pageSize);
  return { first, count: last - first + 1 };
}

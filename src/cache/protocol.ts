/**
 * The wire protocol between `CacheClient` and cache workers. Both sides import
 * these names, so a change here is a change on both ends.
 */
import { ErrorCodes, type GranaryErrorCode } from '../errors.js';

export const PROTOCOL_VERSION = 1;

export const Paths = {
  read: '/v1/read',
  stat: '/v1/stat',
  list: '/v1/list',
  load: '/v1/load',
  jobs: '/v1/jobs/',
  invalidate: '/v1/invalidate',
  hints: '/v1/hints',
  touch: '/v1/touch',
  /** A client reports pages whose bytes failed their checksum; the worker drops them. */
  corrupt: '/v1/corrupt',
  info: '/v1/info',
  health: '/healthz',
  metrics: '/metrics',
} as const;

export const Headers = {
  /** The version of the object whose bytes the body holds. */
  etag: 'x-granary-etag',
  /** Whether the bytes came from the worker's cache (`hit`), partly (`partial`) or all from the store (`miss`). */
  cache: 'x-granary-cache',
  /** Milliseconds since the worker fetched the metadata it returned (bounds end-to-end staleness). */
  age: 'x-granary-age',
  /** The worker's id. */
  worker: 'x-granary-worker',
  /** On a read asked with `crc=crc32`: the worker's page size; the body ends with a CRC-32 per page piece (src/cache/page-checksum.ts). */
  crc: 'x-granary-crc32',
} as const;

/**
 * The query of a `/v1/read`: `size` only when the client knows the version's size (the
 * worker then trusts the version), `crc` when the client checks page checksums.
 */
export function readQuery(r: { url: string; etag: string; size?: number | undefined; offset: number; length: number }, crc?: string): Record<string, string> {
  const q: Record<string, string> = { url: r.url, etag: r.etag, offset: String(r.offset), length: String(r.length) };
  if (r.size !== undefined) q.size = String(r.size);
  if (crc !== undefined) q.crc = crc;
  return q;
}

/** HTTP status for each error code a worker can answer with. */
export function statusForCode(code: GranaryErrorCode): number {
  switch (code) {
    case ErrorCodes.INVALID_URL:
    case ErrorCodes.UNSUPPORTED_SCHEME:
    case ErrorCodes.INVALID_ARGUMENT:
    case ErrorCodes.BAD_REQUEST:
    case ErrorCodes.PATH_ESCAPE:
    case ErrorCodes.UNSUPPORTED_OPERATION:
    case ErrorCodes.RANGE_TOO_LARGE:
      return 400;
    case ErrorCodes.UNAUTHORIZED:
      return 401;
    case ErrorCodes.ACCESS_DENIED:
    case ErrorCodes.FORBIDDEN_PREFIX:
      return 403;
    case ErrorCodes.NOT_FOUND:
    case ErrorCodes.NO_SUCH_BUCKET:
      return 404;
    case ErrorCodes.VERSION_CHANGED:
      return 412;
    case ErrorCodes.RANGE:
      return 416;
    case ErrorCodes.CLOSED:
    case ErrorCodes.UNAVAILABLE:
    case ErrorCodes.BUSY:
      return 503;
    case ErrorCodes.TIMEOUT:
      return 504;
    default:
      return 500;
  }
}

/** Whether an answer with this status means the worker (not the request) is at fault: the client falls back. */
export function isWorkerFault(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

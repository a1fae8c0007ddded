/** S3 failures (SDK exceptions, or the lean client's errors of the same shape) mapped to granary's coded errors. */
import {
  AccessDeniedError,
  GranaryError,
  InternalError,
  InvalidArgumentError,
  NoSuchBucketError,
  NotFoundError,
  RangeNotSatisfiableError,
  TimeoutError,
  UnavailableError,
  VersionChangedError,
  isRetryableError,
} from '../../errors.js';

const RETRYABLE_S3_CODES = new Set([
  'SlowDown',
  'InternalError',
  'ServiceUnavailable',
  'RequestTimeout',
  'Throttling',
  'ThrottlingException',
  'RequestLimitExceeded',
  'TooManyRequestsException',
]);
const ACCESS_CODES = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'Forbidden', 'InvalidToken', 'ExpiredToken']);
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

/** What an S3 failure looks like: the SDK's `ServiceException`, or the lean client's `S3ResponseError`. */
export interface S3ErrorShape {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: number };
}

/** `"abc"` and `W/"abc"` → `abc`. */
export function normalizeEtag(etag: string | undefined): string | undefined {
  if (etag === undefined) return undefined;
  let e = etag.trim();
  if (e.startsWith('W/')) e = e.slice(2);
  if (e.length >= 2 && e.startsWith('"') && e.endsWith('"')) e = e.slice(1, -1);
  return e;
}

export function parseContentRange(v: string | undefined): { start: number; end: number; total: number | undefined } | undefined {
  if (!v) return undefined;
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(v.trim());
  if (!m?.[1] || !m[2] || !m[3]) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

export interface MapContext {
  url: string;
  op: string;
  attempt: number;
  maxAttempts: number;
  endpoint: string;
}

export function mapS3Error(err: unknown, ctx: MapContext): unknown {
  if (err instanceof GranaryError) return err;
  const { url, op, attempt, maxAttempts, endpoint } = ctx;
  const e = (err ?? {}) as S3ErrorShape;
  const name = typeof e.name === 'string' ? e.name : '';
  const code = typeof e.code === 'string' ? e.code : '';
  const status = e.$metadata?.httpStatusCode;
  const detail = `${name}${status !== undefined ? ` (HTTP ${status})` : ''}${typeof e.message === 'string' && e.message && e.message !== name ? `: ${e.message}` : ''}`;
  const where = `S3 ${op} of ${url} at ${endpoint}`;
  const opts = { url, cause: err };
  if (name === 'NoSuchBucket') return new NoSuchBucketError(`${where} failed: bucket does not exist (${detail})`, opts);
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return new NotFoundError(`${where} failed: no such object (${detail})`, opts);
  if (ACCESS_CODES.has(name) || status === 403 || status === 401 || name === 'CredentialsProviderError') {
    return new AccessDeniedError(`${where} was denied: ${detail}`, opts);
  }
  if (name === 'PreconditionFailed' || status === 412) return new VersionChangedError(`${where} failed: the object changed (If-Match did not hold: ${detail})`, opts);
  if (name === 'InvalidRange' || status === 416) return new RangeNotSatisfiableError(`${where} failed: range not satisfiable (${detail})`, opts);
  const retryable =
    RETRYABLE_S3_CODES.has(name) ||
    (status !== undefined && (status >= 500 || status === 429)) ||
    NETWORK_CODES.has(code) ||
    isRetryableError(err) ||
    name === 'TimeoutError';
  if (retryable) {
    const msg = `${where} failed on attempt ${attempt} of ${maxAttempts}: ${detail || code || String(err)}`;
    return name === 'TimeoutError' || code === 'ETIMEDOUT' ? new TimeoutError(msg, opts) : new UnavailableError(msg, opts);
  }
  if (status !== undefined && status >= 400) return new InvalidArgumentError(`${where} was rejected: ${detail}`, opts);
  return new InternalError(`${where} failed unexpectedly: ${detail || String(err)}`, opts);
}

/**
 * Every error granary throws has a class, a `name` and a stable literal `code`.
 * Codes survive worker threads and HTTP: `errorFromCode` rebuilds the class from
 * `{ code, message }` on the other side.
 */

export const ErrorCodes = {
  INVALID_URL: 'GRANARY_ERR_INVALID_URL',
  UNSUPPORTED_SCHEME: 'GRANARY_ERR_UNSUPPORTED_SCHEME',
  INVALID_ARGUMENT: 'GRANARY_ERR_INVALID_ARGUMENT',
  NOT_FOUND: 'GRANARY_ERR_NOT_FOUND',
  NO_SUCH_BUCKET: 'GRANARY_ERR_NO_SUCH_BUCKET',
  ACCESS_DENIED: 'GRANARY_ERR_ACCESS_DENIED',
  VERSION_CHANGED: 'GRANARY_ERR_VERSION_CHANGED',
  RANGE: 'GRANARY_ERR_RANGE',
  PATH_ESCAPE: 'GRANARY_ERR_PATH_ESCAPE',
  TIMEOUT: 'GRANARY_ERR_TIMEOUT',
  UNAVAILABLE: 'GRANARY_ERR_UNAVAILABLE',
  CLOSED: 'GRANARY_ERR_CLOSED',
  CORRUPT: 'GRANARY_ERR_CORRUPT',
  DECODE: 'GRANARY_ERR_DECODE',
  SCHEMA_MISMATCH: 'GRANARY_ERR_SCHEMA_MISMATCH',
  UNKNOWN_COLUMN: 'GRANARY_ERR_UNKNOWN_COLUMN',
  BAD_REQUEST: 'GRANARY_ERR_BAD_REQUEST',
  FORBIDDEN_PREFIX: 'GRANARY_ERR_FORBIDDEN_PREFIX',
  UNAUTHORIZED: 'GRANARY_ERR_UNAUTHORIZED',
  CONFIG: 'GRANARY_ERR_CONFIG',
  INTERNAL: 'GRANARY_ERR_INTERNAL',
  UNSUPPORTED_OPERATION: 'GRANARY_ERR_UNSUPPORTED_OPERATION',
  MISSING_DEPENDENCY: 'GRANARY_ERR_MISSING_DEPENDENCY',
  ALREADY_EXISTS: 'GRANARY_ERR_ALREADY_EXISTS',
  BUSY: 'GRANARY_ERR_BUSY',
  RANGE_TOO_LARGE: 'GRANARY_ERR_RANGE_TOO_LARGE',
} as const;

export type GranaryErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface GranaryErrorOptions {
  /** The store URL (or file) the error is about, when there is one. */
  url?: string | undefined;
  cause?: unknown;
}

export class GranaryError extends Error {
  readonly code: GranaryErrorCode;
  readonly url: string | undefined;

  constructor(code: GranaryErrorCode, message: string, options: GranaryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GranaryError';
    this.code = code;
    this.url = options.url;
  }

  toJSON(): { code: GranaryErrorCode; message: string; url?: string } {
    return this.url === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, url: this.url };
  }
}

function defineError<C extends GranaryErrorCode>(name: string, code: C) {
  const cls = class extends GranaryError {
    declare readonly code: C;
    constructor(message: string, options: GranaryErrorOptions = {}) {
      super(code, message, options);
      this.name = name;
    }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

/** The URL cannot be parsed, or names no object where one is required. */
export const InvalidUrlError = defineError('InvalidUrlError', ErrorCodes.INVALID_URL);
/** The URL's scheme has no adapter (only s3://, file://, http(s):// do). */
export const UnsupportedSchemeError = defineError('UnsupportedSchemeError', ErrorCodes.UNSUPPORTED_SCHEME);
/** An option or argument is out of its domain (negative offset, NaN length, unknown option value). */
export const InvalidArgumentError = defineError('InvalidArgumentError', ErrorCodes.INVALID_ARGUMENT);
/** The object does not exist in the store. */
export const NotFoundError = defineError('NotFoundError', ErrorCodes.NOT_FOUND);
/** The bucket does not exist. */
export const NoSuchBucketError = defineError('NoSuchBucketError', ErrorCodes.NO_SUCH_BUCKET);
/** The store refused the credentials or the operation (HTTP 401/403). */
export const AccessDeniedError = defineError('AccessDeniedError', ErrorCodes.ACCESS_DENIED);
/** The object changed since its version (ETag) was taken: HTTP 412 or a mismatched ETag. */
export const VersionChangedError = defineError('VersionChangedError', ErrorCodes.VERSION_CHANGED);
/** The requested byte range is not inside the object. */
export const RangeNotSatisfiableError = defineError('RangeNotSatisfiableError', ErrorCodes.RANGE);
/** A file:// path resolves outside the configured root (`..`, a symlink out, a path beyond root). */
export const PathEscapeError = defineError('PathEscapeError', ErrorCodes.PATH_ESCAPE);
/** A call did not finish within its timeout. Retryable. */
export const TimeoutError = defineError('TimeoutError', ErrorCodes.TIMEOUT);
/** The store or a worker is unreachable or failing (connection reset, 5xx after retries). Retryable. */
export const UnavailableError = defineError('UnavailableError', ErrorCodes.UNAVAILABLE);
/** The object was used after `close()`. */
export const ClosedError = defineError('ClosedError', ErrorCodes.CLOSED);
/** Data failed a checksum or structural check (a corrupt page, a truncated Parquet footer). */
export const CorruptDataError = defineError('CorruptDataError', ErrorCodes.CORRUPT);
/** The decoder could not decode a file or partition. */
export const DecodeError = defineError('DecodeError', ErrorCodes.DECODE);
/** Files of one dataset disagree on their schema. */
export const SchemaMismatchError = defineError('SchemaMismatchError', ErrorCodes.SCHEMA_MISMATCH);
/** A requested column is not in the dataset's schema. */
export const UnknownColumnError = defineError('UnknownColumnError', ErrorCodes.UNKNOWN_COLUMN);
/** A malformed request reached a cache worker. */
export const BadRequestError = defineError('BadRequestError', ErrorCodes.BAD_REQUEST);
/** A worker was asked for a URL outside its `allow` prefixes. */
export const ForbiddenPrefixError = defineError('ForbiddenPrefixError', ErrorCodes.FORBIDDEN_PREFIX);
/** A worker request lacked the bearer token. */
export const UnauthorizedError = defineError('UnauthorizedError', ErrorCodes.UNAUTHORIZED);
/** Configuration (flags, environment, file) is invalid. */
export const ConfigError = defineError('ConfigError', ErrorCodes.CONFIG);
/** A bug or an unexpected state inside granary. */
export const InternalError = defineError('InternalError', ErrorCodes.INTERNAL);
/** The store does not support the operation (writing or deleting through a read-only HTTP store). */
export const UnsupportedOperationError = defineError('UnsupportedOperationError', ErrorCodes.UNSUPPORTED_OPERATION);
/** An optional npm package that a tool needs is not installed (the message says which, and how to install it). */
export const MissingDependencyError = defineError('MissingDependencyError', ErrorCodes.MISSING_DEPENDENCY);
/** Something else already holds the place asked for (a CSI target published with different arguments). */
export const AlreadyExistsError = defineError('AlreadyExistsError', ErrorCodes.ALREADY_EXISTS);
/** A worker is at its limit of concurrent requests (in total or on one connection): HTTP 503 with Retry-After. Clients read the store instead. */
export const WorkerBusyError = defineError('WorkerBusyError', ErrorCodes.BUSY);
/** A read request asked a worker for more bytes than its `maxReadBytes`: HTTP 400. Clients read the store instead. */
export const RangeTooLargeError = defineError('RangeTooLargeError', ErrorCodes.RANGE_TOO_LARGE);

const byCode: Record<GranaryErrorCode, new (message: string, options?: GranaryErrorOptions) => GranaryError> = {
  [ErrorCodes.INVALID_URL]: InvalidUrlError,
  [ErrorCodes.UNSUPPORTED_SCHEME]: UnsupportedSchemeError,
  [ErrorCodes.INVALID_ARGUMENT]: InvalidArgumentError,
  [ErrorCodes.NOT_FOUND]: NotFoundError,
  [ErrorCodes.NO_SUCH_BUCKET]: NoSuchBucketError,
  [ErrorCodes.ACCESS_DENIED]: AccessDeniedError,
  [ErrorCodes.VERSION_CHANGED]: VersionChangedError,
  [ErrorCodes.RANGE]: RangeNotSatisfiableError,
  [ErrorCodes.PATH_ESCAPE]: PathEscapeError,
  [ErrorCodes.TIMEOUT]: TimeoutError,
  [ErrorCodes.UNAVAILABLE]: UnavailableError,
  [ErrorCodes.CLOSED]: ClosedError,
  [ErrorCodes.CORRUPT]: CorruptDataError,
  [ErrorCodes.DECODE]: DecodeError,
  [ErrorCodes.SCHEMA_MISMATCH]: SchemaMismatchError,
  [ErrorCodes.UNKNOWN_COLUMN]: UnknownColumnError,
  [ErrorCodes.BAD_REQUEST]: BadRequestError,
  [ErrorCodes.FORBIDDEN_PREFIX]: ForbiddenPrefixError,
  [ErrorCodes.UNAUTHORIZED]: UnauthorizedError,
  [ErrorCodes.CONFIG]: ConfigError,
  [ErrorCodes.INTERNAL]: InternalError,
  [ErrorCodes.UNSUPPORTED_OPERATION]: UnsupportedOperationError,
  [ErrorCodes.MISSING_DEPENDENCY]: MissingDependencyError,
  [ErrorCodes.ALREADY_EXISTS]: AlreadyExistsError,
  [ErrorCodes.BUSY]: WorkerBusyError,
  [ErrorCodes.RANGE_TOO_LARGE]: RangeTooLargeError,
};

export function isGranaryErrorCode(code: unknown): code is GranaryErrorCode {
  return typeof code === 'string' && Object.hasOwn(byCode, code);
}

/** Rebuild a coded error that crossed a thread or HTTP boundary. Unknown codes become `InternalError`. */
export function errorFromCode(code: string, message: string, url?: string): GranaryError {
  const cls = isGranaryErrorCode(code) ? byCode[code] : InternalError;
  return new cls(message, { url });
}

export function isGranaryError(err: unknown): err is GranaryError {
  return err instanceof GranaryError;
}

/**
 * Whether trying again (or elsewhere) may succeed. The cache client's fallback
 * and the S3 adapter's retry loop both ask this, like etcd3's `isRecoverableError`.
 */
export function isRetryableError(err: unknown): boolean {
  if (err instanceof GranaryError) {
    return err.code === ErrorCodes.TIMEOUT || err.code === ErrorCodes.UNAVAILABLE;
  }
  const code = (err as { code?: unknown } | null)?.code;
  return (
    typeof code === 'string' &&
    ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT'].includes(code)
  );
}

/** Reject with `signal.reason` if the signal is already aborted (p-queue's convention). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

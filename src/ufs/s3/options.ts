/** The S3 adapter's options, and their plain-data copy for rebuilding it in another thread. */

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
}

export interface S3UfsOptions {
  /**
   * The S3 endpoint, for S3-compatible stores.
   * @default AWS's regional endpoint
   * @example 'http://127.0.0.1:4568'
   */
  endpoint?: string | undefined;
  /**
   * @default `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `'us-east-1'`
   */
  region?: string | undefined;
  /**
   * Static credentials. When absent, the standard AWS chain applies (environment,
   * shared config/credentials files, SSO, container and instance metadata).
   */
  credentials?: S3Credentials | undefined;
  /**
   * Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
   * @default true when `endpoint` is set, else false
   */
  forcePathStyle?: boolean | undefined;
  /**
   * Deadline for each request attempt, body included. An attempt that passes it fails
   * with `GRANARY_ERR_TIMEOUT` (retried like a 5xx while attempts remain).
   * @default 30000
   */
  timeoutMs?: number | undefined;
  /**
   * Attempts per request, first included. Retried: 5xx, 503 SlowDown, 429, connection
   * resets, timeouts, short bodies. Never retried: other 4xx.
   * @default 4
   */
  maxAttempts?: number | undefined;
  /**
   * Full-jitter backoff: before attempt n+1 sleep a random time in
   * `[0, min(retryMaxDelayMs, retryBaseDelayMs * 2^(n-1)))`.
   * @default 100
   */
  retryBaseDelayMs?: number | undefined;
  /** @default 5000 */
  retryMaxDelayMs?: number | undefined;
  /**
   * Reads longer than this are split into ranged GETs of this size, run in parallel;
   * writes longer than this (and every stream) go as multipart uploads with parts of
   * `max(partSize, 5 MiB)`. A whole-object read of unknown size asks for the first
   * `partSize` bytes, so an object up to this size costs one GET.
   * @default 8388608 (8 MiB)
   */
  partSize?: number | undefined;
  /**
   * Ranged GETs in flight per read (and upload parts in flight per write).
   * @default 8
   */
  parallelism?: number | undefined;
  /**
   * Keep-alive sockets per host, shared by all calls on this adapter.
   * @default max(64, parallelism * 8)
   */
  maxSockets?: number | undefined;
  /**
   * Send reads, stats and listings (GET, HEAD, ListObjectsV2) as lean SigV4-signed
   * requests instead of through the AWS SDK, which costs several times the CPU per
   * request. Applies when the credentials are static (`credentials`, or
   * `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in the environment); other
   * configurations (profiles, SSO, instance metadata) always use the SDK. Writes use the SDK.
   * @default true
   */
  leanReads?: boolean | undefined;
}

/**
 * A plain copy of S3 options that another thread can rebuild the adapter from, or
 * undefined when they hold something that is not data (a credentials provider function).
 */
export function portableS3Options(options: S3UfsOptions): S3UfsOptions | undefined {
  const c: unknown = options.credentials;
  if (c !== undefined && (c === null || typeof c !== 'object')) return undefined;
  const out: S3UfsOptions = { ...options };
  if (options.credentials !== undefined) {
    const { accessKeyId, secretAccessKey, sessionToken } = options.credentials;
    out.credentials = sessionToken === undefined ? { accessKeyId, secretAccessKey } : { accessKeyId, secretAccessKey, sessionToken };
  }
  return out;
}

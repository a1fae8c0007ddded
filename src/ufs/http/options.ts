/** The HTTP store's options and what it reports about the origins it talked to. */
import type { Dispatcher } from 'undici';

export interface HttpUfsOptions {
  /**
   * Time limit of each attempt (headers and body), in ms; a call that runs past it
   * fails with `GRANARY_ERR_TIMEOUT` (timeouts are not retried).
   * @default 30000
   */
  timeoutMs?: number | undefined;
  /**
   * Headers sent with every request, e.g. credentials.
   * @example { authorization: 'Bearer abc' }
   */
  headers?: Record<string, string> | undefined;
  /**
   * Attempts per request, the first included: 5xx, 429 and connection resets are
   * retried with jittered exponential backoff; other errors are not.
   * @default 3
   */
  maxAttempts?: number | undefined;
  /** Backoff before the second attempt, in ms; doubles each attempt (full jitter), capped at 5 s. @default 100 */
  retryBaseMs?: number | undefined;
  /** Keep-alive connections per origin. @default 16 */
  connections?: number | undefined;
  /** HEAD requests in flight while listing a directory (listings need each file's size and version). @default 16 */
  listConcurrency?: number | undefined;
  /** Use this undici dispatcher instead of the adapter's own keep-alive agent (not closed by `close()`). */
  dispatcher?: Dispatcher | undefined;
}

/** What the adapter has learned about the origins it talked to. */
export interface HttpStats {
  /** Origins that answered a ranged GET with the whole body (200); their reads stream and skip. */
  rangeIgnoringOrigins: string[];
  /** Responses that ignored `Range`. */
  rangeIgnoredResponses: number;
  /** Body bytes received but not part of any requested range (skipped prefixes). */
  bytesDiscarded: number;
  /** Attempts that were retried. */
  retries: number;
}

/**
 * A plain copy of HTTP options that another thread can rebuild the adapter from, or
 * undefined when they name a `dispatcher` (a live object that cannot leave this thread).
 */
export function portableHttpOptions(options: HttpUfsOptions): HttpUfsOptions | undefined {
  if (options.dispatcher !== undefined) return undefined;
  const { dispatcher: _, headers, ...rest } = options;
  return headers === undefined ? rest : { ...rest, headers: { ...headers } };
}

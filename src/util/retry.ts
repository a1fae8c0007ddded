/**
 * One retry loop for every subsystem that talks to a remote service (the S3 and HTTP
 * stores, etcd membership and registration): a bounded (or unbounded) number of
 * attempts, exponential backoff with full jitter under a cap, a predicate that says
 * which failures are worth another attempt, and an abort signal that ends the wait at
 * once with `signal.reason`.
 *
 * Full jitter (AWS's "Exponential Backoff And Jitter"): before attempt n+1 wait a
 * uniformly random time in `[0, min(maxMs, baseMs * 2^(n-1)))`. Many clients that
 * failed together then come back spread out instead of in lockstep.
 */

export interface BackoffOptions {
  /**
   * The cap on the first wait (before attempt 2), in ms; doubles with every attempt.
   * @default 100
   */
  baseMs?: number | undefined;
  /**
   * No wait is longer than this, in ms.
   * @default 5000
   */
  maxMs?: number | undefined;
  /** A source of numbers in `[0, 1)`, for tests. @default Math.random */
  random?: (() => number) | undefined;
}

export interface RetryOptions<E = unknown> extends BackoffOptions {
  /**
   * Attempts in all, the first included; `Infinity` retries until `signal` aborts or
   * `retryable` says no.
   * @default 3
   */
  attempts?: number | undefined;
  /** Aborting ends a wait at once and rejects with `signal.reason`; no attempt starts after it. */
  signal?: AbortSignal | undefined;
  /**
   * Whether a failure is worth another attempt. A failure it refuses is rethrown as it is.
   * @default every failure is retried
   */
  retryable?: ((err: E, attempt: number) => boolean) | undefined;
  /** Called before each wait, with the failure, the attempt that failed and the wait chosen. */
  onRetry?: ((err: E, attempt: number, delayMs: number) => void) | undefined;
  /**
   * What to throw when a retryable failure used up the last attempt.
   * @default the failure itself
   */
  exhausted?: ((err: E, attempts: number) => unknown) | undefined;
}

const DEFAULT_BASE_MS = 100;
const DEFAULT_MAX_MS = 5000;

/** The full-jitter wait before attempt `attempt + 1`, in ms (`attempt` counts from 1). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const base = options.baseMs ?? DEFAULT_BASE_MS;
  const max = options.maxMs ?? DEFAULT_MAX_MS;
  const random = options.random ?? Math.random;
  // Clamp the exponent: 2^1024 is Infinity, and the cap is reached long before.
  const cap = Math.min(max, base * 2 ** Math.min(Math.max(attempt - 1, 0), 52));
  return Math.floor(random() * cap);
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * Wait `ms`; an abort rejects at once with `signal.reason`. The timer and the abort
 * listener are both gone when the promise settles, either way.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortReason(signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Run `fn` until it resolves, a failure is not retryable, the attempts run out, or
 * `signal` aborts. `fn` gets the attempt number, from 1.
 *
 * @example
 * const body = await retry((attempt) => fetchOnce(url, attempt), {
 *   attempts: 4, baseMs: 100, maxMs: 5000, signal, retryable: isRetryableError,
 * });
 */
export async function retry<T, E = unknown>(fn: (attempt: number) => Promise<T>, options: RetryOptions<E> = {}): Promise<T> {
  const attempts = options.attempts ?? 3;
  const { signal } = options;
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw abortReason(signal);
    try {
      return await fn(attempt);
    } catch (caught) {
      if (signal?.aborted) throw abortReason(signal);
      const err = caught as E;
      if (options.retryable !== undefined && !options.retryable(err, attempt)) throw err;
      if (attempt >= attempts) throw options.exhausted === undefined ? err : options.exhausted(err, attempt);
      const delay = backoffDelay(attempt, options);
      options.onRetry?.(err, attempt, delay);
      await sleep(delay, signal);
    }
  }
}

/**
 * `promise`, unless `signal` aborts first: then reject with `signal.reason`. The
 * abort listener is removed when either settles; `promise` itself runs on.
 */
export async function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) throw abortReason(signal);
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        onAbort = () => reject(abortReason(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

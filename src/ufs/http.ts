import { Agent, interceptors, request, type Dispatcher } from 'undici';
import {
  AccessDeniedError,
  ClosedError,
  GranaryError,
  InvalidArgumentError,
  InvalidUrlError,
  NotFoundError,
  RangeNotSatisfiableError,
  TimeoutError,
  UnavailableError,
  UnsupportedOperationError,
  UnsupportedSchemeError,
  VersionChangedError,
  ErrorCodes,
} from '../errors.js';
import { throwIfAborted } from '../errors.js';
import { retry } from '../util/retry.js';
import { checkInt, optionalInt } from '../util/validate.js';
import { RequestCounter } from './counters.js';
import { checkRange, readRange, schemeOf } from './url.js';
import type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, WriteData } from './types.js';
import { toPortable, type PortableSpec } from './portable.js';
import type { HttpContext } from './http/context.js';
import { canonicalHttpUrl } from './http/headers.js';
import { walk } from './http/list.js';
import { portableHttpOptions, type HttpStats, type HttpUfsOptions } from './http/options.js';
import { httpReadRange, httpReadWhole, httpStat } from './http/read.js';

export { canonicalHttpUrl } from './http/headers.js';
export { parseHrefs } from './http/list.js';
export { portableHttpOptions, type HttpStats, type HttpUfsOptions } from './http/options.js';

const MAX_BACKOFF_MS = 5000;
const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
/** Unavailable errors that retrying cannot fix (an unexpected status, an unknown host). */
const FINAL = new WeakSet<Error>();
const NETWORK_CODES = ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED', 'EHOSTUNREACH'];

/**
 * The read-only HTTP(S) store: range reads over a keep-alive undici agent, `If-Match`
 * for versions, listings from HTML directory indexes (src/ufs/http/list.ts), and
 * servers that ignore `Range` handled by streaming past the offset (src/ufs/http/read.ts).
 */
export class HttpUfs implements StoreAdapter {
  readonly schemes: readonly string[] = ['http', 'https'];
  readonly #timeoutMs: number;
  readonly #headers: Record<string, string>;
  readonly #maxAttempts: number;
  readonly #retryBaseMs: number;
  readonly #dispatcher: Dispatcher;
  readonly #agent: Agent | undefined;
  readonly #options: HttpUfsOptions;
  readonly #ctx: HttpContext;
  #closed = false;

  constructor(options: HttpUfsOptions = {}) {
    if (options === null || typeof options !== 'object') {
      throw new InvalidArgumentError(`Expected HttpUfs options to be an object, got \`${String(options)}\` (${typeof options})`);
    }
    this.#options = options;
    const { timeoutMs = 30_000, headers = {}, maxAttempts, retryBaseMs = 100, connections, listConcurrency, dispatcher } = options;
    if (headers === null || typeof headers !== 'object' || Object.values(headers).some((v) => typeof v !== 'string')) {
      throw new InvalidArgumentError(`Expected \`headers\` to be an object of strings, got \`${JSON.stringify(headers)}\``);
    }
    this.#timeoutMs = checkInt('timeoutMs', timeoutMs, 1);
    this.#headers = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    this.#maxAttempts = optionalInt('maxAttempts', maxAttempts, 3);
    this.#retryBaseMs = checkInt('retryBaseMs', retryBaseMs, 0);
    const conns = optionalInt('connections', connections, 16);
    if (dispatcher) this.#dispatcher = dispatcher;
    else {
      this.#agent = new Agent({ connections: conns, keepAliveTimeout: 30_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
      this.#dispatcher = this.#agent.compose(interceptors.redirect({ maxRedirections: 5 }));
    }
    this.#ctx = {
      counter: new RequestCounter(),
      stats: { rangeIgnoredResponses: 0, bytesDiscarded: 0, retries: 0 },
      rangeIgnoring: new Set<string>(),
      listConcurrency: optionalInt('listConcurrency', listConcurrency, 16),
      send: (u, method, signal, extra) => this.#send(u, method, signal, extra),
      withRetry: (kind, url, signal, attempt) => this.#withRetry(kind, url, signal, attempt),
      throwForStatus: (status, url, op) => this.#throwForStatus(status, url, op),
      stat: (u, url, signal) => httpStat(this.#ctx, u, url, signal),
      checkOpen: (url) => this.#checkOpen(url),
    };
  }

  requestCounts(): RequestCounts {
    return this.#ctx.counter.snapshot();
  }

  /** `portableSpec()` for the rebuild protocol (src/ufs/portable.ts). */
  [toPortable](): PortableSpec | undefined {
    return this.portableSpec();
  }

  /**
   * The options this adapter was built with, as plain data for rebuilding it in another
   * thread (`src/loader/portable-fs.ts`); undefined when it was given a `dispatcher`.
   */
  portableSpec(): { kind: 'http'; options: HttpUfsOptions } | undefined {
    const options = portableHttpOptions(this.#options);
    return options && { kind: 'http', options };
  }

  /** What the adapter learned about origins (which ignore `Range`), and its retries. */
  httpStats(): HttpStats {
    return { ...this.#ctx.stats, rangeIgnoringOrigins: [...this.#ctx.rangeIgnoring].sort() };
  }

  /** Whether the origin of `url` has been seen answering a ranged GET with the whole body. */
  ignoresRange(url: string): boolean {
    return this.#ctx.rangeIgnoring.has(new URL(url).origin);
  }

  async stat(url: string, options: OpOptions = {}): Promise<FileInfo> {
    const u = this.#parse(url, options);
    return httpStat(this.#ctx, u, url, options.signal);
  }

  async read(url: string, offset?: number, length?: number, options: ReadOptions = {}): Promise<Uint8Array> {
    const u = this.#parse(url, options);
    const range = readRange(url, offset, length);
    if (options.size !== undefined) checkRange(url, 0, options.size);
    if (range === undefined) return httpReadWhole(this.#ctx, u, url, options);
    if (range.length > 0) return httpReadRange(this.#ctx, u, url, range.offset, range.length, options);
    // No byte range can ask for nothing; the object's size (and version) come from a HEAD.
    const info = await httpStat(this.#ctx, u, url, options.signal);
    if (options.etag !== undefined && info.etag !== options.etag) {
      throw new VersionChangedError(`Object ${url} changed: expected version ${options.etag}, store has ${info.etag}`, { url });
    }
    if (options.size !== undefined && info.size !== options.size) {
      throw new VersionChangedError(`Object ${url} changed: expected size ${options.size}, store has ${info.size} bytes`, { url });
    }
    if (range.offset > info.size) throw new RangeNotSatisfiableError(`Offset ${range.offset} is past the end of ${url} (size ${info.size})`, { url });
    return new Uint8Array(0);
  }

  async *list(prefixUrl: string, options: OpOptions = {}): AsyncIterable<FileInfo> {
    const u = this.#parse(prefixUrl, options);
    if (u.search !== '') throw new InvalidUrlError(`Cannot list ${prefixUrl}: a listing prefix has no query string`, { url: prefixUrl });
    const asDir = u.pathname.endsWith('/');
    const dir = new URL(u.href);
    if (!asDir) dir.pathname = u.pathname.slice(0, u.pathname.lastIndexOf('/') + 1);
    const filter = canonicalHttpUrl(asDir ? dir : u);
    yield* walk(this.#ctx, dir, filter, prefixUrl, options.signal);
  }

  async write(url: string, _data: WriteData, options: OpOptions = {}): Promise<FileInfo> {
    this.#parse(url, options);
    throw new UnsupportedOperationError(`Cannot write ${url}: HTTP stores are read-only`, { url });
  }

  async delete(url: string, options: OpOptions = {}): Promise<void> {
    this.#parse(url, options);
    throw new UnsupportedOperationError(`Cannot delete ${url}: HTTP stores are read-only`, { url });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#agent?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #checkOpen(url: string): void {
    if (this.#closed) throw new ClosedError(`HttpUfs is closed (used for ${url})`, { url });
  }

  #parse(url: string, options: OpOptions): URL {
    this.#checkOpen(String(url));
    throwIfAborted(options.signal);
    const scheme = schemeOf(url);
    if (scheme !== 'http' && scheme !== 'https') throw new UnsupportedSchemeError(`HttpUfs serves only http:// and https:// URLs, got \`${url}\``, { url });
    let u: URL;
    try {
      u = new URL(url);
    } catch (err) {
      throw new InvalidUrlError(`Invalid HTTP URL \`${url}\``, { url, cause: err });
    }
    if (u.username !== '' || u.password !== '') {
      throw new InvalidUrlError(`HTTP URL \`${url.replace(/\/\/[^@/]*@/, '//***@')}\` carries credentials; pass them in the \`headers\` option instead`, {
        url,
      });
    }
    return u;
  }

  #send(u: URL, method: 'GET' | 'HEAD', signal: AbortSignal, extra: Record<string, string> = {}): Promise<Dispatcher.ResponseData> {
    return request(u, {
      method,
      dispatcher: this.#dispatcher,
      signal,
      // undici closes the connection after every HEAD unless told not to (for servers
      // that send a body with it); the stores this adapter reads follow the protocol.
      ...(method === 'HEAD' ? { reset: false } : {}),
      headers: { 'accept-encoding': 'identity', ...this.#headers, ...extra },
    });
  }

  #throwForStatus(status: number, url: string, op: string): never {
    if (status === 404 || status === 410) throw new NotFoundError(`No such object: ${url} (HTTP ${status} on ${op})`, { url });
    if (status === 401 || status === 403) throw new AccessDeniedError(`Access denied to ${url} (HTTP ${status} on ${op})`, { url });
    if (status === 416) throw new RangeNotSatisfiableError(`Range not satisfiable for ${url} (HTTP 416 on ${op})`, { url });
    if (status === 412) throw new VersionChangedError(`Object ${url} changed (HTTP 412 on ${op})`, { url });
    // 5xx and 429 are UnavailableError, which #withRetry retries; anything else is final.
    const err = new UnavailableError(`HTTP store answered ${status} for ${url} (${op})`, { url });
    if (!RETRY_STATUS.has(status)) FINAL.add(err);
    throw err;
  }

  /**
   * One logical request: attempts with a per-attempt timeout, retrying transient
   * failures (5xx, 429, connection resets) with full-jitter backoff. Each attempt is
   * counted as one request of `kind`.
   */
  async #withRetry<T>(
    kind: 'stat' | 'get' | 'list',
    url: string,
    signal: AbortSignal | undefined,
    attempt: (signal: AbortSignal, abortAttempt: () => void) => Promise<T>,
  ): Promise<T> {
    return retry(
      async (n) => {
        this.#checkOpen(url);
        const timer = new AbortController();
        const cut = new AbortController();
        const timeout = setTimeout(
          () => timer.abort(new TimeoutError(`HTTP request for ${url} timed out after ${this.#timeoutMs} ms (attempt ${n} of ${this.#maxAttempts})`, { url })),
          this.#timeoutMs,
        );
        const signals = [timer.signal, cut.signal];
        if (signal) signals.push(signal);
        this.#ctx.counter.count(kind);
        try {
          const result = await attempt(AbortSignal.any(signals), () => cut.abort(new Error('transfer no longer needed')));
          // undici hands a finished connection back to its pool one event-loop turn later
          // (setImmediate, for servers that close despite keep-alive); a request sent
          // before then opens a new connection. Wait that turn, so reads reuse it.
          await new Promise<void>((resolve) => setImmediate(resolve));
          return result;
        } catch (raw) {
          if (signal?.aborted) throw signal.reason;
          if (timer.signal.aborted) throw timer.signal.reason;
          throw this.#classify(raw, url);
        } finally {
          clearTimeout(timeout);
        }
      },
      {
        attempts: this.#maxAttempts,
        baseMs: this.#retryBaseMs,
        maxMs: MAX_BACKOFF_MS,
        signal,
        retryable: (err) => err instanceof GranaryError && err.code === ErrorCodes.UNAVAILABLE && !FINAL.has(err),
        onRetry: () => {
          this.#ctx.stats.retries++;
        },
        exhausted: (err, n) => new UnavailableError(`${(err as Error).message} (gave up after ${n} attempt${n === 1 ? '' : 's'})`, { url, cause: err }),
      },
    );
  }

  #classify(err: unknown, url: string): unknown {
    if (err instanceof GranaryError) return err;
    const code = (err as { code?: unknown } | null)?.code;
    const msg = (err as Error | null)?.message ?? String(err);
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
      return new TimeoutError(`HTTP request for ${url} timed out (${String(code)})`, { url, cause: err });
    }
    if (typeof code === 'string' && NETWORK_CODES.includes(code)) {
      return new UnavailableError(`HTTP store unreachable for ${url}: ${msg} (${code})`, { url, cause: err });
    }
    if (code === 'ENOTFOUND') {
      const e = new UnavailableError(`HTTP store host not found for ${url}: ${msg}`, { url, cause: err });
      FINAL.add(e);
      return e;
    }
    if (code === 'UND_ERR_INVALID_ARG' || code === 'ERR_INVALID_URL') return new InvalidUrlError(`Invalid HTTP request for ${url}: ${msg}`, { url, cause: err });
    return err;
  }
}

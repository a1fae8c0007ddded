import type { IncomingHttpHeaders } from 'node:http';
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import {
  AccessDeniedError,
  ClosedError,
  CorruptDataError,
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
  throwIfAborted,
} from '../errors.js';
import { retry } from '../util/retry.js';
import { checkInt, optionalInt } from '../util/validate.js';
import { RequestCounter } from './counters.js';
import { compareBytes } from './memory.js';
import { readRange, schemeOf } from './url.js';
import type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, WriteData } from './types.js';
import { toPortable, type PortableSpec } from './portable.js';

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

/** Largest directory index page the lister reads. */
const MAX_INDEX_BYTES = 64 * 1024 * 1024;
const MAX_BACKOFF_MS = 5000;

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The canonical form of an HTTP store URL: each path segment percent-decoded and
 * re-encoded with `encodeURIComponent`, so one file has one URL however a server's
 * index or a user spelled it (`a b`, `a%20b`; `+` and `%2B`). No fragment.
 */
export function canonicalHttpUrl(url: string | URL): string {
  const u = new URL(url);
  u.hash = '';
  u.pathname = u.pathname
    .split('/')
    .map((seg) => {
      try {
        return encodeURIComponent(decodeURIComponent(seg));
      } catch {
        return seg;
      }
    })
    .join('/');
  return u.href;
}

/** Version tags from a server's ETag; without one, derived from size and Last-Modified (always containing a space). */
function normalizeEtag(raw: string): string {
  const t = raw.trim();
  const weak = t.startsWith('W/');
  const body = weak ? t.slice(2) : t;
  const unq = body.length >= 2 && body.startsWith('"') && body.endsWith('"') ? body.slice(1, -1) : body;
  return weak ? `W/${unq}` : unq;
}

function derivedEtag(size: number | undefined, lastModified: string | undefined): string {
  return `${size ?? '?'}-${lastModified ?? '(no Last-Modified)'}`;
}

function etagOf(headers: IncomingHttpHeaders, size: number | undefined): string {
  const e = header(headers, 'etag');
  return e !== undefined && e.trim() !== '' ? normalizeEtag(e) : derivedEtag(size, header(headers, 'last-modified'));
}

/** Whether an etag is a server's strong ETag, which `If-Match` can check. Derived tags contain a space; ETags cannot. */
function isStrongServerEtag(etag: string): boolean {
  return !etag.startsWith('W/') && !etag.includes(' ') && etag.length > 0;
}

/** Whether a response is of the version `expected`, as far as its headers tell. */
function versionMatches(expected: string, headers: IncomingHttpHeaders, size: number | undefined): boolean {
  const e = header(headers, 'etag');
  if (e !== undefined && e.trim() !== '') return normalizeEtag(e) === expected;
  // A strong tag from an earlier response, none on this one: If-Match was sent; nothing more to compare.
  if (isStrongServerEtag(expected)) return true;
  return derivedEtag(size, header(headers, 'last-modified')) === expected;
}

function parseContentRange(v: string | undefined): { start: number; end: number; total: number | undefined } | undefined {
  const m = v === undefined ? null : /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(v.trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

function parseLength(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
  return Number(v);
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') {
      const cp = e[1] === 'x' || e[1] === 'X' ? Number.parseInt(e.slice(2), 16) : Number.parseInt(e.slice(1), 10);
      return Number.isFinite(cp) && cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

/** Every `href` of every `<a>` in an HTML page, entity-decoded. */
export function parseHrefs(html: string): string[] {
  const out: string[] = [];
  const re = /<a\s[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))/gi;
  for (let m = re.exec(html); m !== null; m = re.exec(html)) out.push(decodeEntities(m[1] ?? m[2] ?? m[3] ?? ''));
  return out;
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

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
/** Unavailable errors that retrying cannot fix (an unexpected status, an unknown host). */
const FINAL = new WeakSet<Error>();

/**
 * The read-only HTTP(S) store: range reads over a keep-alive undici agent, `If-Match`
 * for versions, listings from HTML directory indexes (nginx, Apache, `python -m
 * http.server`), and servers that ignore `Range` handled by streaming past the offset
 * and cutting the transfer once the range is in hand.
 */
export class HttpUfs implements StoreAdapter {
  readonly schemes: readonly string[] = ['http', 'https'];
  readonly #timeoutMs: number;
  readonly #headers: Record<string, string>;
  readonly #maxAttempts: number;
  readonly #retryBaseMs: number;
  readonly #listConcurrency: number;
  readonly #dispatcher: Dispatcher;
  readonly #agent: Agent | undefined;
  readonly #counter = new RequestCounter();
  readonly #rangeIgnoring = new Set<string>();
  readonly #options: HttpUfsOptions;
  #stats = { rangeIgnoredResponses: 0, bytesDiscarded: 0, retries: 0 };
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
    this.#listConcurrency = optionalInt('listConcurrency', listConcurrency, 16);
    const conns = optionalInt('connections', connections, 16);
    if (dispatcher) this.#dispatcher = dispatcher;
    else {
      this.#agent = new Agent({
        connections: conns,
        keepAliveTimeout: 30_000,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      this.#dispatcher = this.#agent.compose(interceptors.redirect({ maxRedirections: 5 }));
    }
  }

  requestCounts(): RequestCounts {
    return this.#counter.snapshot();
  }

  /**
   * The options this adapter was built with, as plain data for rebuilding it in another
   * thread (`src/loader/portable-fs.ts`); undefined when it was given a `dispatcher`.
   */
  /** `portableSpec()` for the rebuild protocol (src/ufs/portable.ts). */
  [toPortable](): PortableSpec | undefined {
    return this.portableSpec();
  }

  portableSpec(): { kind: 'http'; options: HttpUfsOptions } | undefined {
    const options = portableHttpOptions(this.#options);
    return options && { kind: 'http', options };
  }

  /** What the adapter learned about origins (which ignore `Range`), and its retries. */
  httpStats(): HttpStats {
    return { ...this.#stats, rangeIgnoringOrigins: [...this.#rangeIgnoring].sort() };
  }

  /** Whether the origin of `url` has been seen answering a ranged GET with the whole body. */
  ignoresRange(url: string): boolean {
    return this.#rangeIgnoring.has(new URL(url).origin);
  }

  async stat(url: string, options: OpOptions = {}): Promise<FileInfo> {
    const u = this.#parse(url, options);
    return this.#stat(u, url, options.signal);
  }

  async #stat(u: URL, url: string, signal: AbortSignal | undefined): Promise<FileInfo> {
    return this.#withRetry('stat', url, signal, async (s) => {
      const res = await this.#send(u, 'HEAD', s);
      await res.body.dump().catch(() => {});
      let size = parseLength(header(res.headers, 'content-length'));
      let headers = res.headers;
      if (res.statusCode === 405 || res.statusCode === 501 || (res.statusCode === 200 && size === undefined)) {
        // No HEAD here (or no length in it): one byte of a GET carries the size in Content-Range.
        this.#counter.count('stat');
        const g = await this.#send(u, 'GET', s, { range: 'bytes=0-0' });
        const body = await g.body.arrayBuffer();
        this.#counter.read(body.byteLength);
        if (g.statusCode === 206) size = parseContentRange(header(g.headers, 'content-range'))?.total;
        else if (g.statusCode === 200) size = parseLength(header(g.headers, 'content-length')) ?? body.byteLength;
        else if (g.statusCode === 416) size = 0;
        else this.#throwForStatus(g.statusCode, url, 'stat');
        headers = g.headers;
      } else if (res.statusCode !== 200) {
        this.#throwForStatus(res.statusCode, url, 'stat');
      }
      if (size === undefined) throw new CorruptDataError(`HTTP store sent no size for ${url} (no Content-Length or Content-Range)`, { url });
      const lm = header(headers, 'last-modified');
      const mtimeMs = lm === undefined ? Number.NaN : Date.parse(lm);
      return {
        url: canonicalHttpUrl(u),
        size,
        etag: etagOf(headers, size),
        mtimeMs: Number.isFinite(mtimeMs) ? mtimeMs : undefined,
      };
    });
  }

  async read(url: string, offset?: number, length?: number, options: ReadOptions = {}): Promise<Uint8Array> {
    const u = this.#parse(url, options);
    const range = readRange(url, offset, length);
    if (range === undefined) {
      const info = await this.#stat(u, url, options.signal);
      return this.read(url, 0, info.size, { ...options, etag: options.etag ?? info.etag });
    }
    ({ offset, length } = range);
    const expected = options.etag;
    if (length === 0) {
      // No byte range can ask for nothing; the object's size (and version) come from a HEAD.
      const info = await this.#stat(u, url, options.signal);
      if (expected !== undefined && info.etag !== expected) {
        throw new VersionChangedError(`Object ${url} changed: expected version ${expected}, store has ${info.etag}`, { url });
      }
      if (offset > info.size) {
        throw new RangeNotSatisfiableError(`Offset ${offset} is past the end of ${url} (size ${info.size})`, { url });
      }
      return new Uint8Array(0);
    }
    const end = offset + length - 1;
    return this.#withRetry('get', url, options.signal, async (s, abortAttempt) => {
      const headers: Record<string, string> = { range: `bytes=${offset}-${end}` };
      if (expected !== undefined && isStrongServerEtag(expected)) headers['if-match'] = `"${expected}"`;
      const res = await this.#send(u, 'GET', s, headers);
      const status = res.statusCode;
      if (status === 416) {
        await res.body.dump().catch(() => {});
        const total = parseContentRange(header(res.headers, 'content-range'))?.total;
        throw new RangeNotSatisfiableError(
          `Range ${offset}+${length} (to ${offset + length}) is past the end of ${url}${total === undefined ? '' : ` (size ${total})`}`,
          { url },
        );
      }
      if (status === 412) {
        await res.body.dump().catch(() => {});
        throw new VersionChangedError(`Object ${url} changed: expected version ${expected ?? '?'}, the store refused If-Match (412)`, { url });
      }
      if (status !== 200 && status !== 206) {
        await res.body.dump().catch(() => {});
        this.#throwForStatus(status, url, 'read');
      }
      const origin = u.origin;
      let skip: number;
      let total: number | undefined;
      if (status === 206) {
        this.#rangeIgnoring.delete(origin);
        const cr = parseContentRange(header(res.headers, 'content-range'));
        if (!cr || cr.start !== offset) {
          await res.body.dump().catch(() => {});
          throw new CorruptDataError(
            `HTTP store answered range ${offset}-${end} of ${url} with Content-Range \`${header(res.headers, 'content-range') ?? '(none)'}\``,
            { url },
          );
        }
        total = cr.total;
        if ((total !== undefined && offset + length > total) || cr.end < end) {
          abortAttempt();
          throw new RangeNotSatisfiableError(
            `Range ${offset}+${length} (to ${offset + length}) is past the end of ${url} (size ${total ?? `>= ${cr.end + 1}`})`,
            { url },
          );
        }
        skip = 0;
      } else {
        // The server ignored Range and sends the whole object: stream it, skip to the
        // offset, keep `length` bytes and cut the transfer there.
        if (!this.#rangeIgnoring.has(origin)) this.#rangeIgnoring.add(origin);
        this.#stats.rangeIgnoredResponses++;
        total = parseLength(header(res.headers, 'content-length'));
        if (total !== undefined && offset + length > total) {
          abortAttempt();
          throw new RangeNotSatisfiableError(`Range ${offset}+${length} (to ${offset + length}) is past the end of ${url} (size ${total})`, {
            url,
          });
        }
        skip = offset;
      }
      if (expected !== undefined && !versionMatches(expected, res.headers, total)) {
        abortAttempt();
        throw new VersionChangedError(`Object ${url} changed: expected version ${expected}, store sent ${etagOf(res.headers, total)}`, { url });
      }
      const out = new Uint8Array(length);
      let filled = 0;
      let received = 0;
      let complete = false;
      try {
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          received += chunk.byteLength;
          let c: Uint8Array = chunk;
          if (skip > 0) {
            const n = Math.min(skip, c.byteLength);
            skip -= n;
            this.#stats.bytesDiscarded += n;
            c = c.subarray(n);
          }
          const take = Math.min(c.byteLength, length - filled);
          out.set(c.subarray(0, take), filled);
          filled += take;
          if (filled === length) {
            complete = true;
            break;
          }
        }
      } finally {
        this.#counter.read(received);
        // Stop the rest of a whole-object transfer (or anything past the range).
        if (complete && !res.body.readableEnded) abortAttempt();
      }
      if (filled < length) {
        if (status === 200 && total === undefined) {
          throw new RangeNotSatisfiableError(`Range ${offset}+${length} (to ${offset + length}) is past the end of ${url} (size ${received})`, {
            url,
          });
        }
        throw new UnavailableError(`HTTP transfer of ${url} ended early: got ${filled} of ${length} bytes from offset ${offset}`, { url });
      }
      return out;
    });
  }

  async *list(prefixUrl: string, options: OpOptions = {}): AsyncIterable<FileInfo> {
    const u = this.#parse(prefixUrl, options);
    if (u.search !== '') throw new InvalidUrlError(`Cannot list ${prefixUrl}: a listing prefix has no query string`, { url: prefixUrl });
    const asDir = u.pathname.endsWith('/');
    const dir = new URL(u.href);
    if (!asDir) dir.pathname = u.pathname.slice(0, u.pathname.lastIndexOf('/') + 1);
    const filter = canonicalHttpUrl(asDir ? dir : u);
    yield* this.#walk(dir, filter, prefixUrl, options.signal);
  }

  async *#walk(dir: URL, filter: string, prefixUrl: string, signal: AbortSignal | undefined): AsyncGenerator<FileInfo> {
    throwIfAborted(signal);
    this.#checkOpen(prefixUrl);
    const dirUrl = canonicalHttpUrl(dir);
    const html = await this.#withRetry('list', prefixUrl, signal, async (s) => {
      const res = await this.#send(dir, 'GET', s, { accept: 'text/html' });
      if (res.statusCode === 404 || res.statusCode === 410) {
        await res.body.dump().catch(() => {});
        return undefined;
      }
      if (res.statusCode !== 200) {
        await res.body.dump().catch(() => {});
        if (res.statusCode === 403) {
          throw new AccessDeniedError(`Cannot list ${dir.href} (listing ${prefixUrl}): the server refused its directory index (403)`, {
            url: prefixUrl,
          });
        }
        this.#throwForStatus(res.statusCode, prefixUrl, 'list');
      }
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of res.body as AsyncIterable<Buffer>) {
        n += c.byteLength;
        if (n > MAX_INDEX_BYTES) {
          throw new CorruptDataError(`Directory index ${dir.href} is larger than ${MAX_INDEX_BYTES} bytes (listing ${prefixUrl})`, { url: prefixUrl });
        }
        chunks.push(c);
      }
      this.#counter.read(n);
      return Buffer.concat(chunks).toString('utf8');
    });
    // A missing directory lists nothing, as an empty S3 prefix does.
    if (html === undefined) return;
    type Item = { url: string; target: URL; dir: boolean };
    const seen = new Set<string>();
    const items: Item[] = [];
    for (const href of parseHrefs(html)) {
      let abs: URL;
      try {
        abs = new URL(href, dir);
      } catch {
        continue;
      }
      // Only direct children: parent links, sort links (`?C=N;O=D`), off-site links and deeper links are skipped.
      if (abs.origin !== dir.origin || abs.search !== '') continue;
      abs.hash = '';
      const url = canonicalHttpUrl(abs);
      if (!url.startsWith(dirUrl) || url.length === dirUrl.length) continue;
      const rest = url.slice(dirUrl.length);
      const isDir = rest.endsWith('/');
      if ((isDir ? rest.slice(0, -1) : rest).includes('/')) continue;
      if (!url.startsWith(filter) && !(isDir && filter.startsWith(url))) continue;
      if (seen.has(url)) continue;
      seen.add(url);
      items.push({ url, target: abs, dir: isDir });
    }
    // Sorted per directory, with directories' trailing '/', descending in order: the whole tree comes out in URL byte order.
    items.sort((a, b) => compareBytes(a.url, b.url));
    for (let i = 0; i < items.length; ) {
      const item = items[i] as Item;
      if (item.dir) {
        yield* this.#walk(item.target, filter, prefixUrl, signal);
        i++;
        continue;
      }
      const files: Item[] = [];
      while (i < items.length && !(items[i] as Item).dir) files.push(items[i++] as Item);
      yield* mapOrdered(files, this.#listConcurrency, (f) =>
        this.#stat(f.target, f.url, signal).catch((err: unknown) => {
          // Gone between the index and the HEAD: not part of the listing.
          if (err instanceof GranaryError && err.code === ErrorCodes.NOT_FOUND) return undefined;
          throw err;
        }),
      );
    }
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
        this.#counter.count(kind);
        try {
          return await attempt(AbortSignal.any(signals), () => cut.abort(new Error('transfer no longer needed')));
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
          this.#stats.retries++;
        },
        exhausted: (err, n) =>
          new UnavailableError(`${(err as Error).message} (gave up after ${n} attempt${n === 1 ? '' : 's'})`, { url, cause: err }),
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
    if (
      typeof code === 'string' &&
      ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED', 'EHOSTUNREACH'].includes(code)
    ) {
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

/** `fn` over `items` with at most `window` calls in flight, yielding results in input order (skipping `undefined`). */
async function* mapOrdered<T, R>(items: readonly T[], window: number, fn: (item: T) => Promise<R | undefined>): AsyncGenerator<R> {
  const pending: Promise<R | undefined>[] = [];
  let next = 0;
  const fill = (): void => {
    while (next < items.length && pending.length < window) {
      const p = fn(items[next++] as T);
      // Rejections are seen when awaited; one left behind by an early exit must not go unhandled.
      p.catch(() => {});
      pending.push(p);
    }
  };
  fill();
  for (let p = pending.shift(); p !== undefined; p = pending.shift()) {
    const v = await p;
    fill();
    if (v !== undefined) yield v;
  }
}

/**
 * HTTP to the cache workers: one keep-alive pool for every request of a client, a
 * timeout per request, the bearer token, and the mapping of answers to results,
 * coded errors or `WorkerFault`s.
 */
import { Agent, request, type Dispatcher } from 'undici';
import { UnavailableError, throwIfAborted } from '../errors.js';
import type { WorkerInfo } from './membership.js';
import { CRC_ALGORITHM, CRC_BYTES, parseCrcHeader, pieceCount, verifyReadAnswer } from './page-checksum.js';
import { Headers, Paths, readQuery } from './protocol.js';
import { RAW_READ_MIN, RawPool } from './raw-read.js';
import { WorkerFault, errorFromAnswer } from './worker-errors.js';
import { describeConnectError, loadClientCa } from './worker-tls.js';

export interface WorkerTransportOptions {
  /** Bearer token the workers require. */
  token?: string | undefined;
  /** PEM file of the CA that signed the workers' certificates; undefined: the system's CAs. */
  tlsCa?: string | undefined;
  /** A request slower than this (to its headers, or between body chunks) is a `WorkerFault`. */
  timeoutMs: number;
  /** Ask for page checksums and verify every part against them (`ChecksumFault` on a mismatch). @default true */
  checksums?: boolean | undefined;
}

/** A ranged read of one object version, written into `out` at `at`. */
export interface WorkerReadRequest {
  url: string;
  etag: string;
  /** The version's size, when the client knows it: the worker then trusts the version and asks the store nothing on a hit. */
  size?: number | undefined;
  offset: number;
  length: number;
  out: Uint8Array;
  at: number;
}

export class WorkerTransport {
  readonly #agent: Agent;
  readonly #raw: RawPool;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;
  readonly #crc: string | undefined;

  constructor(options: WorkerTransportOptions) {
    // Certificates are always verified; `ca` replaces the system's CAs when given.
    const ca = loadClientCa(options.tlsCa);
    this.#agent = new Agent({ connections: 64, keepAliveTimeout: 30_000, pipelining: 1, ...(ca ? { connect: { ca } } : {}) });
    this.#raw = new RawPool(ca);
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs;
    this.#crc = options.checksums === false ? undefined : CRC_ALGORITHM;
  }

  /**
   * One ranged read, its bytes written straight into `r.out`. Resolves with where the
   * worker found them (`hit`, `partial`, `miss`); a worker fault throws `WorkerFault`,
   * bytes that fail their page checksums (or come without them) `ChecksumFault`.
   */
  async read(w: WorkerInfo, r: WorkerReadRequest, signal: AbortSignal | undefined): Promise<string> {
    if (r.length >= RAW_READ_MIN && (w.url.startsWith('http://') || w.url.startsWith('https://'))) {
      const answer = await this.#raw.read({ ...r, worker: w, token: this.#token, timeoutMs: this.#timeoutMs, signal, crc: this.#crc });
      if (!('cache' in answer)) throw errorFromAnswer(w, answer.status, answer.body, r.url);
      if (this.#crc !== undefined) verifyReadAnswer(w, r, answer.pageSize, answer.trailer);
      return answer.cache;
    }
    const { url, etag, out, at } = r;
    const res = await this.send(w, 'GET', Paths.read, readQuery(r, this.#crc), signal);
    if (res.statusCode !== 200) throw await this.#errorFrom(w, res, url);
    const got = res.headers[Headers.etag];
    if (got !== etag) {
      await res.body.dump();
      throw new WorkerFault(`worker ${w.id} answered version ${String(got)} for ${url}, expected ${etag}`);
    }
    // With checksums, the body is the bytes and then a trailer of one CRC per page piece.
    const pageSize = this.#crc === undefined ? undefined : parseCrcHeader(res.headers[Headers.crc]);
    const trailer = pageSize === undefined ? undefined : new Uint8Array(pieceCount(r.offset, r.length, pageSize) * CRC_BYTES);
    const total = r.length + (trailer?.byteLength ?? 0);
    let pos = 0;
    try {
      // 'data' events rather than async iteration: one less promise per 64 KiB chunk on the hot path.
      await new Promise<void>((resolve, reject) => {
        const body = res.body;
        body.on('data', (chunk: Buffer) => {
          if (pos + chunk.byteLength > total) {
            body.destroy(new WorkerFault(`worker ${w.id} sent more than ${total} bytes for ${url}`));
            return;
          }
          const data = Math.max(0, Math.min(chunk.byteLength, r.length - pos));
          if (data > 0) out.set(data === chunk.byteLength ? chunk : chunk.subarray(0, data), at + pos);
          if (data < chunk.byteLength) trailer?.set(chunk.subarray(data), pos + data - r.length);
          pos += chunk.byteLength;
        });
        body.once('end', resolve);
        body.once('error', reject);
      });
    } catch (err) {
      throwIfAborted(signal);
      if (err instanceof WorkerFault) throw err;
      throw new WorkerFault(`worker ${w.id} broke off the body of ${url}: ${(err as Error).message}`);
    }
    if (pos !== total) throw new WorkerFault(`worker ${w.id} sent ${pos} of ${total} bytes for ${url}`);
    if (this.#crc !== undefined) verifyReadAnswer(w, r, pageSize, trailer);
    const cache = res.headers[Headers.cache];
    return typeof cache === 'string' ? cache : 'miss';
  }

  /** A request; the caller consumes or dumps the body. An unreachable or slow worker throws `WorkerFault`. */
  async send(w: WorkerInfo, method: 'GET' | 'POST', path: string, query: Record<string, string>, signal: AbortSignal | undefined, body?: string): Promise<Dispatcher.ResponseData> {
    throwIfAborted(signal);
    const qs = new URLSearchParams(query).toString();
    const headers: Record<string, string> = {};
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    // One controller per request, linked to the caller's signal until the body is
    // done, so a long-lived signal (a whole epoch's) gathers no listeners.
    const ac = new AbortController();
    const onAbort = (): void => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => ac.abort(new Error(`worker ${w.id} took over ${this.#timeoutMs} ms`)), this.#timeoutMs);
    timer.unref();
    const cleanup = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    try {
      const res = await request(`${w.url}${path}${qs ? `?${qs}` : ''}`, {
        method,
        headers,
        body,
        signal: ac.signal,
        dispatcher: this.#agent,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      });
      res.body.once('close', cleanup);
      return res;
    } catch (err) {
      cleanup();
      throwIfAborted(signal);
      throw new WorkerFault(`worker ${w.id} at ${w.url} unreachable: ${describeConnectError(err)}`);
    }
  }

  /** GET a JSON answer, with the age of the metadata in it (`x-granary-age`, 0 when absent). */
  async getJson<T>(w: WorkerInfo, path: string, query: Record<string, string>, signal: AbortSignal | undefined): Promise<{ value: T; age: number }> {
    const res = await this.send(w, 'GET', path, query, signal);
    if (res.statusCode !== 200) throw await this.#errorFrom(w, res, query.url ?? query.prefix ?? path);
    try {
      const value = (await res.body.json()) as T;
      const age = Number(res.headers[Headers.age] ?? 0);
      return { value, age: Number.isFinite(age) && age >= 0 ? age : 0 };
    } catch (err) {
      throwIfAborted(signal);
      throw new WorkerFault(`worker ${w.id} sent malformed JSON for ${path}: ${(err as Error).message}`);
    }
  }

  /** POST a JSON body. Administrative calls have no fallback: a worker fault is `GRANARY_ERR_UNAVAILABLE`. */
  async postJson<T>(w: WorkerInfo, path: string, body: unknown, signal: AbortSignal | undefined): Promise<T> {
    const res = await this.send(w, 'POST', path, {}, signal, JSON.stringify(body));
    if (res.statusCode !== 202 && res.statusCode !== 200) {
      const e = await this.#errorFrom(w, res, path);
      throw e instanceof WorkerFault ? new UnavailableError(e.message) : e;
    }
    return (await res.body.json()) as T;
  }

  /** Let the requests in flight finish, then close the connections. */
  close(): Promise<void> {
    this.#raw.close();
    return this.#agent.close();
  }

  /** Close every connection now; requests in flight fail with `err`. */
  destroy(err: Error): Promise<void> {
    this.#raw.close();
    return this.#agent.destroy(err);
  }

  async #errorFrom(w: WorkerInfo, res: Dispatcher.ResponseData, url: string): Promise<Error> {
    return errorFromAnswer(w, res.statusCode, await res.body.text().catch(() => ''), url);
  }
}

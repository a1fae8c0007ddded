import { randomUUID } from 'node:crypto';
import { channel } from 'node:diagnostics_channel';
import { setMaxListeners } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import {
  BadRequestError,
  ClosedError,
  ForbiddenPrefixError,
  InternalError,
  InvalidArgumentError,
  RangeNotSatisfiableError,
  UnauthorizedError,
  VersionChangedError,
  isGranaryError,
} from '../errors.js';
import { createUfs, type UfsOptions } from '../ufs/router.js';
import type { FileInfo, UnderFileSystem } from '../ufs/types.js';
import { checkRange, schemeOf } from '../ufs/url.js';
import { MetadataCache } from './metadata-cache.js';
import { checkPageSize, DEFAULT_PAGE_SIZE, pageKey, pagesForRange, type PageKey } from './page-key.js';
import { PageStore, type PageStoreOptions } from './page-store.js';
import { Headers, Paths, statusForCode } from './protocol.js';
import { Registration } from './registration.js';
import { SingleFlight } from './single-flight.js';
import type { EvictionPolicyName } from './eviction.js';
import { WorkerHints, parseHintRequest, type WorkerHintOptions, type WorkerHintStats } from './hints.js';

const MiB = 1024 * 1024;

export interface WorkerOptions {
  /** Address to bind. Loopback unless you mean to serve other machines. @default '127.0.0.1' */
  host?: string;
  /** Port; 0 picks a free one. @default 0 */
  port?: number;
  /** Worker id, stable across restarts if you want a restarted worker to own the same keys. @default a random UUID */
  id?: string;
  /** URL that clients should use to reach this worker. @default `http://<host>:<port>` */
  advertiseUrl?: string;
  /** Page size in bytes; every worker and client of a cluster should agree. @default 1 MiB */
  pageSize?: number;
  /** Memory tier budget in bytes. @default 256 MiB */
  memoryBytes?: number;
  /** Directory of the disk tier; no disk tier when absent. A restart on the same directory finds its pages again. */
  diskDir?: string;
  /** Disk tier budget in bytes. @default 1 GiB when `diskDir` is set */
  diskBytes?: number;
  /** Eviction policy of both tiers. @default 'lru' */
  policy?: EvictionPolicyName;
  /** How the worker reaches the store (same options as `createUfs`), or a ready store client. */
  ufs?: UfsOptions | UnderFileSystem;
  /** Register in etcd under `/granary/<cluster>/workers/<id>` with a lease; absent: no registration (static membership). */
  etcd?: {
    endpoints: string[];
    cluster?: string;
    /** Lease TTL in seconds (at least 2): a dead worker leaves the ring after about this long. @default 10 */
    ttlSeconds?: number;
    /** How long `startWorker` waits for the first registration before it returns anyway (it keeps trying). @default 10_000 */
    registerTimeoutMs?: number;
  };
  /** Require `Authorization: Bearer <token>` on every endpoint but `/healthz`. */
  token?: string;
  /** Store URL prefixes this worker may read; any other URL is refused with `GRANARY_ERR_FORBIDDEN_PREFIX`. @default all */
  allow?: string[];
  /** How long stat and list answers are cached. @default 10_000 */
  metadataTtlMs?: number;
  /** Largest byte range one read request may ask for. @default 256 MiB */
  maxReadBytes?: number;
  /** Largest run of consecutive missing pages fetched from the store in one request. @default 8 */
  fetchRunPages?: number;
  /**
   * Clairvoyant hints (`POST /v1/hints`, docs/hints.md): prefetch the pages jobs announce,
   * and evict by their next use (Belady; LRU for unhinted pages) when `policy` is `'lru'`.
   * `false` refuses hints and keeps the plain policy. @default {} (on)
   */
  hints?: boolean | WorkerHintOptions;
}

export interface LoadRange {
  url: string;
  etag?: string;
  offset: number;
  length: number;
}

export interface LoadJob {
  id: string;
  state: 'running' | 'done' | 'failed';
  bytesTotal: number;
  bytesDone: number;
  rangesTotal: number;
  rangesDone: number;
  error?: { code: string; message: string };
}

export interface WorkerInfoResponse {
  id: string;
  url: string;
  pageSize: number;
  capacity: { memoryBytes: number; diskBytes: number };
  usage: { memoryBytes: number; diskBytes: number; memoryPages: number; diskPages: number };
  counters: { hits: number; misses: number; storeRequests: number; bytesServed: number; bytesFromStore: number; evictions: number };
  /** Hint registry, prefetch and read-class counters; absent when hints are off. */
  hints?: WorkerHintStats;
}

export interface CacheWorker extends AsyncDisposable {
  readonly id: string;
  readonly url: string;
  readonly pageSize: number;
  info(): WorkerInfoResponse;
  /** Stop accepting requests, revoke the etcd lease (clients drop this worker at once), finish in-flight requests. */
  close(): Promise<void>;
}

const diag = {
  read: channel('granary:worker:read'),
  fetch: channel('granary:worker:fetch'),
};

function positiveInt(name: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new InvalidArgumentError(`Expected \`${name}\` to be an integer from ${min} and up, got \`${String(v)}\` (${typeof v})`);
  }
  return v;
}

function isUfs(v: unknown): v is UnderFileSystem {
  return typeof v === 'object' && v !== null && typeof (v as UnderFileSystem).read === 'function' && typeof (v as UnderFileSystem).stat === 'function';
}

/** Start a cache worker: an HTTP server in front of a page store that reads through to the store. */
export async function startWorker(options: WorkerOptions = {}): Promise<CacheWorker> {
  const w = new Worker(options);
  await w.start();
  return w;
}

class Worker implements CacheWorker {
  readonly id: string;
  readonly pageSize: number;
  #url = '';
  readonly #opts: WorkerOptions;
  readonly #ufs: UnderFileSystem;
  readonly #ownsUfs: boolean;
  #store!: PageStore;
  readonly #meta: MetadataCache;
  readonly #flight = new SingleFlight<PageKey, Uint8Array>();
  readonly #statFlight = new SingleFlight<string, FileInfo>();
  readonly #server: Server;
  readonly #jobs = new Map<string, LoadJob>();
  #registration: Registration | undefined;
  #closing: Promise<void> | undefined;
  readonly #allow: string[] | undefined;
  readonly #maxReadBytes: number;
  readonly #fetchRunPages: number;
  readonly #hints: WorkerHints | undefined;
  /** Aborts every store call in flight when the worker closes; shared by all of them. */
  readonly #abort = new AbortController();

  readonly registry = new Registry();
  readonly #m: {
    hits: Counter;
    misses: Counter;
    bytesServed: Counter;
    bytesFromStore: Counter;
    storeRequests: Counter;
    evictions: Gauge;
    requests: Counter;
    latency: Histogram;
    usage: Gauge;
    capacity: Gauge;
  };
  #counters = { hits: 0, misses: 0, storeRequests: 0, bytesServed: 0, bytesFromStore: 0 };

  constructor(opts: WorkerOptions) {
    this.#opts = opts;
    this.id = opts.id ?? randomUUID();
    this.pageSize = checkPageSize(opts.pageSize ?? DEFAULT_PAGE_SIZE);
    if (opts.token !== undefined && (typeof opts.token !== 'string' || opts.token.length === 0)) {
      throw new InvalidArgumentError(`Expected \`token\` to be a non-empty string, got \`${String(opts.token)}\``);
    }
    if (opts.allow !== undefined) {
      if (!Array.isArray(opts.allow)) throw new InvalidArgumentError(`Expected \`allow\` to be an array of URL prefixes, got ${typeof opts.allow}`);
      for (const p of opts.allow) schemeOf(p);
      this.#allow = [...opts.allow];
    }
    this.#maxReadBytes = positiveInt('maxReadBytes', opts.maxReadBytes ?? 256 * MiB);
    this.#fetchRunPages = positiveInt('fetchRunPages', opts.fetchRunPages ?? 8);
    if (opts.hints !== false) {
      this.#hints = new WorkerHints(this.pageSize, { runPages: this.#fetchRunPages, ...(opts.hints === true ? {} : opts.hints) });
    }
    this.#meta = new MetadataCache({ ttlMs: positiveInt('metadataTtlMs', opts.metadataTtlMs ?? 10_000, 0) });
    if (isUfs(opts.ufs)) {
      this.#ufs = opts.ufs;
      this.#ownsUfs = false;
    } else {
      this.#ufs = createUfs(opts.ufs ?? {});
      this.#ownsUfs = true;
    }
    const labels = { worker: this.id };
    this.registry.setDefaultLabels(labels);
    const r = [this.registry];
    this.#m = {
      hits: new Counter({ name: 'granary_worker_page_hits_total', help: 'Pages served from the cache', registers: r }),
      misses: new Counter({ name: 'granary_worker_page_misses_total', help: 'Pages read through from the store', registers: r }),
      bytesServed: new Counter({ name: 'granary_worker_bytes_served_total', help: 'Bytes sent to clients by read requests', registers: r }),
      bytesFromStore: new Counter({ name: 'granary_worker_store_bytes_total', help: 'Bytes read from the store', registers: r }),
      storeRequests: new Counter({
        name: 'granary_worker_store_requests_total',
        help: 'Requests made to the store, by kind',
        labelNames: ['kind'],
        registers: r,
      }),
      evictions: new Gauge({ name: 'granary_worker_evictions', help: 'Pages evicted since start (both tiers)', registers: r }),
      requests: new Counter({
        name: 'granary_worker_requests_total',
        help: 'HTTP requests, by endpoint and status',
        labelNames: ['endpoint', 'status'],
        registers: r,
      }),
      latency: new Histogram({
        name: 'granary_worker_request_seconds',
        help: 'Request latency, by endpoint',
        labelNames: ['endpoint'],
        buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
        registers: r,
      }),
      usage: new Gauge({ name: 'granary_worker_cache_bytes', help: 'Bytes held, by tier', labelNames: ['tier'], registers: r }),
      capacity: new Gauge({ name: 'granary_worker_cache_capacity_bytes', help: 'Byte budget, by tier', labelNames: ['tier'], registers: r }),
    };
    collectDefaultMetrics({ register: this.registry });
    // Every concurrent store read listens on this one signal: many listeners are expected, not a leak.
    setMaxListeners(0, this.#abort.signal);
    this.#server = createServer({ keepAlive: true, keepAliveTimeout: 30_000 }, (req, res) => {
      void this.#handle(req, res);
    });
    this.#server.headersTimeout = 30_000;
    this.#server.requestTimeout = 120_000;
  }

  get url(): string {
    return this.#url;
  }

  async start(): Promise<void> {
    const o = this.#opts;
    const storeOpts: PageStoreOptions = {
      pageSize: this.pageSize,
      memoryBytes: o.memoryBytes ?? 256 * MiB,
      policy: o.policy ?? 'lru',
    };
    const belady = this.#hints !== undefined && storeOpts.policy === 'lru';
    if (belady && this.#hints) storeOpts.policy = this.#hints.policy;
    if (o.diskDir !== undefined) {
      storeOpts.diskDir = o.diskDir;
      storeOpts.diskBytes = o.diskBytes ?? 1024 * MiB;
    }
    this.#store = await PageStore.open(storeOpts);
    this.#hints?.attach(
      {
        has: (k) => this.#store.has(k),
        hasRoom: () => {
          const s = this.#store.stats();
          return s.memoryBytes + this.pageSize <= s.memoryBudget;
        },
        fetch: (url, etag, first, count) => this.#prefetch(url, etag, first, count),
      },
      belady,
    );
    this.#m.capacity.set({ tier: 'memory' }, storeOpts.memoryBytes);
    this.#m.capacity.set({ tier: 'disk' }, storeOpts.diskBytes ?? 0);
    const host = o.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(o.port ?? 0, host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const addr = this.#server.address() as AddressInfo;
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    this.#url = o.advertiseUrl ?? `http://${h}:${addr.port}`;
    if (o.etcd) {
      // Serve at once and register in the background: a worker started while etcd is
      // down still serves clients that know it, and joins the ring when etcd is back.
      this.#registration = new Registration({
        endpoints: o.etcd.endpoints,
        cluster: o.etcd.cluster ?? 'default',
        ttlSeconds: o.etcd.ttlSeconds ?? 10,
        info: {
          id: this.id,
          url: this.#url,
          capacityBytes: storeOpts.memoryBytes + (storeOpts.diskBytes ?? 0),
          startedAt: Date.now(),
          host: hostname(),
          pageSize: this.pageSize,
        },
      });
      this.#registration.on('failed', () => undefined);
      await this.#registration.whenRegistered({ signal: AbortSignal.timeout(o.etcd.registerTimeoutMs ?? 10_000) }).catch(() => undefined);
    }
  }

  info(): WorkerInfoResponse {
    const s = this.#store.stats();
    return {
      id: this.id,
      url: this.#url,
      pageSize: this.pageSize,
      capacity: { memoryBytes: this.#opts.memoryBytes ?? 256 * MiB, diskBytes: this.#opts.diskDir ? (this.#opts.diskBytes ?? 1024 * MiB) : 0 },
      usage: { memoryBytes: s.memoryBytes, diskBytes: s.diskBytes, memoryPages: s.memoryPages, diskPages: s.diskPages },
      counters: { ...this.#counters, evictions: s.evictions },
      ...(this.#hints ? { hints: this.#hints.stats() } : {}),
    };
  }

  close(): Promise<void> {
    this.#closing ??= this.#doClose();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #doClose(): Promise<void> {
    // Leave the ring first, so clients stop sending before the socket closes.
    await this.#registration?.close().catch(() => undefined);
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeIdleConnections();
      setTimeout(() => this.#server.closeAllConnections(), 2000).unref();
    });
    this.#abort.abort(new ClosedError(`Worker ${this.id} is closed`));
    this.#hints?.close();
    await this.#store.close();
    if (this.#ownsUfs) await this.#ufs.close();
  }

  // ---- HTTP ----

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    let endpoint = 'unknown';
    try {
      const u = new URL(req.url ?? '/', 'http://worker');
      endpoint = u.pathname.startsWith(Paths.jobs) ? Paths.jobs : u.pathname;
      res.setHeader(Headers.worker, this.id);
      if (u.pathname === Paths.health) return this.#send(res, 200, 'ok\n', 'text/plain');
      this.#authorize(req);
      if (this.#closing) throw new ClosedError(`Worker ${this.id} is shutting down`);
      switch (`${req.method ?? 'GET'} ${endpoint}`) {
        case `GET ${Paths.read}`:
          return await this.#handleRead(u, res);
        case `GET ${Paths.stat}`:
          return this.#json(res, 200, await this.#statForClient(u, res));
        case `GET ${Paths.list}`:
          return await this.#handleList(u, res);
        case `POST ${Paths.invalidate}`:
          return await this.#handleInvalidate(u, res);
        case `POST ${Paths.load}`:
          return this.#json(res, 202, this.#startLoad(await readJsonBody(req)));
        case `POST ${Paths.hints}`:
          return this.#handleHints(await readJsonBody(req), res);
        case `GET ${Paths.jobs}`:
          return this.#handleJob(u, res);
        case `GET ${Paths.info}`:
          return this.#json(res, 200, this.info());
        case `GET ${Paths.metrics}`:
          return this.#send(res, 200, await this.#metrics(), this.registry.contentType);
        default:
          throw new BadRequestError(`No such endpoint: ${req.method ?? 'GET'} ${u.pathname}`);
      }
    } catch (err) {
      this.#sendError(res, err);
    } finally {
      const secs = Number(process.hrtime.bigint() - started) / 1e9;
      this.#m.latency.observe({ endpoint }, secs);
      this.#m.requests.inc({ endpoint, status: String(res.statusCode) });
    }
  }

  #authorize(req: IncomingMessage): void {
    const token = this.#opts.token;
    if (token === undefined) return;
    if (req.headers.authorization !== `Bearer ${token}`) {
      throw new UnauthorizedError('Missing or wrong bearer token (Authorization: Bearer <token>)');
    }
  }

  #checkAllowed(url: string): void {
    schemeOf(url);
    if (this.#allow && !this.#allow.some((p) => url.startsWith(p))) {
      throw new ForbiddenPrefixError(`Worker ${this.id} may not read ${url} (allowed prefixes: ${this.#allow.join(', ')})`, { url });
    }
  }

  async #handleRead(u: URL, res: ServerResponse): Promise<void> {
    const url = requiredParam(u, 'url');
    this.#checkAllowed(url);
    const offset = intParam(u, 'offset');
    const length = intParam(u, 'length');
    checkRange(url, offset, length);
    if (length > this.#maxReadBytes) {
      throw new BadRequestError(`Range of ${length} bytes exceeds this worker's maxReadBytes ${this.#maxReadBytes} (${url})`, { url });
    }
    const etag = u.searchParams.get('etag') ?? undefined;
    if (this.#hints && etag !== undefined) {
      const { first, count } = pagesForRange(offset, length, this.pageSize);
      this.#hints.classify(Array.from({ length: count }, (_, i) => pageKey(url, etag, first + i)));
    }
    const { pieces, info, hit } = await this.#readPieces(url, offset, length, etag);
    res.setHeader(Headers.etag, info.etag);
    res.setHeader(Headers.cache, hit);
    const bytes = pieces.reduce((n, p) => n + p.byteLength, 0);
    this.#counters.bytesServed += bytes;
    this.#m.bytesServed.inc(bytes);
    this.#sendBytes(res, pieces, bytes);
  }

  async #statForClient(u: URL, res: ServerResponse): Promise<FileInfo> {
    const url = requiredParam(u, 'url');
    this.#checkAllowed(url);
    const { info, fetchedAt } = await this.#stat(url, false, maxAgeParam(u));
    res.setHeader(Headers.age, String(Math.max(0, Date.now() - fetchedAt)));
    return info;
  }

  async #handleList(u: URL, res: ServerResponse): Promise<void> {
    const prefix = requiredParam(u, 'prefix');
    this.#checkAllowed(prefix);
    let entry = this.#meta.getList(prefix);
    const maxAge = maxAgeParam(u);
    if (entry && maxAge !== undefined && Date.now() - entry.fetchedAt > maxAge) entry = undefined;
    if (!entry) {
      const files: FileInfo[] = [];
      this.#countStore('list');
      for await (const f of this.#ufs.list(prefix, { signal: this.#abort.signal })) files.push(f);
      const fetchedAt = Date.now();
      this.#meta.setList(prefix, files, fetchedAt);
      entry = { value: files, fetchedAt };
    }
    res.setHeader(Headers.age, String(Math.max(0, Date.now() - entry.fetchedAt)));
    this.#json(res, 200, entry.value);
  }

  async #handleInvalidate(u: URL, res: ServerResponse): Promise<void> {
    const url = requiredParam(u, 'url');
    this.#checkAllowed(url);
    this.#meta.invalidate(url);
    await this.#store.deleteFile(url);
    this.#json(res, 200, { invalidated: url });
  }

  #handleJob(u: URL, res: ServerResponse): void {
    const id = decodeURIComponent(u.pathname.slice(Paths.jobs.length));
    const job = this.#jobs.get(id);
    if (!job) throw new BadRequestError(`No such load job: ${id}`);
    this.#json(res, 200, job);
  }

  async #metrics(): Promise<string> {
    const s = this.#store.stats();
    this.#m.usage.set({ tier: 'memory' }, s.memoryBytes);
    this.#m.usage.set({ tier: 'disk' }, s.diskBytes);
    this.#m.evictions.set(s.evictions);
    return this.registry.metrics();
  }

  /** Send the pieces of a range as they lie in the page store: no copy into one buffer first. */
  #sendBytes(res: ServerResponse, pieces: readonly Uint8Array[], length: number): void {
    res.statusCode = 200;
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-length', length);
    if (pieces.length === 1) {
      res.end(pieces[0]);
      return;
    }
    res.cork();
    for (const p of pieces) res.write(p);
    res.end();
    res.uncork();
  }

  #send(res: ServerResponse, status: number, body: string, type: string): void {
    res.statusCode = status;
    res.setHeader('content-type', type);
    res.setHeader('content-length', Buffer.byteLength(body));
    res.end(body);
  }

  #json(res: ServerResponse, status: number, value: unknown): void {
    this.#send(res, status, JSON.stringify(value), 'application/json');
  }

  #sendError(res: ServerResponse, err: unknown): void {
    const e = isGranaryError(err)
      ? err
      : new InternalError(`Worker ${this.id} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    if (res.headersSent) {
      res.destroy(e);
      return;
    }
    this.#json(res, statusForCode(e.code), e.toJSON());
  }

  // ---- the cache ----

  #countStore(kind: 'stat' | 'list' | 'get'): void {
    this.#counters.storeRequests++;
    this.#m.storeRequests.inc({ kind });
  }

  async #stat(url: string, fresh = false, maxAgeMs?: number): Promise<{ info: FileInfo; fetchedAt: number }> {
    if (!fresh) {
      const e = this.#meta.getStat(url);
      if (e && (maxAgeMs === undefined || Date.now() - e.fetchedAt <= maxAgeMs)) return { info: e.value, fetchedAt: e.fetchedAt };
    }
    const info = await this.#statFlight.run(url, async () => {
      this.#countStore('stat');
      const i = await this.#ufs.stat(url, { signal: this.#abort.signal });
      this.#meta.setStat(url, i);
      return i;
    });
    return { info, fetchedAt: Date.now() };
  }

  /** The object version to serve: the requested one, checked against the store's current metadata. */
  async #version(url: string, etag: string | undefined): Promise<FileInfo> {
    let { info } = await this.#stat(url);
    if (etag !== undefined && info.etag !== etag) {
      ({ info } = await this.#stat(url, true));
      if (info.etag !== etag) {
        throw new VersionChangedError(`Object ${url} changed: asked for version ${etag}, the store has ${info.etag}`, { url });
      }
    }
    return info;
  }

  /**
   * The bytes `[offset, offset + length)` of one object version. Pages in the store
   * are used as they are; runs of missing pages are read through from the store,
   * one request per run, with `If-Match` on the version, and concurrent requests
   * for a page wait on that one read.
   */
  async readRange(url: string, offset: number, length: number, etag?: string): Promise<{ bytes: Uint8Array; info: FileInfo; hit: string }> {
    const { pieces, info, hit } = await this.#readPieces(url, offset, length, etag);
    if (pieces.length === 0) return { bytes: new Uint8Array(0), info, hit };
    if (pieces.length === 1) return { bytes: pieces[0] as Uint8Array, info, hit };
    const out = Buffer.allocUnsafe(length);
    let pos = 0;
    for (const p of pieces) {
      out.set(p, pos);
      pos += p.byteLength;
    }
    return { bytes: out, info, hit };
  }

  /** `readRange` as the slices of pages that make up the range, in order (views, not copies). */
  async #readPieces(url: string, offset: number, length: number, etag?: string): Promise<{ pieces: Uint8Array[]; info: FileInfo; hit: string }> {
    const info = await this.#version(url, etag);
    if (offset + length > info.size) {
      throw new RangeNotSatisfiableError(`Range ${offset}+${length} is past the end of ${url} (size ${info.size})`, { url });
    }
    const ps = this.pageSize;
    const { first, count } = pagesForRange(offset, length, ps);
    const pages: (Uint8Array | Promise<Uint8Array>)[] = new Array<Uint8Array | Promise<Uint8Array>>(count);
    const missing: number[] = [];
    for (let i = 0; i < count; i++) {
      const got = await this.#store.get(pageKey(url, info.etag, first + i));
      if (got) pages[i] = got;
      else missing.push(i);
    }
    this.#counters.hits += count - missing.length;
    this.#counters.misses += missing.length;
    this.#m.hits.inc(count - missing.length);
    this.#m.misses.inc(missing.length);
    // Group missing pages into runs of consecutive indices, each fetched once.
    for (let s = 0; s < missing.length; ) {
      let e = s;
      while (e + 1 < missing.length && missing[e + 1] === (missing[e] ?? 0) + 1 && e - s + 1 < this.#fetchRunPages) e++;
      const runFirst = first + (missing[s] ?? 0);
      const runCount = e - s + 1;
      const fetched = this.#fetchRun(url, info, runFirst, runCount);
      for (let k = 0; k < runCount; k++) pages[(missing[s] ?? 0) + k] = fetched[k] as Promise<Uint8Array>;
      s = e + 1;
    }
    const resolved = missing.length === 0 ? (pages as Uint8Array[]) : await Promise.all(pages.map((p) => Promise.resolve(p)));
    diag.read.publish({ worker: this.id, url, offset, length, pages: count, missing: missing.length });
    const hit = missing.length === 0 ? 'hit' : missing.length === count ? 'miss' : 'partial';
    if (count === 0) return { pieces: [], info, hit };
    const start = offset - first * ps;
    const pieces: Uint8Array[] = [];
    let pos = 0;
    for (let i = 0; i < count; i++) {
      const p = resolved[i] as Uint8Array;
      const from = i === 0 ? start : 0;
      const take = Math.min(p.byteLength - from, length - pos);
      pieces.push(p.subarray(from, from + take));
      pos += take;
    }
    return { pieces, info, hit };
  }

  /** Fetch pages [first, first+count) of one version; one promise per page, shared with concurrent readers. */
  #fetchRun(url: string, info: FileInfo, first: number, count: number): Promise<Uint8Array>[] {
    const ps = this.pageSize;
    const keys = Array.from({ length: count }, (_, k) => pageKey(url, info.etag, first + k));
    let run: Promise<Uint8Array[]> | undefined;
    const getRun = (): Promise<Uint8Array[]> => {
      run ??= (async () => {
        const start = first * ps;
        const end = Math.min(info.size, (first + count) * ps);
        this.#countStore('get');
        diag.fetch.publish({ worker: this.id, url, offset: start, length: end - start });
        const bytes = await this.#ufs.read(url, start, end - start, { etag: info.etag, signal: this.#abort.signal });
        this.#counters.bytesFromStore += bytes.byteLength;
        this.#m.bytesFromStore.inc(bytes.byteLength);
        const out: Uint8Array[] = [];
        for (let k = 0; k < count; k++) {
          const page = bytes.subarray(k * ps, Math.min(bytes.byteLength, (k + 1) * ps));
          out.push(page);
          // Belady's bypass: a page needed later than everything resident is served, not kept.
          if (this.#hints?.admitsKey(keys[k] as PageKey) ?? true) await this.#store.put(keys[k] as PageKey, page);
        }
        return out;
      })();
      return run;
    };
    return keys.map((key, k) => this.#flight.run(key, async () => ((await getRun())[k] as Uint8Array)));
  }

  // ---- hints ----

  #handleHints(body: unknown, res: ServerResponse): void {
    if (!this.#hints) throw new BadRequestError(`Worker ${this.id} runs without hints (startWorker({ hints: false }))`);
    const req = parseHintRequest(body);
    // A hint makes the worker read the store, so it is held to `allow` like a read.
    for (const a of req.accesses ?? []) this.#checkAllowed(a.url);
    this.#json(res, 200, this.#hints.registry.apply(req));
  }

  /** A prefetch of hinted pages: the same read-through (and single flight) as a read. */
  async #prefetch(url: string, etag: string, first: number, count: number): Promise<void> {
    if (this.#closing) return;
    const info = await this.#version(url, etag);
    const last = Math.min(first + count, Math.ceil(info.size / this.pageSize));
    if (last <= first) return;
    await Promise.all(this.#fetchRun(url, info, first, last - first));
  }

  // ---- preload ----

  #startLoad(body: unknown): LoadJob {
    const ranges = parseLoadBody(body);
    for (const r of ranges) this.#checkAllowed(r.url);
    const job: LoadJob = {
      id: randomUUID(),
      state: 'running',
      bytesTotal: ranges.reduce((a, r) => a + r.length, 0),
      bytesDone: 0,
      rangesTotal: ranges.length,
      rangesDone: 0,
    };
    this.#jobs.set(job.id, job);
    // Finished jobs are kept for a while so their last state can be read.
    const expire = (): void => void setTimeout(() => this.#jobs.delete(job.id), 10 * 60_000).unref();
    void (async () => {
      const queue = [...ranges];
      const lane = async (): Promise<void> => {
        for (let r = queue.shift(); r !== undefined; r = queue.shift()) {
          if (this.#closing) throw new ClosedError(`Worker ${this.id} closed during load job ${job.id}`);
          // Read page-run sized pieces so a large range does not sit in memory twice.
          const step = this.pageSize * this.#fetchRunPages;
          for (let off = r.offset; off < r.offset + r.length; off += step) {
            const len = Math.min(step, r.offset + r.length - off);
            await this.readRange(r.url, off, len, r.etag);
            job.bytesDone += len;
          }
          job.rangesDone++;
        }
      };
      await Promise.all(Array.from({ length: 4 }, lane));
      job.state = 'done';
    })()
      .catch((err: unknown) => {
        job.state = 'failed';
        const e = isGranaryError(err) ? err : new InternalError(String(err));
        job.error = { code: e.code, message: e.message };
      })
      .finally(expire);
    return job;
  }
}

function requiredParam(u: URL, name: string): string {
  const v = u.searchParams.get(name);
  if (v === null || v.length === 0) throw new BadRequestError(`Missing query parameter \`${name}\` in ${u.pathname}${u.search}`);
  return v;
}

/** A client's `maxAgeMs`: it will not accept metadata older than this (its own TTL). */
function maxAgeParam(u: URL): number | undefined {
  const raw = u.searchParams.get('maxAgeMs');
  if (raw === null) return undefined;
  if (!/^\d{1,12}$/.test(raw)) throw new BadRequestError(`Query parameter \`maxAgeMs\` must be an integer from 0 and up, got \`${raw.slice(0, 100)}\``);
  return Number(raw);
}

function intParam(u: URL, name: string): number {
  const raw = requiredParam(u, name);
  if (!/^-?\d{1,16}$/.test(raw)) throw new BadRequestError(`Query parameter \`${name}\` must be an integer, got \`${raw.slice(0, 100)}\``);
  return Number(raw);
}

async function readJsonBody(req: IncomingMessage, limit = 16 * MiB): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.byteLength;
    if (n > limit) throw new BadRequestError(`Request body over ${limit} bytes`);
    chunks.push(c);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch (err) {
    throw new BadRequestError(`Request body is not JSON: ${(err as Error).message}`);
  }
}

function parseLoadBody(body: unknown): LoadRange[] {
  const ranges = (body as { ranges?: unknown } | null)?.ranges;
  if (!Array.isArray(ranges)) throw new BadRequestError('Expected a JSON body { "ranges": [{ "url", "offset", "length", "etag"? }] }');
  return ranges.map((r: unknown, i) => {
    const o = r as Partial<LoadRange> | null;
    if (!o || typeof o.url !== 'string' || typeof o.offset !== 'number' || typeof o.length !== 'number') {
      throw new BadRequestError(`ranges[${i}] must be { url: string, offset: number, length: number, etag?: string }`);
    }
    if (o.etag !== undefined && typeof o.etag !== 'string') throw new BadRequestError(`ranges[${i}].etag must be a string`);
    checkRange(o.url, o.offset, o.length);
    return o.etag === undefined ? { url: o.url, offset: o.offset, length: o.length } : { url: o.url, offset: o.offset, length: o.length, etag: o.etag };
  });
}


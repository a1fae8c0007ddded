import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { Agent } from 'undici';
import { ClosedError, ConfigError, InvalidArgumentError, throwIfAborted } from '../errors.js';
import { LocalUfs } from '../ufs/local.js';
import { createUfs } from '../ufs/router.js';
import { schemeOf } from '../ufs/url.js';
import type { UnderFileSystem } from '../ufs/types.js';
import { optionalInt } from '../util/validate.js';
import { WorkerHints } from './hints.js';
import type { CacheWorker, WorkerInfoResponse, WorkerOptions } from './worker-options.js';
import { checkPageSize, DEFAULT_PAGE_SIZE } from './page-key.js';
import { PageStore, type PageStoreOptions, type PageStoreStats } from './page-store.js';
import { Registration } from './registration.js';
import { prepareShmDir, writeNonce, type ShortCircuitInfo } from './short-circuit-tier.js';
import { AccessPolicy, checkBind } from './worker-access.js';
import { ReadThrough, type StoreReader } from './worker-core.js';
import { workerHandler } from './worker-http.js';
import { LoadJobs } from './worker-jobs.js';
import { applyServerLimits, limitSettings, RequestLimiter, serverLimitOptions } from './worker-limits.js';
import { createWorkerServer, loadServerTls } from './worker-tls.js';
import { createWorkerMetrics, type WorkerMetrics } from './worker-metrics.js';

export type { CacheWorker, WorkerInfoResponse, WorkerOptions } from './worker-options.js';
export type { LoadJob } from './worker-jobs.js';
export type { LoadRange } from './worker-requests.js';

const MiB = 1024 * 1024;

function isUfs(v: unknown): v is UnderFileSystem {
  return typeof v === 'object' && v !== null && typeof (v as UnderFileSystem).read === 'function' && typeof (v as UnderFileSystem).stat === 'function';
}

/**
 * Start a cache worker: an HTTP server in front of a page store that reads through to
 * the store. A start that fails (the port taken, `signal` aborted) releases everything
 * it opened, so it can be retried in the same process.
 */
export async function startWorker(options: WorkerOptions = {}): Promise<CacheWorker> {
  throwIfAborted(options.signal);
  const w = new Worker(options);
  try {
    await w.start(options.signal);
  } catch (err) {
    await w.destroy(err instanceof Error ? err : undefined);
    throw err;
  }
  return w;
}

class Worker implements CacheWorker {
  readonly id: string;
  readonly pageSize: number;
  #url = '';
  readonly #opts: WorkerOptions;
  readonly #ufs: UnderFileSystem;
  readonly #ownsUfs: boolean;
  readonly #files: LocalUfs | undefined;
  readonly #agent: Agent | undefined;
  readonly #policy: AccessPolicy;
  readonly #bindWarning: string | undefined;
  #store: PageStore | undefined;
  #shortCircuit: ShortCircuitInfo | undefined;
  #core: ReadThrough | undefined;
  #jobs: LoadJobs | undefined;
  readonly #server: Server;
  #registration: Registration | undefined;
  #closing: Promise<void> | undefined;
  #destroying: Promise<void> | undefined;
  readonly #maxReadBytes: number;
  readonly #fetchRunPages: number;
  readonly #metadataTtlMs: number;
  readonly #hints: WorkerHints | undefined;
  /** Aborts every store call in flight when the worker stops; shared by all of them. */
  readonly #abort = new AbortController();
  readonly #m: WorkerMetrics;
  readonly #limiter: RequestLimiter;
  readonly #scheme: 'http' | 'https';

  constructor(opts: WorkerOptions) {
    this.#opts = opts;
    this.id = opts.id ?? randomUUID();
    this.pageSize = checkPageSize(opts.pageSize ?? DEFAULT_PAGE_SIZE);
    this.#policy = new AccessPolicy({ id: this.id, allow: opts.allow, fileRoot: opts.fileRoot, token: opts.token });
    this.#bindWarning = checkBind(opts.host ?? '127.0.0.1', opts.token, opts.insecure);
    this.#maxReadBytes = optionalInt('maxReadBytes', opts.maxReadBytes, 256 * MiB);
    this.#fetchRunPages = optionalInt('fetchRunPages', opts.fetchRunPages, 8);
    this.#metadataTtlMs = optionalInt('metadataTtlMs', opts.metadataTtlMs, 10_000, 0);
    if (opts.hints !== false) {
      this.#hints = new WorkerHints(this.pageSize, { runPages: this.#fetchRunPages, ...(opts.hints === true ? {} : opts.hints) });
    }
    if (this.#policy.fileRoot !== undefined) this.#files = new LocalUfs({ root: this.#policy.fileRoot, fsync: false });
    if (isUfs(opts.ufs)) {
      this.#ufs = opts.ufs;
      this.#ownsUfs = false;
    } else {
      const o = opts.ufs ?? {};
      // The worker's own HTTP connections apply the address rule again at connect time,
      // and follow no redirects (a redirect could leave the allowed prefix).
      if (o.http?.dispatcher === undefined) this.#agent = new Agent({ connections: o.http?.connections ?? 16, connect: { lookup: this.#policy.lookup } });
      this.#ufs = createUfs(this.#agent ? { ...o, http: { ...o.http, dispatcher: this.#agent } } : o);
      this.#ownsUfs = true;
    }
    this.#m = createWorkerMetrics(this.id);
    // Every concurrent store read listens on this one signal: many listeners are expected, not a leak.
    setMaxListeners(0, this.#abort.signal);
    const limits = limitSettings(opts);
    this.#limiter = new RequestLimiter(limits, this.#m.registry);
    const tls = loadServerTls(opts.tls);
    this.#scheme = tls === undefined ? 'http' : 'https';
    this.#server = createWorkerServer(tls, { keepAlive: true, keepAliveTimeout: 30_000, ...serverLimitOptions(limits), handshakeTimeoutMs: limits.headersTimeoutMs }, workerHandler(this.#httpContext()));
    applyServerLimits(this.#server, limits);
  }

  get url(): string {
    return this.#url;
  }

  /** `file://` URLs go to the worker's own jailed local store, whatever `ufs` is. */
  #storeFor = (url: string): StoreReader => (this.#files !== undefined && schemeOf(url) === 'file' ? this.#files : this.#ufs);

  #httpContext(): Parameters<typeof workerHandler>[0] {
    const started = (): { core: ReadThrough; jobs: LoadJobs } => this.#started();
    return {
      id: this.id,
      pageSize: this.pageSize,
      maxReadBytes: this.#maxReadBytes,
      policy: this.#policy,
      get core() {
        return started().core;
      },
      get jobs() {
        return started().jobs;
      },
      hints: this.#hints,
      metrics: this.#m,
      limiter: this.#limiter,
      closing: () => this.#closing !== undefined || this.#destroying !== undefined,
      releaseIdle: () => setImmediate(() => this.#server.closeIdleConnections()),
      info: () => this.info(),
      metricsText: () => this.#metricsText(),
    };
  }

  #started(): { store: PageStore; core: ReadThrough; jobs: LoadJobs } {
    if (!this.#store || !this.#core || !this.#jobs) throw new ClosedError(`Worker ${this.id} is not started`);
    return { store: this.#store, core: this.#core, jobs: this.#jobs };
  }

  async start(signal: AbortSignal | undefined): Promise<void> {
    const o = this.#opts;
    const storeOpts: PageStoreOptions = {
      pageSize: this.pageSize,
      memoryBytes: o.memoryBytes ?? 256 * MiB,
      policy: o.policy ?? 'lru',
      signal,
    };
    const belady = this.#hints !== undefined && storeOpts.policy === 'lru';
    if (belady && this.#hints) storeOpts.policy = this.#hints.policy;
    if (o.diskDir !== undefined) {
      storeOpts.diskDir = o.diskDir;
      storeOpts.diskBytes = o.diskBytes ?? 1024 * MiB;
    }
    if (o.shmDir !== undefined) {
      if (o.diskDir !== undefined) throw new ConfigError(`Worker ${this.id}: give \`shmDir\` or \`diskDir\`, not both`);
      // The memory tier is the page files on the tmpfs: the heap keeps none.
      Object.assign(storeOpts, await prepareShmDir(o.shmDir, o.shmGroup), { diskDir: o.shmDir, diskBytes: storeOpts.memoryBytes, memoryBytes: 0 });
    }
    const store = await PageStore.open(storeOpts);
    this.#store = store;
    if (o.shmDir !== undefined && storeOpts.fileMode !== undefined) {
      this.#shortCircuit = { dir: o.shmDir, nonce: await writeNonce(o.shmDir, storeOpts.fileMode), pageSize: this.pageSize };
    }
    const core = new ReadThrough({
      workerId: this.id,
      pageSize: this.pageSize,
      fetchRunPages: this.#fetchRunPages,
      metadataTtlMs: this.#metadataTtlMs,
      store,
      storeFor: this.#storeFor,
      metrics: this.#m,
      hints: this.#hints,
      signal: this.#abort.signal,
      closing: () => this.#closing !== undefined || this.#destroying !== undefined,
    });
    this.#core = core;
    this.#jobs = new LoadJobs(core, this.id, this.pageSize * this.#fetchRunPages);
    this.#hints?.attach(
      {
        has: (k) => store.has(k),
        hasRoom: () => {
          const s = store.stats();
          if (this.#shortCircuit) return s.diskBytes + this.pageSize <= s.diskBudget;
          return s.memoryBytes + this.pageSize <= s.memoryBudget;
        },
        fetch: (url, etag, first, count) => core.prefetch(url, etag, first, count),
      },
      belady,
    );
    this.#m.capacity.set({ tier: 'memory' }, o.memoryBytes ?? 256 * MiB);
    this.#m.capacity.set({ tier: 'disk' }, this.#shortCircuit ? 0 : (storeOpts.diskBytes ?? 0));
    throwIfAborted(signal);
    await this.#listen(o.host ?? '127.0.0.1', o.port ?? 0, signal);
    if (this.#bindWarning !== undefined) process.stderr.write(`granary worker ${this.id}: ${this.#bindWarning}\n`);
    if (o.etcd) {
      // Serve at once and register in the background: a worker started while etcd is
      // down still serves clients that know it, and joins the ring when etcd is back.
      this.#registration = new Registration({
        endpoints: o.etcd.endpoints,
        cluster: o.etcd.cluster ?? 'default',
        ttlSeconds: o.etcd.ttlSeconds ?? 10,
        auth: o.etcd.auth,
        tls: o.etcd.tls,
        info: {
          id: this.id,
          url: this.#url,
          capacityBytes: (o.memoryBytes ?? 256 * MiB) + (this.#shortCircuit ? 0 : (storeOpts.diskBytes ?? 0)),
          startedAt: Date.now(),
          host: hostname(),
          pageSize: this.pageSize,
        },
      });
      this.#registration.on('failed', () => undefined);
      const wait = AbortSignal.timeout(o.etcd.registerTimeoutMs ?? 10_000);
      const reg = this.#registration;
      // etcd unreachable: serve anyway and keep trying. Refused (wrong password, an
      // untrusted certificate): retrying cannot help, so the worker does not start.
      const refused = await reg.whenRegistered({ signal: signal ? AbortSignal.any([signal, wait]) : wait }).then(
        () => undefined,
        (err: unknown) => (reg.state === 'failed' ? err : undefined),
      );
      throwIfAborted(signal);
      if (refused !== undefined) throw refused;
    }
  }

  async #listen(host: string, port: number, signal: AbortSignal | undefined): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        cleanup();
        const where = `${host}:${port}`;
        if (err.code === 'EADDRINUSE') reject(new ConfigError(`Worker ${this.id} cannot listen on ${where}: the address is in use`, { cause: err }));
        else if (err.code === 'EADDRNOTAVAIL') reject(new ConfigError(`Worker ${this.id} cannot listen on ${where}: no such local address`, { cause: err }));
        else if (err.code === 'EACCES') reject(new ConfigError(`Worker ${this.id} may not listen on ${where} (a privileged port?)`, { cause: err }));
        else reject(err);
      };
      const onAbort = (): void => {
        cleanup();
        reject(signal?.reason);
      };
      const cleanup = (): void => {
        this.#server.off('error', onError);
        signal?.removeEventListener('abort', onAbort);
      };
      this.#server.once('error', onError);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#server.listen(port, host, () => {
        cleanup();
        resolve();
      });
    });
    const addr = this.#server.address() as AddressInfo;
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    this.#url = this.#opts.advertiseUrl ?? `${this.#scheme}://${h}:${addr.port}`;
  }

  info(): WorkerInfoResponse {
    const { store, core } = this.#started();
    const s = shmAsMemory(store.stats(), this.#shortCircuit !== undefined);
    return {
      id: this.id,
      url: this.#url,
      pageSize: this.pageSize,
      capacity: { memoryBytes: this.#opts.memoryBytes ?? 256 * MiB, diskBytes: this.#opts.diskDir ? (this.#opts.diskBytes ?? 1024 * MiB) : 0 },
      usage: { memoryBytes: s.memoryBytes, diskBytes: s.diskBytes, memoryPages: s.memoryPages, diskPages: s.diskPages },
      counters: { ...core.counters, evictions: s.evictions },
      ...(this.#hints ? { hints: this.#hints.stats() } : {}),
      ...(this.#shortCircuit ? { shortCircuit: { ...this.#shortCircuit } } : {}),
    };
  }

  async #metricsText(): Promise<string> {
    const s = shmAsMemory(this.#started().store.stats(), this.#shortCircuit !== undefined);
    this.#m.usage.set({ tier: 'memory' }, s.memoryBytes);
    this.#m.usage.set({ tier: 'disk' }, s.diskBytes);
    this.#m.evictions.set(s.evictions);
    this.#m.diskErrors.set(s.diskErrors);
    this.#m.corruptPages.set(s.corruptPages);
    return this.#m.registry.metrics();
  }

  close(): Promise<void> {
    this.#closing ??= this.#destroying ?? this.#drain();
    return this.#closing;
  }

  destroy(err?: Error): Promise<void> {
    if (err !== undefined && !(err instanceof Error)) throw new InvalidArgumentError(`Expected \`err\` to be an Error, got ${typeof err}`);
    this.#destroying ??= this.#stop(err ?? new ClosedError(`Worker ${this.id} was destroyed`), true);
    // A drain under way stops waiting: its connections are cut and its reads aborted.
    return this.#closing === undefined ? this.#destroying : Promise.all([this.#closing, this.#destroying]).then(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #drain(): Promise<void> {
    // Leave the ring first, so clients stop sending before the socket closes.
    await this.#registration?.close().catch(() => undefined);
    await this.#stop(new ClosedError(`Worker ${this.id} is closed`), false);
  }

  async #stop(reason: Error, now: boolean): Promise<void> {
    this.#jobs?.close();
    const closed = new Promise<void>((resolve) => {
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
    });
    this.#server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    if (now) {
      this.#abort.abort(reason);
      this.#server.closeAllConnections();
      void this.#registration?.close().catch(() => undefined);
    } else {
      timer = setTimeout(() => this.#server.closeAllConnections(), 2000).unref();
    }
    await closed;
    clearTimeout(timer);
    this.#abort.abort(reason);
    this.#hints?.close();
    await this.#registration?.close().catch(() => undefined);
    await this.#store?.close();
    await this.#files?.close();
    if (this.#ownsUfs) await this.#ufs.close();
    await this.#agent?.close().catch(() => undefined);
  }
}


/** With a short-circuit tier the page files on the tmpfs are the memory tier: report them so. */
function shmAsMemory(s: PageStoreStats, shm: boolean): PageStoreStats {
  if (!shm) return s;
  return { ...s, memoryBytes: s.diskBytes, memoryPages: s.diskPages, memoryBudget: s.diskBudget, diskBytes: 0, diskPages: 0, diskBudget: 0 };
}

import { channel } from 'node:diagnostics_channel';
import { connect, type NetConnectOpts } from 'node:net';
import PQueue from 'p-queue';
import { Agent, request, type Dispatcher } from 'undici';
import {
  ClosedError,
  ErrorCodes,
  InvalidArgumentError,
  UnavailableError,
  VersionChangedError,
  errorFromCode,
  isGranaryError,
  throwIfAborted,
  type GranaryError,
} from '../errors.js';
import { createUfs, type UfsOptions } from '../ufs/router.js';
import type { FileInfo, OpOptions, ReadOptions, RequestCounts, UnderFileSystem, WriteData } from '../ufs/types.js';
import { checkRange, schemeOf } from '../ufs/url.js';
import type { BreakerOptions } from './breaker.js';
import type { Membership, WorkerInfo } from './membership.js';
import { MetadataCache } from './metadata-cache.js';
import { pageKey, pagesForRange } from './page-key.js';
import { PageStore } from './page-store.js';
import { routeAccesses } from './client-hints.js';
import type { HintRequest, HintResponse } from './hint-request.js';
import { Headers, Paths, isWorkerFault } from './protocol.js';
import { HashRing, ringKey } from './ring.js';
// Sharing one membership and one set of breakers with copies in other threads (src/cache/shared-state.ts).
import { toPortable, type PortableSpec } from '../ufs/portable.js';
import type { Breaker, BreakerTable } from './shared-breakers.js';
import { describeCacheClient, ownClientState, type ClientState } from './shared-state.js';

const MiB = 1024 * 1024;
/** Reads of an object that keeps changing give up after this many versions. */
const VERSION_RETRIES = 3;

export interface CacheClientOptions {
  /** Find workers in etcd (watching `/granary/<cluster>/workers/`). */
  etcd?: { endpoints: string[]; cluster?: string };
  /** Or a fixed list of worker URLs. */
  workers?: string[];
  /** The store, for fallback reads, writes and deletes: `createUfs` options or a ready client. */
  ufs?: UfsOptions | UnderFileSystem;
  /** Bearer token the workers require. */
  token?: string;
  /**
   * Bytes of an object placed together on one worker. Smaller blocks spread a large file
   * over more workers. Every client of a cluster should use the same value.
   * @default 16 MiB
   */
  blockSize?: number;
  /** A read larger than this is split into parallel requests. @default 8 MiB */
  partSize?: number;
  /** Requests in flight to workers, over all reads. @default 32 */
  concurrency?: number;
  /** How long stat and list answers are trusted. @default 10_000 */
  metadataTtlMs?: number;
  /** A worker request slower than this fails over to the store. @default 10_000 */
  requestTimeoutMs?: number;
  /** Circuit breaker per worker. */
  breaker?: BreakerOptions;
  /** Workers tried per block before the store (1 = the owner only). @default 1 */
  replicas?: number;
  /**
   * A page cache inside this process, checked before any worker (like a client-side
   * cache of the system granary is modelled on). Off unless given.
   */
  localCache?: { memoryBytes: number; diskDir?: string; diskBytes?: number; pageSize?: number };
}

export interface CacheClientStats {
  /** Reads (parts) answered wholly from a cache: the local one or a worker's. */
  hits: number;
  /** Parts a worker had to read (wholly or partly) from the store. */
  misses: number;
  /** Parts read straight from the store because no worker could answer. */
  fallbacks: number;
  bytesFromCache: number;
  bytesFromUfs: number;
  /** Requests this client itself sent to the store (workers' own store reads not included). */
  ufsRequests: number;
  /** Requests to the store by kind, from this client. */
  ufs: RequestCounts;
}

const diag = {
  fallback: channel('granary:client:fallback'),
  ring: channel('granary:client:ring'),
};

interface Part {
  offset: number;
  length: number;
  block: number;
}

function isUfs(v: unknown): v is UnderFileSystem {
  return typeof v === 'object' && v !== null && typeof (v as UnderFileSystem).read === 'function';
}

function positive(name: string, v: number | undefined, dflt: number, min = 1): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < min) {
    throw new InvalidArgumentError(`Expected \`${name}\` to be an integer from ${min} and up, got \`${String(v)}\` (${typeof v})`);
  }
  return x;
}

/** An error that means the worker, not the request, failed: the client falls back to the store. */
class WorkerFault extends Error {}

/** Parts at least this large are read over their own connection straight into the output (`#rawRead`). */
const RAW_READ_MIN = 1024 * 1024;

/**
 * Reads through the cache workers, falling back to the store. Implements
 * `UnderFileSystem` with the store's own URLs, so the loader cannot tell it from
 * the store except by speed.
 */
export class CacheClient implements UnderFileSystem {
  readonly #ufs: UnderFileSystem;
  readonly #ownsUfs: boolean;
  readonly #membership: Membership;
  #ring: HashRing;
  readonly #unsubscribe: () => void;
  readonly #state: ClientState;
  readonly #breakers: BreakerTable;
  readonly #agent: Dispatcher;
  readonly #queue: PQueue;
  readonly #meta: MetadataCache;
  readonly #opts: CacheClientOptions;
  readonly #blockSize: number;
  readonly #partSize: number;
  readonly #timeoutMs: number;
  readonly #replicas: number;
  #local: Promise<PageStore> | undefined;
  readonly #localPageSize: number;
  #closed = false;
  readonly #counts = { hits: 0, misses: 0, fallbacks: 0, bytesFromCache: 0, bytesFromUfs: 0 };
  readonly #ufsCounts: RequestCounts = { list: 0, stat: 0, get: 0, put: 0, delete: 0, bytesRead: 0, bytesWritten: 0 };

  /**
   * @param state Internal: the membership and breakers of a copy rebuilt in another
   * thread (src/cache/rebuilders.ts). Without it the client builds its own from `options`.
   */
  constructor(options: CacheClientOptions = {}, state?: ClientState) {
    this.#opts = options;
    if (options.etcd && options.workers) throw new InvalidArgumentError('Give `etcd` or `workers`, not both');
    this.#blockSize = positive('blockSize', options.blockSize, 16 * MiB);
    this.#partSize = positive('partSize', options.partSize, 4 * MiB);
    this.#timeoutMs = positive('requestTimeoutMs', options.requestTimeoutMs, 10_000);
    this.#replicas = positive('replicas', options.replicas, 1);
    this.#meta = new MetadataCache({ ttlMs: positive('metadataTtlMs', options.metadataTtlMs, 10_000, 0) });
    this.#queue = new PQueue({ concurrency: positive('concurrency', options.concurrency, 32) });
    if (isUfs(options.ufs)) {
      this.#ufs = options.ufs;
      this.#ownsUfs = false;
    } else {
      this.#ufs = createUfs(options.ufs ?? {});
      this.#ownsUfs = true;
    }
    this.#state = state ?? ownClientState(options);
    this.#membership = this.#state.membership;
    this.#breakers = this.#state.breakers;
    this.#ring = new HashRing(this.#membership.members());
    this.#unsubscribe = this.#membership.subscribe((members) => {
      this.#ring = new HashRing(members);
      diag.ring.publish({ members: members.map((m) => m.id) });
    });
    this.#agent = new Agent({ connections: 64, keepAliveTimeout: 30_000, pipelining: 1 });
    this.#localPageSize = options.localCache?.pageSize ?? MiB;
  }

  /**
   * The options this client was built with, as data for rebuilding it in another thread
   * (`src/loader/portable-fs.ts`), or undefined when they hold a function (`breaker.now`).
   * `ufs` is returned as given: when it is a live client, the caller describes it in turn.
   * The local cache keeps its memory tier but loses its disk tier (`diskDir`, `diskBytes`):
   * two clients must never share one disk directory.
   */
  portableSpec(): { kind: 'cache'; options: CacheClientOptions } | undefined {
    const { etcd, workers, breaker, localCache, ...rest } = this.#opts;
    if (breaker?.now !== undefined) return undefined;
    const options: CacheClientOptions = { ...rest };
    if (etcd) options.etcd = { ...etcd, endpoints: [...etcd.endpoints] };
    if (workers) options.workers = [...workers];
    if (breaker) options.breaker = { ...breaker };
    if (localCache) {
      options.localCache = { memoryBytes: localCache.memoryBytes };
      if (localCache.pageSize !== undefined) options.localCache.pageSize = localCache.pageSize;
    }
    return { kind: 'cache', options };
  }

  /**
   * How another thread of this process rebuilds this client (src/ufs/portable.ts): the
   * copy shares this client's membership and breakers instead of building its own.
   */
  [toPortable](): PortableSpec | undefined {
    return describeCacheClient(this.portableSpec(), this.#state);
  }

  /** Resolves once the first membership is known (immediately for a static list). */
  async ready(): Promise<void> {
    await this.#membership.ready();
  }

  /** The workers this client currently places reads on. */
  workers(): readonly WorkerInfo[] {
    return this.#membership.members();
  }

  stats(): CacheClientStats {
    const ufs = { ...this.#ufsCounts };
    return { ...this.#counts, ufsRequests: ufs.list + ufs.stat + ufs.get + ufs.put + ufs.delete, ufs };
  }

  // ---- UnderFileSystem ----

  async stat(url: string, options: OpOptions = {}): Promise<FileInfo> {
    this.#check(url, options.signal);
    const cached = this.#meta.getStat(url);
    if (cached) return { ...cached.value };
    const viaWorker = await this.#askWorker(`meta:${url}`, async (w) => {
      const { value, age } = await this.#getJson<FileInfo>(w, Paths.stat, { url, maxAgeMs: String(this.#meta.ttlMs) }, options.signal);
      this.#meta.setStat(url, value, Date.now() - age);
      return value;
    });
    if (viaWorker !== undefined) return { ...viaWorker };
    this.#ufsCounts.stat++;
    const info = await this.#ufs.stat(url, options);
    this.#meta.setStat(url, info);
    return info;
  }

  async *list(prefixUrl: string, options: OpOptions = {}): AsyncIterable<FileInfo> {
    this.#check(prefixUrl, options.signal);
    let files = this.#meta.getList(prefixUrl)?.value;
    if (!files) {
      files = await this.#askWorker(`meta:${prefixUrl}`, async (w) => {
        const { value, age } = await this.#getJson<FileInfo[]>(w, Paths.list, { prefix: prefixUrl, maxAgeMs: String(this.#meta.ttlMs) }, options.signal);
        this.#meta.setList(prefixUrl, value, Date.now() - age);
        return value;
      });
    }
    if (!files) {
      this.#ufsCounts.list++;
      files = [];
      for await (const f of this.#ufs.list(prefixUrl, options)) files.push(f);
      this.#meta.setList(prefixUrl, files);
    }
    for (const f of files) {
      throwIfAborted(options.signal);
      yield { ...f };
    }
  }

  async read(url: string, offset: number, length: number, options: ReadOptions = {}): Promise<Uint8Array> {
    this.#check(url, options.signal);
    checkRange(url, offset, length);
    if (options.etag !== undefined) return this.#readVersion(url, offset, length, options.etag, options.signal);
    // No version given: read the current one, and if it changes under us, start
    // over on the new version (a few times), so the result never mixes two versions.
    for (let attempt = 1; ; attempt++) {
      const info = await this.stat(url, options);
      try {
        return await this.#readVersion(url, offset, length, info.etag, options.signal, info.size);
      } catch (err) {
        if (!isGranaryError(err) || err.code !== ErrorCodes.VERSION_CHANGED || attempt >= VERSION_RETRIES) throw err;
        this.#meta.invalidate(url);
      }
    }
  }

  async write(url: string, data: WriteData, options: OpOptions = {}): Promise<FileInfo> {
    this.#check(url, options.signal);
    this.#ufsCounts.put++;
    const info = await this.#ufs.write(url, data, options);
    await this.invalidate(url);
    this.#meta.setStat(url, info);
    return info;
  }

  async delete(url: string, options: OpOptions = {}): Promise<void> {
    this.#check(url, options.signal);
    this.#ufsCounts.delete++;
    await this.#ufs.delete(url, options);
    await this.invalidate(url);
  }

  /** Forget what this client and every worker cache for a URL (metadata and pages). */
  async invalidate(url: string): Promise<void> {
    this.#meta.invalidate(url);
    if (this.#local) await (await this.#local).deleteFile(url);
    await Promise.all(
      this.#membership.members().map((w) =>
        this.#send(w, 'POST', Paths.invalidate, { url }, undefined).then(
          (r) => r.body.dump(),
          () => undefined,
        ),
      ),
    );
  }

  /**
   * Tell the workers what job `jobId` will read, and where it is (docs/hints.md). Each
   * access goes to the worker that owns its block; the other fields (`cursor`,
   * `readFrom`, `lookahead`, `ttlMs`, `reset`, `end`) go to every worker. Hints are
   * advice: a worker that fails or refuses them is counted in `failed`, never thrown.
   *
   * @example
   * await fs.hint('job-7', { reset: true, cursor: 0, accesses: [{ url, etag, offset: 0, length: 4 << 20, pos: 0 }] });
   * await fs.hint('job-7', { end: true });
   */
  async hint(jobId: string, hint: Omit<HintRequest, 'job'>, options: OpOptions = {}): Promise<{ accepted: number; dropped: number; failed: number }> {
    if (this.#closed) throw new ClosedError(`CacheClient is closed (hints of job ${jobId})`);
    throwIfAborted(options.signal);
    const members = this.#membership.members();
    const byWorker = routeAccesses(hint.accesses ?? [], this.#blockSize, (url, etag, block) => this.#ring.owners(ringKey(url, etag, block), 1)[0]?.id);
    const out = { accepted: 0, dropped: 0, failed: 0 };
    await Promise.all(
      members.map(async (w) => {
        const accesses = byWorker.get(w.id);
        try {
          const r = await this.#postJson<HintResponse>(w, Paths.hints, { ...hint, job: jobId, accesses }, options.signal);
          out.accepted += r.accepted;
          out.dropped += r.dropped;
        } catch {
          out.failed++;
        }
      }),
    );
    return out;
  }

  /**
   * Preload objects into the workers that own them: every block goes to its owner as
   * a load job; `onProgress` sees the bytes done so far.
   */
  async load(prefixUrl: string, options: OpOptions & { onProgress?: (done: number, total: number) => void } = {}): Promise<{ files: number; bytes: number }> {
    const files: FileInfo[] = [];
    for await (const f of this.list(prefixUrl, options)) files.push(f);
    const byWorker = new Map<string, { worker: WorkerInfo; ranges: { url: string; etag: string; offset: number; length: number }[] }>();
    let total = 0;
    for (const f of files) {
      for (const part of this.#parts(0, f.size, this.#blockSize)) {
        const w = this.#ring.owners(ringKey(f.url, f.etag, part.block), 1)[0];
        if (!w) continue;
        let e = byWorker.get(w.id);
        if (!e) byWorker.set(w.id, (e = { worker: w, ranges: [] }));
        e.ranges.push({ url: f.url, etag: f.etag, offset: part.offset, length: part.length });
        total += part.length;
      }
    }
    const done = new Map<string, number>();
    const report = (): void => options.onProgress?.([...done.values()].reduce((a, b) => a + b, 0), total);
    await Promise.all(
      [...byWorker.values()].map(async ({ worker, ranges }) => {
        const job = await this.#postJson<{ id: string }>(worker, Paths.load, { ranges }, options.signal);
        for (;;) {
          const { value: st } = await this.#getJson<{ state: string; bytesDone: number; error?: { code: string; message: string } }>(
            worker,
            Paths.jobs + encodeURIComponent(job.id),
            {},
            options.signal,
          );
          done.set(worker.id, st.bytesDone);
          report();
          if (st.state === 'done') return;
          if (st.state === 'failed') throw errorFromCode(st.error?.code ?? 'GRANARY_ERR_INTERNAL', st.error?.message ?? 'load failed');
          await new Promise((r) => setTimeout(r, 200));
        }
      }),
    );
    return { files: files.length, bytes: total };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    this.#queue.clear();
    await this.#state.close();
    await this.#agent.close();
    if (this.#local) await (await this.#local).close();
    if (this.#ownsUfs) await this.#ufs.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- reads ----

  #check(url: string, signal: AbortSignal | undefined): void {
    if (this.#closed) throw new ClosedError(`CacheClient is closed (used for ${url})`, { url });
    throwIfAborted(signal);
    schemeOf(url);
  }

  /** Split [offset, offset+length) at block boundaries and into pieces of at most `max` bytes. */
  #parts(offset: number, length: number, max: number): Part[] {
    const parts: Part[] = [];
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const block = Math.floor(pos / this.#blockSize);
      const blockEnd = Math.min(end, (block + 1) * this.#blockSize);
      const len = Math.min(max, blockEnd - pos);
      parts.push({ offset: pos, length: len, block });
      pos += len;
    }
    return parts;
  }

  async #readVersion(url: string, offset: number, length: number, etag: string, signal: AbortSignal | undefined, size?: number): Promise<Uint8Array> {
    if (length === 0) {
      if (size !== undefined && offset <= size) return new Uint8Array(0);
      return this.#storeRead(url, offset, 0, etag, signal);
    }
    if (this.#opts.localCache) return this.#readViaLocal(url, offset, length, etag, signal);
    // Memory of its own (never Buffer's shared pool, which serves allocations under 4 KiB:
    // a view at the pool's start made concurrent small reads overwrite each other), and
    // exactly `length` long, so a caller may transfer it to another thread without a copy.
    const out = new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
    const parts = this.#parts(offset, length, this.#partSize);
    await Promise.all(parts.map((p) => this.#readPart(url, etag, p, out, p.offset - offset, signal)));
    return out;
  }

  /** Read through the local page cache: whole pages, so they can be kept. */
  async #readViaLocal(url: string, offset: number, length: number, etag: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    const local = await this.#localStore();
    const ps = this.#localPageSize;
    const { first, count } = pagesForRange(offset, length, ps);
    const pages: Uint8Array[] = [];
    let size: number | undefined;
    for (let i = 0; i < count; i++) {
      const key = pageKey(url, etag, first + i);
      let page = await local.get(key);
      if (page) {
        this.#counts.hits++;
        this.#counts.bytesFromCache += page.byteLength;
      } else {
        size ??= (await this.stat(url, { signal })).size;
        const start = (first + i) * ps;
        const len = Math.min(ps, size - start);
        if (len <= 0) return this.#storeRead(url, offset, length, etag, signal);
        const buf = new Uint8Array(len);
        await Promise.all(this.#parts(start, len, this.#partSize).map((p) => this.#readPart(url, etag, p, buf, p.offset - start, signal)));
        await local.put(key, buf);
        page = buf;
      }
      pages.push(page);
    }
    const out = new Uint8Array(length);
    let pos = 0;
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i] as Uint8Array;
      const from = i === 0 ? offset - first * ps : 0;
      const take = Math.min(p.byteLength - from, length - pos);
      if (take < 0) break;
      out.set(p.subarray(from, from + take), pos);
      pos += take;
    }
    if (pos !== length) return this.#storeRead(url, offset, length, etag, signal);
    return out;
  }

  #localStore(): Promise<PageStore> {
    const lc = this.#opts.localCache;
    if (!lc) throw new InvalidArgumentError('no local cache configured');
    this.#local ??= PageStore.open({
      pageSize: this.#localPageSize,
      memoryBytes: lc.memoryBytes,
      diskDir: lc.diskDir,
      diskBytes: lc.diskBytes,
    });
    return this.#local;
  }

  async #readPart(url: string, etag: string, part: Part, out: Uint8Array, at: number, signal: AbortSignal | undefined): Promise<void> {
    const candidates = this.#ring.owners(ringKey(url, etag, part.block), this.#replicas);
    for (const w of candidates) {
      const breaker = this.#breaker(w.id);
      if (!breaker.allow()) continue;
      try {
        const hit = await this.#queue.add(() => this.#workerRead(w, url, etag, part, out, at, signal), { signal });
        breaker.success();
        if (hit === 'hit') this.#counts.hits++;
        else this.#counts.misses++;
        this.#counts.bytesFromCache += part.length;
        return;
      } catch (err) {
        throwIfAborted(signal);
        if (!(err instanceof WorkerFault)) {
          breaker.success();
          throw err;
        }
        breaker.failure();
        diag.fallback.publish({ worker: w.id, url, offset: part.offset, length: part.length, reason: err.message });
      }
    }
    // No worker could answer: exactly one read from the store for this part.
    this.#counts.fallbacks++;
    const bytes = await this.#storeRead(url, part.offset, part.length, etag, signal);
    out.set(bytes, at);
  }

  async #storeRead(url: string, offset: number, length: number, etag: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    this.#ufsCounts.get++;
    const bytes = await this.#ufs.read(url, offset, length, { etag, signal });
    this.#ufsCounts.bytesRead += bytes.byteLength;
    this.#counts.bytesFromUfs += bytes.byteLength;
    return bytes;
  }

  #breaker(id: string): Breaker {
    return this.#breakers.get(id);
  }

  /** One ranged read from a worker, written straight into `out` at `at`. Worker faults throw `WorkerFault`. */
  async #workerRead(w: WorkerInfo, url: string, etag: string, part: Part, out: Uint8Array, at: number, signal: AbortSignal | undefined): Promise<string> {
    if (part.length >= RAW_READ_MIN && w.url.startsWith('http://')) return this.#rawRead(w, url, etag, part, out, at, signal);
    const res = await this.#send(w, 'GET', Paths.read, { url, etag, offset: String(part.offset), length: String(part.length) }, signal);
    if (res.statusCode !== 200) throw await this.#errorFrom(w, res, url);
    const got = res.headers[Headers.etag];
    if (got !== etag) {
      await res.body.dump();
      throw new WorkerFault(`worker ${w.id} answered version ${String(got)} for ${url}, expected ${etag}`);
    }
    let pos = 0;
    try {
      // 'data' events rather than async iteration: one less promise per 64 KiB chunk on the hot path.
      await new Promise<void>((resolve, reject) => {
        const body = res.body;
        body.on('data', (chunk: Buffer) => {
          if (pos + chunk.byteLength > part.length) {
            body.destroy(new WorkerFault(`worker ${w.id} sent more than ${part.length} bytes for ${url}`));
            return;
          }
          out.set(chunk, at + pos);
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
    if (pos !== part.length) throw new WorkerFault(`worker ${w.id} sent ${pos} of ${part.length} bytes for ${url}`);
    const cache = res.headers[Headers.cache];
    return typeof cache === 'string' ? cache : 'miss';
  }

  async #send(w: WorkerInfo, method: 'GET' | 'POST', path: string, query: Record<string, string>, signal: AbortSignal | undefined, body?: string): Promise<Dispatcher.ResponseData> {
    const qs = new URLSearchParams(query).toString();
    const headers: Record<string, string> = {};
    if (this.#opts.token) headers.authorization = `Bearer ${this.#opts.token}`;
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
      throw new WorkerFault(`worker ${w.id} at ${w.url} unreachable: ${(err as Error).message}`);
    }
  }

  /**
   * A large ranged read on its own connection (`connection: close`), the socket reading
   * straight into `out` (net `onread`): no 64 KiB chunk per read to allocate, copy and
   * collect, which is most of undici's CPU per byte for multi-MiB parts.
   */
  #rawRead(w: WorkerInfo, url: string, etag: string, part: Part, out: Uint8Array, at: number, signal: AbortSignal | undefined): Promise<string> {
    throwIfAborted(signal);
    const target = new URL(w.url);
    const qs = new URLSearchParams({ url, etag, offset: String(part.offset), length: String(part.length) }).toString();
    let req = `GET ${target.pathname.replace(/\/$/, '')}${Paths.read}?${qs} HTTP/1.1\r\nhost: ${target.host}\r\nconnection: close\r\n`;
    if (this.#opts.token) req += `authorization: Bearer ${this.#opts.token}\r\n`;
    req += '\r\n';
    return new Promise<string>((resolve, reject) => {
      const head = Buffer.allocUnsafe(16 * 1024);
      let headLen = 0;
      let status = 0;
      let headers = new Map<string, string>();
      let bodyLen = -1;
      let got = 0;
      let errBody: Buffer | undefined;
      let done = false;
      const finish = (err: Error | undefined, value?: string): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.destroy();
        if (err) reject(err);
        else resolve(value ?? 'miss');
      };
      const onAbort = (): void => {
        try {
          throwIfAborted(signal);
        } catch (err) {
          finish(err as Error);
        }
      };
      const fault = (msg: string): void => finish(new WorkerFault(msg));
      const onBodyDone = (): void => {
        if (status === 200) {
          const cache = headers.get(Headers.cache);
          finish(undefined, cache ?? 'miss');
          return;
        }
        void this.#errorFromText(w, status, (errBody ?? Buffer.alloc(0)).toString('utf8'), url).then((e) => finish(e));
      };
      const onHead = (): void => {
        const text = head.toString('latin1', 0, headLen);
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) {
          if (headLen === head.byteLength) fault(`worker ${w.id} sent over ${head.byteLength} bytes of headers for ${url}`);
          return;
        }
        const lines = text.slice(0, end).split('\r\n');
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
        if (!m) return fault(`worker ${w.id} sent a malformed status line for ${url}`);
        status = Number(m[1]);
        headers = new Map();
        for (let i = 1; i < lines.length; i++) {
          const l = lines[i] as string;
          const c = l.indexOf(':');
          if (c > 0) headers.set(l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim());
        }
        const cl = Number(headers.get('content-length') ?? Number.NaN);
        if (!Number.isSafeInteger(cl) || cl < 0) return fault(`worker ${w.id} answered ${status} without a content-length for ${url}`);
        bodyLen = cl;
        if (status === 200) {
          const gotTag = headers.get(Headers.etag);
          if (gotTag !== etag) return fault(`worker ${w.id} answered version ${String(gotTag)} for ${url}, expected ${etag}`);
          if (cl > part.length) return fault(`worker ${w.id} sent more than ${part.length} bytes for ${url}`);
          if (cl !== part.length) return fault(`worker ${w.id} sent ${cl} of ${part.length} bytes for ${url}`);
        } else {
          if (cl > 1024 * 1024) return fault(`worker ${w.id} answered ${status} with a ${cl}-byte body for ${url}`);
          errBody = Buffer.allocUnsafe(cl);
        }
        const extra = head.subarray(end + 4, headLen);
        if (extra.byteLength > bodyLen) return fault(`worker ${w.id} sent more than ${bodyLen} bytes for ${url}`);
        if (status === 200) out.set(extra, at);
        else extra.copy(errBody as Buffer, 0);
        got = extra.byteLength;
        if (got === bodyLen) onBodyDone();
      };
      const socket = connect({
        host: target.hostname.replace(/^\[|\]$/g, ''),
        port: Number(target.port || 80),
        onread: {
          buffer: () => {
            if (bodyLen < 0) return head.subarray(headLen);
            if (status === 200) return out.subarray(at + got, at + bodyLen);
            return (errBody as Buffer).subarray(got);
          },
          callback: (n: number) => {
            if (done) return false;
            if (bodyLen < 0) {
              headLen += n;
              onHead();
            } else {
              got += n;
              if (got === bodyLen) onBodyDone();
            }
            return !done;
          },
        },
      } satisfies NetConnectOpts);
      socket.on('error', (err) => fault(`worker ${w.id} at ${w.url} unreachable: ${err.message}`));
      socket.on('close', () => {
        if (bodyLen < 0) fault(`worker ${w.id} at ${w.url} closed the connection before answering for ${url}`);
        else fault(`worker ${w.id} broke off the body of ${url}: sent ${got} of ${bodyLen} bytes`);
      });
      const timer = setTimeout(() => fault(`worker ${w.id} took over ${this.#timeoutMs} ms`), this.#timeoutMs);
      timer.unref();
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.write(req);
    });
  }

  /** Turn a non-200 answer into a coded error (the request's fault) or a WorkerFault (the worker's). */
  async #errorFrom(w: WorkerInfo, res: Dispatcher.ResponseData, url: string): Promise<Error> {
    return this.#errorFromText(w, res.statusCode, await res.body.text().catch(() => ''), url);
  }

  async #errorFromText(w: WorkerInfo, statusCode: number, text: string, url: string): Promise<Error> {
    const res = { statusCode };
    let payload: { code?: unknown; message?: unknown } = {};
    try {
      payload = JSON.parse(text) as typeof payload;
    } catch {
      return new WorkerFault(`worker ${w.id} answered ${res.statusCode} with a malformed body for ${url}`);
    }
    const code = typeof payload.code === 'string' ? payload.code : '';
    const message = typeof payload.message === 'string' ? payload.message : `worker ${w.id} answered ${res.statusCode}`;
    if (isWorkerFault(res.statusCode) || !code.startsWith('GRANARY_ERR_')) return new WorkerFault(`worker ${w.id}: ${res.statusCode} ${message}`);
    // A worker that may not read this prefix, or whose credentials the store refuses,
    // is not the last word: the client's own store access may succeed.
    if (code === ErrorCodes.FORBIDDEN_PREFIX || code === ErrorCodes.UNAUTHORIZED || code === ErrorCodes.ACCESS_DENIED) {
      return new WorkerFault(`worker ${w.id}: ${message}`);
    }
    const e: GranaryError = errorFromCode(code, message, url);
    if (e.code === ErrorCodes.VERSION_CHANGED) return new VersionChangedError(message, { url });
    return e;
  }

  async #getJson<T>(w: WorkerInfo, path: string, query: Record<string, string>, signal: AbortSignal | undefined): Promise<{ value: T; age: number }> {
    const res = await this.#send(w, 'GET', path, query, signal);
    if (res.statusCode !== 200) throw await this.#errorFrom(w, res, query.url ?? query.prefix ?? path);
    try {
      const value = (await res.body.json()) as T;
      const age = Number(res.headers[Headers.age] ?? 0);
      return { value, age: Number.isFinite(age) && age >= 0 ? age : 0 };
    } catch (err) {
      throw new WorkerFault(`worker ${w.id} sent malformed JSON for ${path}: ${(err as Error).message}`);
    }
  }

  async #postJson<T>(w: WorkerInfo, path: string, body: unknown, signal: AbortSignal | undefined): Promise<T> {
    const res = await this.#send(w, 'POST', path, {}, signal, JSON.stringify(body));
    if (res.statusCode !== 202 && res.statusCode !== 200) {
      const e = await this.#errorFrom(w, res, path);
      throw e instanceof WorkerFault ? new UnavailableError(e.message) : e;
    }
    return (await res.body.json()) as T;
  }

  /**
   * Ask the worker that owns `key` (then its replicas). Resolves `undefined` when no
   * worker could answer, so the caller asks the store itself.
   */
  async #askWorker<T>(key: string, fn: (w: WorkerInfo) => Promise<T>): Promise<T | undefined> {
    for (const w of this.#ring.owners(key, this.#replicas)) {
      const breaker = this.#breaker(w.id);
      if (!breaker.allow()) continue;
      try {
        const v = await fn(w);
        breaker.success();
        return v;
      } catch (err) {
        if (!(err instanceof WorkerFault)) {
          breaker.success();
          throw err;
        }
        breaker.failure();
        diag.fallback.publish({ worker: w.id, key, reason: err.message });
      }
    }
    this.#counts.fallbacks++;
    return undefined;
  }
}

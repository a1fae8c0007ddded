import { channel } from 'node:diagnostics_channel';
import PQueue from 'p-queue';
import { ClosedError, ErrorCodes, isGranaryError, throwIfAborted } from '../errors.js';
import { createUfs } from '../ufs/router.js';
import type { FileInfo, OpOptions, ReadOptions, UnderFileSystem, WriteData } from '../ufs/types.js';
import { readRange, schemeOf } from '../ufs/url.js';
import { splitRange, type Part } from './blocks.js';
import { CallScope, type CallInfo } from './call-scope.js';
import { invalidateOnWorkers, loadIntoWorkers, sendHints, type AdminTarget, type HintResult, type LoadOptions, type LoadResult } from './client-admin.js';
import { ClientMetadata } from './client-metadata.js';
import { clientSettings, type CacheClientOptions, type CacheClientStats } from './client-options.js';
import { CountedStore } from './counted-store.js';
import type { HintRequest } from './hint-request.js';
import { LocalPageTier } from './local-page-tier.js';
import type { Membership, WorkerInfo } from './membership.js';
import { HashRing, ringKey } from './ring.js';
import { ShortCircuitReader, shortCircuitEnabled } from './short-circuit.js';
import { reportCorrupt } from './client-corrupt.js';
import { ChecksumFault } from './page-checksum.js';
import { WorkerFault } from './worker-errors.js';
import { WorkerTransport } from './worker-transport.js';
// Sharing one membership and one set of breakers with copies in other threads (src/cache/shared-state.ts).
import { toPortable, type PortableSpec } from '../ufs/portable.js';
import type { Breaker, BreakerTable } from './shared-breakers.js';
import { describeCacheClient, ownClientState, type ClientState } from './shared-state.js';

/** A read whose version changed under it refreshes the metadata and tries once more, then reports `GRANARY_ERR_VERSION_CHANGED`. */
const VERSION_ATTEMPTS = 2;

export type { CacheClientOptions, CacheClientStats } from './client-options.js';

const diag = {
  fallback: channel('granary:client:fallback'),
  ring: channel('granary:client:ring'),
};

function isUfs(v: unknown): v is UnderFileSystem {
  return typeof v === 'object' && v !== null && typeof (v as UnderFileSystem).read === 'function';
}

function closedError(call: CallInfo): Error {
  return new ClosedError(`CacheClient is closed (${call.what}${call.url === undefined ? '' : ` ${call.url}`})`, { url: call.url });
}

/** Wait for every promise, then reject with the first failure: no part outlives the read. */
async function all(work: Promise<void>[]): Promise<void> {
  if (work.length === 1) return work[0];
  const results = await Promise.allSettled(work);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/**
 * Reads through the cache workers, falling back to the store. Implements
 * `UnderFileSystem` with the store's own URLs, so the loader cannot tell it from
 * the store except by speed.
 *
 * `close()` ends every call queued or in flight with `GRANARY_ERR_CLOSED` and resolves
 * once the connections, the membership, the local tier and an owned store are closed.
 */
export class CacheClient implements UnderFileSystem {
  readonly #opts: CacheClientOptions;
  readonly #store: CountedStore;
  readonly #ownsUfs: boolean;
  readonly #membership: Membership;
  #ring: HashRing;
  readonly #unsubscribe: () => void;
  readonly #state: ClientState;
  readonly #breakers: BreakerTable;
  readonly #transport: WorkerTransport;
  readonly #queue: PQueue;
  readonly #metadata: ClientMetadata;
  readonly #tier: LocalPageTier | undefined;
  readonly #shortCircuit: ShortCircuitReader | undefined;
  readonly #admin: AdminTarget;
  readonly #calls = new CallScope();
  readonly #blockSize: number;
  readonly #partSize: number;
  readonly #replicas: number;
  #closing: Promise<void> | undefined;
  readonly #counts = { hits: 0, misses: 0, fallbacks: 0, bytesFromCache: 0, bytesFromUfs: 0, corrupt: 0 };

  /**
   * @param state Internal: the membership and breakers of a copy rebuilt in another
   * thread (src/cache/rebuilders.ts). Without it the client builds its own from `options`.
   */
  constructor(options: CacheClientOptions = {}, state?: ClientState) {
    this.#opts = options;
    const settings = clientSettings(options);
    this.#blockSize = settings.blockSize;
    this.#partSize = settings.partSize;
    this.#replicas = settings.replicas;
    this.#queue = new PQueue({ concurrency: settings.concurrency });
    this.#state = state ?? ownClientState(options);
    this.#membership = this.#state.membership;
    this.#breakers = this.#state.breakers;
    this.#ownsUfs = !isUfs(options.ufs);
    this.#store = new CountedStore(isUfs(options.ufs) ? options.ufs : createUfs(options.ufs ?? {}));
    this.#ring = new HashRing(this.#membership.members());
    this.#unsubscribe = this.#membership.subscribe((members) => {
      this.#ring = new HashRing(members);
      diag.ring.publish({ members: members.map((m) => m.id) });
    });
    this.#transport = new WorkerTransport({ token: options.token, tlsCa: options.tlsCa, timeoutMs: settings.requestTimeoutMs, checksums: options.checksums });
    this.#metadata = new ClientMetadata(settings.metadataTtlMs, (key, signal, fn) => this.#askWorker(key, signal, fn), this.#transport, this.#store);
    this.#admin = {
      transport: this.#transport,
      blockSize: this.#blockSize,
      members: () => this.#membership.members(),
      ownerOf: (url, etag, block) => this.#ring.owners(ringKey(url, etag, block), 1)[0],
    };
    this.#tier = options.localCache && new LocalPageTier(this.#routed(), options.localCache);
    this.#shortCircuit = shortCircuitEnabled(options.shortCircuit) ? new ShortCircuitReader(this.#transport) : undefined;
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
  ready(options: OpOptions = {}): Promise<void> {
    return this.#calls.run({ what: 'ready' }, options.signal, (signal) => this.#membership.ready({ signal }));
  }

  /** The workers this client currently places reads on. */
  workers(): readonly WorkerInfo[] {
    return this.#membership.members();
  }

  /** Counters so far; also after `close()`. */
  stats(): CacheClientStats {
    const ufs = this.#store.counts();
    const local = this.#tier?.stats() ?? { hits: 0, bytesFromCache: 0 };
    return {
      ...this.#counts,
      hits: this.#counts.hits + local.hits,
      bytesFromCache: this.#counts.bytesFromCache + local.bytesFromCache,
      ufsRequests: ufs.list + ufs.stat + ufs.get + ufs.put + ufs.delete,
      ufs,
      shortCircuit: this.#shortCircuit?.stats() ?? { hits: 0, misses: 0, bytes: 0, workers: 0 },
    };
  }

  stat(url: string, options: OpOptions = {}): Promise<FileInfo> {
    return this.#calls.run({ what: 'stat', url }, options.signal, (signal) => {
      schemeOf(url);
      return this.#metadata.stat(url, signal);
    });
  }

  async *list(prefixUrl: string, options: OpOptions = {}): AsyncIterable<FileInfo> {
    const call = { what: 'list', url: prefixUrl };
    const files = await this.#calls.run(call, options.signal, (signal) => {
      schemeOf(prefixUrl);
      return this.#metadata.list(prefixUrl, signal);
    });
    for (const f of files) {
      const closed = this.#calls.endError(call);
      if (closed) throw closed;
      throwIfAborted(options.signal);
      yield { ...f };
    }
  }

  /**
   * Bytes of one object through the cache: `length` bytes from `offset`, or with both
   * omitted the whole object (its current version, or the one `options.etag` names).
   */
  read(url: string, offset?: number, length?: number, options: ReadOptions = {}): Promise<Uint8Array> {
    return this.#calls.run({ what: 'read', url }, options.signal, async (signal) => {
      schemeOf(url);
      const range = readRange(url, offset, length);
      if (options.etag === undefined) return this.#readCurrent(url, range, signal);
      // A version the caller pinned: its size is known when the metadata names the same version.
      const known = this.#metadata.known(url);
      const size = known?.etag === options.etag ? known.size : options.size;
      if (range !== undefined) return this.#readVersion(url, range.offset, range.length, options.etag, signal, size);
      const whole = size ?? (await this.#metadata.stat(url, signal)).size;
      return this.#readVersion(url, 0, whole, options.etag, signal, size);
    });
  }

  write(url: string, data: WriteData, options: OpOptions = {}): Promise<FileInfo> {
    return this.#calls.run({ what: 'write', url }, options.signal, async (signal) => {
      schemeOf(url);
      const info = await this.#store.write(url, data, signal);
      await this.#invalidate(url, signal);
      this.#metadata.remember(url, info);
      return info;
    });
  }

  delete(url: string, options: OpOptions = {}): Promise<void> {
    return this.#calls.run({ what: 'delete', url }, options.signal, async (signal) => {
      schemeOf(url);
      await this.#store.delete(url, signal);
      await this.#invalidate(url, signal);
    });
  }

  /** Forget what this client and every worker cache for a URL (metadata and pages). */
  invalidate(url: string, options: OpOptions = {}): Promise<void> {
    return this.#calls.run({ what: 'invalidate', url }, options.signal, (signal) => this.#invalidate(url, signal));
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
  hint(jobId: string, hint: Omit<HintRequest, 'job'>, options: OpOptions = {}): Promise<HintResult> {
    return this.#calls.run({ what: `hints of job ${jobId}` }, options.signal, (signal) => sendHints(this.#admin, jobId, hint, signal));
  }

  /**
   * Preload objects into the workers that own them: every block goes to its owner as
   * a load job; `onProgress` sees the bytes done so far.
   */
  load(prefixUrl: string, options: LoadOptions = {}): Promise<LoadResult> {
    return this.#calls.run({ what: 'load', url: prefixUrl }, options.signal, async (signal) => {
      schemeOf(prefixUrl);
      const files = await this.#metadata.list(prefixUrl, signal);
      return loadIntoWorkers(this.#admin, files, { onProgress: options.onProgress, signal });
    });
  }

  /**
   * End every call queued or in flight with `GRANARY_ERR_CLOSED` (later calls fail at
   * once), wait until their work has stopped, then close the worker connections, the
   * membership, the local tier and the store when this client created it. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown(closedError, undefined);
    return this.#closing;
  }

  /** Stop at once: calls queued or in flight fail with `err` (or `GRANARY_ERR_CLOSED`), connections are cut. Idempotent. */
  destroy(err?: Error): Promise<void> {
    this.#closing ??= this.#shutdown(err ? () => err : closedError, err ?? new ClosedError('CacheClient was destroyed')).catch(() => undefined);
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #shutdown(reasonFor: (call: CallInfo) => Error, destroyWith: Error | undefined): Promise<void> {
    this.#unsubscribe();
    // Aborting a queued task's signal removes it from the queue and rejects it; never
    // `queue.clear()`, which drops tasks without settling them.
    this.#calls.end(reasonFor, closedError);
    this.#shortCircuit?.close();
    const errors: unknown[] = [];
    const step = async (fn: () => Promise<unknown>): Promise<void> => {
      await fn().catch((e: unknown) => errors.push(e));
    };
    if (destroyWith) await step(() => this.#transport.destroy(destroyWith));
    await this.#calls.drained();
    await step(() => this.#state.close());
    if (!destroyWith) await step(() => this.#transport.close());
    const tier = this.#tier;
    if (tier) await step(() => tier.close());
    if (this.#ownsUfs) await step(() => this.#store.inner.close());
    if (errors.length > 0) throw errors[0];
  }

  async #invalidate(url: string, signal: AbortSignal): Promise<void> {
    this.#metadata.forget(url);
    await this.#tier?.forget(url, { signal });
    await invalidateOnWorkers(this.#admin, url, signal);
  }

  /**
   * A read of the current version (the whole object when `range` is undefined), with the
   * version and size the metadata has: a version gone from the store (412) refreshes
   * the metadata and starts over once. Never two versions mixed.
   */
  async #readCurrent(url: string, range: { offset: number; length: number } | undefined, signal: AbortSignal): Promise<Uint8Array> {
    for (let attempt = 1; ; attempt++) {
      const info = await this.#metadata.stat(url, signal);
      try {
        return await this.#readVersion(url, range?.offset ?? 0, range?.length ?? info.size, info.etag, signal, info.size);
      } catch (err) {
        if (!isGranaryError(err) || err.code !== ErrorCodes.VERSION_CHANGED || attempt >= VERSION_ATTEMPTS) throw err;
        await this.#metadata.refresh(url, signal);
      }
    }
  }

  async #readVersion(url: string, offset: number, length: number, etag: string, signal: AbortSignal, size: number | undefined): Promise<Uint8Array> {
    if (length === 0) {
      if (size !== undefined && offset <= size) return new Uint8Array(0);
      return this.#storeRead(url, offset, 0, etag, size, signal);
    }
    if (this.#tier) return this.#tier.read(url, offset, length, { etag, size, signal });
    return this.#readRouted(url, offset, length, etag, size, signal);
  }

  /** The client without its local tier, for the tier to read through. */
  #routed(): UnderFileSystem {
    const store = this.#store;
    return {
      stat: (url, o) => this.#metadata.stat(url, o?.signal),
      list: (prefixUrl, o) => store.inner.list(prefixUrl, o),
      read: async (url, offset, length, o = {}) => {
        const info = o.etag === undefined || offset === undefined || length === undefined ? await this.#metadata.stat(url, o.signal) : undefined;
        return this.#readRouted(url, offset ?? 0, length ?? info?.size ?? 0, o.etag ?? info?.etag ?? '', o.size ?? info?.size, o.signal);
      },
      write: (url, data, o) => store.write(url, data, o?.signal),
      delete: (url, o) => store.delete(url, o?.signal),
      close: async () => undefined,
      [Symbol.asyncDispose]: async () => undefined,
    };
  }

  /** Each part from the worker that owns its block, or the store. */
  async #readRouted(url: string, offset: number, length: number, etag: string, size: number | undefined, signal: AbortSignal | undefined): Promise<Uint8Array> {
    // Memory of its own (never Buffer's shared pool, which serves allocations under 4 KiB:
    // a view at the pool's start made concurrent small reads overwrite each other), and
    // exactly `length` long, so a caller may transfer it to another thread without a copy.
    const out = new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
    await all(splitRange(offset, length, this.#partSize, this.#blockSize).map((p) => this.#readPart(url, etag, size, p, out, p.offset - offset, signal)));
    return out;
  }

  async #readPart(url: string, etag: string, size: number | undefined, part: Part, out: Uint8Array, at: number, signal: AbortSignal | undefined): Promise<void> {
    const req = { url, etag, size, offset: part.offset, length: part.length, out, at };
    // A same-host owner's pages straight from its tmpfs tier (short-circuit.ts), else HTTP.
    if (this.#shortCircuit && size !== undefined && (await this.#shortCircuit.read(this.#ring.owners(ringKey(url, etag, part.block), 1)[0], { ...req, size }))) {
      this.#counts.hits++;
      this.#counts.bytesFromCache += part.length;
      return;
    }
    const detail = { url, offset: part.offset, length: part.length };
    const read = (w: WorkerInfo): Promise<string> =>
      this.#transport.read(w, req, signal).catch((err: unknown) => {
        if (err instanceof ChecksumFault) {
          this.#counts.corrupt++;
          reportCorrupt(this.#transport, err);
        }
        throw err;
      });
    const hit = await this.#askWorker(ringKey(url, etag, part.block), signal, (w) => this.#queue.add(() => read(w), { signal }), detail);
    if (hit !== undefined) {
      if (hit === 'hit') this.#counts.hits++;
      else this.#counts.misses++;
      this.#counts.bytesFromCache += part.length;
      return;
    }
    // No worker could answer: exactly one read from the store for this part.
    out.set(await this.#storeRead(url, part.offset, part.length, etag, size, signal), at);
  }

  async #storeRead(url: string, offset: number, length: number, etag: string, size: number | undefined, signal: AbortSignal | undefined): Promise<Uint8Array> {
    const bytes = await this.#store.read(url, offset, length, { etag, size, signal });
    this.#counts.bytesFromUfs += bytes.byteLength;
    return bytes;
  }

  /** The circuit breaker of one worker. */
  #breaker(id: string): Breaker {
    return this.#breakers.get(id);
  }

  /**
   * Ask the worker that owns `key` (then its replicas), skipping those whose breaker is
   * open. Resolves `undefined` when no worker could answer, so the caller asks the store.
   */
  async #askWorker<T>(key: string, signal: AbortSignal | undefined, fn: (w: WorkerInfo) => Promise<T>, detail: object = { key }): Promise<T | undefined> {
    for (const w of this.#ring.owners(key, this.#replicas)) {
      const breaker = this.#breaker(w.id);
      if (!breaker.allow()) continue;
      try {
        const v = await fn(w);
        breaker.success();
        return v;
      } catch (err) {
        throwIfAborted(signal);
        if (!(err instanceof WorkerFault)) {
          breaker.success();
          throw err;
        }
        // A busy worker is alive: its part goes to the store, its breaker stays closed.
        if (err.declined) breaker.success();
        else breaker.failure();
        diag.fallback.publish({ worker: w.id, ...detail, reason: err.message });
      }
    }
    this.#counts.fallbacks++;
    return undefined;
  }
}

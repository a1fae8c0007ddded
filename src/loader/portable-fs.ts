/**
 * Store clients described as plain data, so a worker thread (which cannot receive a
 * live `CacheClient` or `S3Ufs`) can build its own equivalent client from what the
 * Dataset was opened with.
 */
import { CacheClient, type CacheClientOptions } from '../cache/client.js';
import { InvalidArgumentError } from '../errors.js';
import { HttpUfs, type HttpUfsOptions } from '../ufs/http.js';
import { LocalUfs, type LocalUfsOptions } from '../ufs/local.js';
import { portableUfsOptions, UfsRouter, type UfsOptions } from '../ufs/router.js';
import { S3Ufs, type S3UfsOptions } from '../ufs/s3.js';
import type { UnderFileSystem } from '../ufs/types.js';

/**
 * `CacheClientOptions` as data. `ufs` is router options or the spec of the client it
 * was given. The local cache keeps its memory tier (`memoryBytes`, `pageSize`) but not
 * its disk tier: two clients must never share one `diskDir`, so a rebuilt client has none.
 */
export type PortableCacheClientOptions = Omit<CacheClientOptions, 'ufs' | 'localCache'> & {
  ufs?: UfsOptions | UfsSpec | undefined;
  localCache?: { memoryBytes: number; pageSize?: number } | undefined;
};

/** A structured-clone-able description of a store client; `ufsFromSpec` builds one from it. */
export type UfsSpec =
  | { kind: 'local'; options: LocalUfsOptions }
  | { kind: 's3'; options: S3UfsOptions }
  /** Never with a `dispatcher`. */
  | { kind: 'http'; options: HttpUfsOptions }
  /** What `createUfs` returns; never with `adapters`. */
  | { kind: 'router'; options: UfsOptions }
  | { kind: 'cache'; options: PortableCacheClientOptions };

/** Nesting deeper than this is not options; it is refused rather than walked. */
const MAX_DEPTH = 32;

/** Whether `v` is only primitives, arrays and plain objects (no functions, class instances, cycles). */
function isPlainData(v: unknown, depth = 0): boolean {
  if (v === null || v === undefined) return true;
  const t = typeof v;
  if (t === 'string' || t === 'number' || t === 'boolean' || t === 'bigint') return true;
  if (t !== 'object' || depth >= MAX_DEPTH) return false;
  if (Array.isArray(v)) return v.every((x) => isPlainData(x, depth + 1));
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return false;
  if (Object.getOwnPropertySymbols(v).length > 0) return false;
  return Object.values(v as Record<string, unknown>).every((x) => isPlainData(x, depth + 1));
}

/** Whether `fs` is exactly an instance of `cls`: a subclass may behave differently, so it has no spec. */
function isExactly<T extends object>(fs: object, cls: abstract new (...args: never[]) => T): fs is T {
  const proto: unknown = Object.getPrototypeOf(fs);
  return proto === cls.prototype;
}

function isSpec(v: UfsOptions | UfsSpec): v is UfsSpec {
  return typeof (v as { kind?: unknown }).kind === 'string';
}

function isUfs(v: unknown): v is UnderFileSystem {
  return typeof v === 'object' && v !== null && typeof (v as UnderFileSystem).read === 'function';
}

/** A CacheClient built from a spec with a nested store spec: it owns that store and closes it. */
class OwningCacheClient extends CacheClient {
  readonly #inner: UnderFileSystem;

  constructor(options: CacheClientOptions, inner: UnderFileSystem) {
    super(options);
    this.#inner = inner;
  }

  override async close(): Promise<void> {
    try {
      await super.close();
    } finally {
      await this.#inner.close();
    }
  }
}

function describe(fs: unknown): UfsSpec | undefined {
  if (typeof fs !== 'object' || fs === null) return undefined;
  if (isExactly(fs, LocalUfs)) return fs.portableSpec();
  if (isExactly(fs, S3Ufs)) return fs.portableSpec();
  if (isExactly(fs, HttpUfs)) return fs.portableSpec();
  if (isExactly(fs, UfsRouter)) return fs.portableSpec();
  if (isExactly(fs, CacheClient) || isExactly(fs, OwningCacheClient)) {
    const own = fs.portableSpec();
    if (!own) return undefined;
    const { ufs, localCache, ...rest } = own.options;
    const options: PortableCacheClientOptions = rest;
    // CacheClient.portableSpec already dropped the disk tier; this narrows the type.
    if (localCache) options.localCache = localCache.pageSize === undefined ? { memoryBytes: localCache.memoryBytes } : { memoryBytes: localCache.memoryBytes, pageSize: localCache.pageSize };
    if (isUfs(ufs)) {
      const inner = describe(ufs);
      if (!inner) return undefined;
      options.ufs = inner;
    } else if (ufs !== undefined) {
      const plain = portableUfsOptions(ufs);
      if (!plain) return undefined;
      options.ufs = plain;
    }
    return { kind: 'cache', options };
  }
  return undefined;
}

/**
 * A plain, structured-clone-able description of `fs` (a snapshot: later changes to the
 * options it was built with do not show), or undefined when it cannot be rebuilt
 * elsewhere: `MemoryUfs`, a router with custom `adapters`, an `HttpUfs` with its own
 * `dispatcher`, S3 credentials given as a function, a subclass, any other object.
 * A `CacheClient`'s spec has no local disk tier (see `PortableCacheClientOptions`).
 *
 * @example
 * const spec = ufsSpecOf(fs);
 * if (spec) worker.postMessage({ spec }); // in the thread: const fs = ufsFromSpec(spec)
 */
export function ufsSpecOf(fs: unknown): UfsSpec | undefined {
  const spec = describe(fs);
  return spec !== undefined && isPlainData(spec) ? structuredClone(spec) : undefined;
}

/**
 * A new client equivalent to the one `spec` came from: the same store, the same
 * workers and options, the same bytes. The caller owns it and closes it; closing a
 * cache client built here also closes the store client built for its fallback.
 */
export function ufsFromSpec(spec: UfsSpec): UnderFileSystem {
  switch (spec.kind) {
    case 'local':
      return new LocalUfs(spec.options);
    case 's3':
      return new S3Ufs(spec.options);
    case 'http':
      return new HttpUfs(spec.options);
    case 'router':
      return new UfsRouter(spec.options);
    case 'cache': {
      const { ufs, ...rest } = spec.options;
      if (ufs === undefined || !isSpec(ufs)) return new CacheClient({ ...rest, ...(ufs === undefined ? {} : { ufs }) });
      const inner = ufsFromSpec(ufs);
      try {
        return new OwningCacheClient({ ...rest, ufs: inner }, inner);
      } catch (err) {
        inner.close().catch(() => undefined);
        throw err;
      }
    }
    default: {
      const kind: unknown = (spec as { kind?: unknown }).kind;
      throw new InvalidArgumentError(`Expected a store spec of kind local, s3, http, router or cache, got kind \`${String(kind)}\``);
    }
  }
}

/** How long a rebuilt cache client's first reads wait for its first worker list. */
const MEMBERSHIP_WAIT_MS = 5000;

/**
 * A cache client rebuilt here learns its workers afresh (from etcd, asynchronously);
 * reads before that all go to the store. Wait for the first list, but not for ever: if
 * etcd does not answer, the client falls back to the store as it would anyway.
 */
export async function membershipKnown(fs: unknown): Promise<void> {
  const f = fs as { ready?: () => Promise<void> };
  if (typeof f.ready !== 'function') return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    f.ready().catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, MEMBERSHIP_WAIT_MS);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

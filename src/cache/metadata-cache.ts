/**
 * Metadata (stat and list answers) cached with a TTL, shared by the client and the
 * worker. Entries remember when they were fetched from the store, so a chain of caches
 * (client ← worker ← store) bounds end-to-end staleness by one TTL, not one per hop.
 *
 * A listing answers stat for every object in it, and each such entry remembers the
 * prefix it came from: once it expires, a stat revalidates by listing that prefix again
 * (one request for up to 1,000 objects, shared by every stat waiting on it), never by a
 * HEAD per object. Only URLs that no listing holds are fetched one by one.
 */
import type { FileInfo } from '../ufs/types.js';
import { abortable } from '../util/retry.js';
import { SingleFlight } from './single-flight.js';

export interface Entry<V> {
  value: V;
  /** When the store answered (ms since the epoch), possibly earlier than this cache heard it. */
  fetchedAt: number;
}

interface StatEntry extends Entry<FileInfo> {
  /** The listed prefix that holds this URL: how to revalidate it. */
  prefix: string | undefined;
}

/**
 * Where the cache gets what it lacks: `maxAgeMs` is the oldest answer the caller accepts.
 * One request serves every caller waiting on it, so it carries no caller's signal.
 */
export interface MetadataSource {
  stat(url: string, maxAgeMs: number): Promise<Entry<FileInfo>>;
  list(prefix: string, maxAgeMs: number): Promise<Entry<FileInfo[]>>;
}

export interface MetadataCacheOptions {
  ttlMs: number;
  source: MetadataSource;
  /** Stat entries (and, separately, listings) kept at most; the oldest go first. @default 200_000 */
  maxEntries?: number;
}

export class MetadataCache {
  readonly ttlMs: number;
  readonly #source: MetadataSource;
  readonly #stats = new Map<string, StatEntry>();
  readonly #lists = new Map<string, Entry<FileInfo[]>>();
  readonly #maxEntries: number;
  readonly #statFlight = new SingleFlight<string, Entry<FileInfo>>();
  readonly #listFlight = new SingleFlight<string, Entry<FileInfo[]>>();

  constructor({ ttlMs, source, maxEntries = 200_000 }: MetadataCacheOptions) {
    this.ttlMs = ttlMs;
    this.#source = source;
    this.#maxEntries = maxEntries;
  }

  /**
   * A URL's metadata no older than `maxAgeMs` (and the TTL). `maxAgeMs` 0 asks the
   * source for this one URL now (after a version changed under a read).
   */
  async stat(url: string, maxAgeMs = this.ttlMs, signal?: AbortSignal): Promise<Entry<FileInfo>> {
    const limit = Math.min(maxAgeMs, this.ttlMs);
    const e = this.#stats.get(url);
    if (e && Date.now() - e.fetchedAt < limit) return e;
    if (e?.prefix !== undefined && limit > 0) {
      await this.list(e.prefix, limit, signal);
      const again = this.#stats.get(url);
      if (again && Date.now() - again.fetchedAt < limit) return again;
    }
    const flight = this.#statFlight.run(url, async () => {
      const got = await this.#source.stat(url, maxAgeMs === 0 ? 0 : limit);
      this.setStat(url, got.value, got.fetchedAt);
      return got;
    });
    return abortable(flight, signal);
  }

  /** Every object under a prefix, no older than `maxAgeMs` (and the TTL); the array is shared: copy entries before handing them out. */
  async list(prefix: string, maxAgeMs = this.ttlMs, signal?: AbortSignal): Promise<Entry<FileInfo[]>> {
    const limit = Math.min(maxAgeMs, this.ttlMs);
    const e = this.#lists.get(prefix);
    if (e && Date.now() - e.fetchedAt < limit) return e;
    const flight = this.#listFlight.run(prefix, async () => {
      const got = await this.#source.list(prefix, limit);
      this.setList(prefix, got.value, got.fetchedAt);
      return got;
    });
    return abortable(flight, signal);
  }

  /** The entry held for a URL, fresh or not. */
  peek(url: string): FileInfo | undefined {
    return this.#stats.get(url)?.value;
  }

  /** What a caller learnt without asking (its own write): kept as a fresh answer. */
  setStat(url: string, value: FileInfo, fetchedAt = Date.now()): void {
    const prefix = this.#stats.get(url)?.prefix;
    this.#set(this.#stats, url, { value, fetchedAt, prefix });
  }

  setList(prefix: string, value: FileInfo[], fetchedAt = Date.now()): void {
    const old = this.#lists.get(prefix);
    this.#set(this.#lists, prefix, { value, fetchedAt });
    for (const f of value) {
      const cur = this.#stats.get(f.url);
      if (!cur || cur.fetchedAt <= fetchedAt) this.#set(this.#stats, f.url, { value: f, fetchedAt, prefix });
      else cur.prefix ??= prefix;
    }
    // Objects gone since the last listing: their entries may no longer send stat to this prefix.
    if (old) {
      const now = new Set(value.map((f) => f.url));
      for (const f of old.value) {
        const cur = this.#stats.get(f.url);
        if (!now.has(f.url) && cur?.prefix === prefix && cur.fetchedAt <= fetchedAt) this.#stats.delete(f.url);
      }
    }
  }

  /** Let a URL's entry expire now (its version changed under a read): the next stat revalidates it. */
  expire(url: string): void {
    const e = this.#stats.get(url);
    if (e) e.fetchedAt = Number.NEGATIVE_INFINITY;
  }

  /** Forget a URL's stat and every listing that could contain it. */
  invalidate(url: string): void {
    this.#stats.delete(url);
    for (const prefix of this.#lists.keys()) if (url.startsWith(prefix)) this.#lists.delete(prefix);
  }

  clear(): void {
    this.#stats.clear();
    this.#lists.clear();
  }

  #set<V>(map: Map<string, V>, key: string, e: V): void {
    map.delete(key);
    map.set(key, e);
    if (map.size > this.#maxEntries) {
      const oldest = map.keys().next();
      if (!oldest.done) map.delete(oldest.value);
    }
  }
}

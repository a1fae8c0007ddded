import type { FileInfo } from '../ufs/types.js';

interface Entry<V> {
  value: V;
  fetchedAt: number;
}

/**
 * Metadata (stat and list results) cached with a TTL. Entries remember when they
 * were fetched from the store, so a chain of caches (client ← worker ← store)
 * can bound end-to-end staleness by one TTL rather than one TTL per hop.
 */
export class MetadataCache {
  readonly ttlMs: number;
  readonly #stats = new Map<string, Entry<FileInfo>>();
  readonly #lists = new Map<string, Entry<FileInfo[]>>();
  readonly #maxEntries: number;

  constructor({ ttlMs, maxEntries = 200_000 }: { ttlMs: number; maxEntries?: number }) {
    this.ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
  }

  getStat(url: string, now = Date.now()): Entry<FileInfo> | undefined {
    return this.#fresh(this.#stats, url, now);
  }

  setStat(url: string, value: FileInfo, fetchedAt = Date.now()): void {
    this.#set(this.#stats, url, { value, fetchedAt });
  }

  getList(prefix: string, now = Date.now()): Entry<FileInfo[]> | undefined {
    return this.#fresh(this.#lists, prefix, now);
  }

  setList(prefix: string, value: FileInfo[], fetchedAt = Date.now()): void {
    this.#set(this.#lists, prefix, { value, fetchedAt });
    // A listing also answers stat for every object in it.
    for (const f of value) {
      const cur = this.#stats.get(f.url);
      if (!cur || cur.fetchedAt < fetchedAt) this.#set(this.#stats, f.url, { value: f, fetchedAt });
    }
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

  #fresh<V>(map: Map<string, Entry<V>>, key: string, now: number): Entry<V> | undefined {
    const e = map.get(key);
    if (!e) return undefined;
    if (now - e.fetchedAt >= this.ttlMs) {
      map.delete(key);
      return undefined;
    }
    return e;
  }

  #set<V>(map: Map<string, Entry<V>>, key: string, e: Entry<V>): void {
    map.delete(key);
    map.set(key, e);
    if (map.size > this.#maxEntries) {
      const oldest = map.keys().next();
      if (!oldest.done) map.delete(oldest.value);
    }
  }
}

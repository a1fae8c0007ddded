/**
 * Stat and list answers for a client: from its own cache while fresh, else from the
 * worker that owns the URL's metadata, else from the store. Entries keep the age the
 * worker reports, so staleness end to end stays within one TTL, not one per hop; an
 * object seen in a listing is revalidated by listing its prefix again (MetadataCache).
 */
import type { FileInfo } from '../ufs/types.js';
import type { CountedStore } from './counted-store.js';
import type { WorkerInfo } from './membership.js';
import { MetadataCache, type Entry } from './metadata-cache.js';
import { Paths } from './protocol.js';
import type { WorkerTransport } from './worker-transport.js';

/** Ask the workers that own `key` in turn; `undefined` when none could answer. */
export type AskWorker = <T>(key: string, signal: AbortSignal | undefined, fn: (w: WorkerInfo) => Promise<T>) => Promise<T | undefined>;

export class ClientMetadata {
  readonly #cache: MetadataCache;
  readonly #ask: AskWorker;
  readonly #transport: WorkerTransport;
  readonly #store: CountedStore;

  constructor(ttlMs: number, ask: AskWorker, transport: WorkerTransport, store: CountedStore) {
    this.#ask = ask;
    this.#transport = transport;
    this.#store = store;
    this.#cache = new MetadataCache({
      ttlMs,
      source: {
        stat: (url, maxAgeMs) => this.#fetch(url, Paths.stat, { url, maxAgeMs: String(maxAgeMs) }, (s) => this.#store.stat(url, s)),
        list: (prefix, maxAgeMs) => this.#fetch(prefix, Paths.list, { prefix, maxAgeMs: String(maxAgeMs) }, (s) => this.#store.list(prefix, s)),
      },
    });
  }

  get ttlMs(): number {
    return this.#cache.ttlMs;
  }

  async stat(url: string, signal: AbortSignal | undefined, maxAgeMs?: number): Promise<FileInfo> {
    const { value } = await this.#cache.stat(url, maxAgeMs, signal);
    return { ...value };
  }

  /** The listing, shared with the cache: copy an entry before handing it out. */
  async list(prefixUrl: string, signal: AbortSignal | undefined): Promise<readonly FileInfo[]> {
    return (await this.#cache.list(prefixUrl, undefined, signal)).value;
  }

  /** What the cache holds for a URL, however old, without asking anyone (a version's size never changes). */
  known(url: string): FileInfo | undefined {
    return this.#cache.peek(url);
  }

  /** The URL's metadata fresh from the store (through a worker): after its version changed under a read. */
  refresh(url: string, signal: AbortSignal | undefined): Promise<FileInfo> {
    this.#cache.expire(url);
    return this.stat(url, signal, 0);
  }

  /** What the client just wrote or read: known without asking. */
  remember(url: string, info: FileInfo, fetchedAt?: number): void {
    this.#cache.setStat(url, info, fetchedAt);
  }

  /** Forget a URL's stat and every listing that could hold it. */
  forget(url: string): void {
    this.#cache.invalidate(url);
  }

  /** One request shared by every caller waiting on it: bounded by the transport's timeout, not by one caller's signal. */
  async #fetch<T>(key: string, path: string, query: Record<string, string>, fromStore: (signal: undefined) => Promise<T>): Promise<Entry<T>> {
    const viaWorker = await this.#ask(`meta:${key}`, undefined, async (w) => {
      const { value, age } = await this.#transport.getJson<T>(w, path, query, undefined);
      return { value, fetchedAt: Date.now() - age };
    });
    if (viaWorker !== undefined) return viaWorker;
    return { value: await fromStore(undefined), fetchedAt: Date.now() };
  }
}

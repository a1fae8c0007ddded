/**
 * Stat and list answers for a client: from its own cache while fresh, else from the
 * worker that owns the URL's metadata, else from the store. Entries keep the age the
 * worker reports, so staleness end to end stays within one TTL, not one per hop.
 */
import type { FileInfo } from '../ufs/types.js';
import type { CountedStore } from './counted-store.js';
import type { WorkerInfo } from './membership.js';
import { MetadataCache } from './metadata-cache.js';
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
    this.#cache = new MetadataCache({ ttlMs });
    this.#ask = ask;
    this.#transport = transport;
    this.#store = store;
  }

  async stat(url: string, signal: AbortSignal | undefined): Promise<FileInfo> {
    const cached = this.#cache.getStat(url);
    if (cached) return { ...cached.value };
    const viaWorker = await this.#ask(`meta:${url}`, signal, async (w) => {
      const { value, age } = await this.#transport.getJson<FileInfo>(w, Paths.stat, { url, maxAgeMs: String(this.#cache.ttlMs) }, signal);
      this.#cache.setStat(url, value, Date.now() - age);
      return value;
    });
    if (viaWorker !== undefined) return { ...viaWorker };
    const info = await this.#store.stat(url, signal);
    this.#cache.setStat(url, info);
    return info;
  }

  /** The listing, shared with the cache: copy an entry before handing it out. */
  async list(prefixUrl: string, signal: AbortSignal | undefined): Promise<readonly FileInfo[]> {
    const cached = this.#cache.getList(prefixUrl);
    if (cached) return cached.value;
    const viaWorker = await this.#ask(`meta:${prefixUrl}`, signal, async (w) => {
      const { value, age } = await this.#transport.getJson<FileInfo[]>(w, Paths.list, { prefix: prefixUrl, maxAgeMs: String(this.#cache.ttlMs) }, signal);
      this.#cache.setList(prefixUrl, value, Date.now() - age);
      return value;
    });
    if (viaWorker !== undefined) return viaWorker;
    const files = await this.#store.list(prefixUrl, signal);
    this.#cache.setList(prefixUrl, files);
    return files;
  }

  /** What the client just wrote: known without asking. */
  remember(url: string, info: FileInfo): void {
    this.#cache.setStat(url, info);
  }

  /** Forget a URL's stat and every listing that could hold it. */
  forget(url: string): void {
    this.#cache.invalidate(url);
  }
}

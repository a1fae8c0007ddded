/**
 * Reads hinted pages from the store before the jobs ask for them: the registry's
 * candidates, soonest next use first, in runs of consecutive pages, within bounded
 * concurrency and bytes, and only pages the cache admits.
 */
import { optionalInt } from '../util/validate.js';
import type { HintRegistry, PrefetchCandidate } from './hint-registry.js';
import { pageKey, type PageKey } from './page-key.js';

export interface PrefetcherOptions {
  /** Store reads the prefetcher keeps in flight. @default 4 */
  concurrency?: number | undefined;
  /** Bytes it keeps in flight. @default 64 MiB */
  maxBytes?: number | undefined;
  /** Most consecutive pages read in one store request. @default 8 */
  runPages?: number | undefined;
}

/** What the prefetcher needs from the worker. */
export interface PrefetchTarget {
  pageSize: number;
  /** Whether the store holds the page. */
  has(key: PageKey): boolean;
  /**
   * Whether a page whose next use is `nextUse` may enter the cache now: there is room,
   * or the page the policy would evict for it is needed later than it.
   */
  admits(nextUse: number): boolean;
  /** Read pages `[first, first + count)` of one version through to the store and keep them. */
  fetch(url: string, etag: string, first: number, count: number): Promise<void>;
}

export interface PrefetchStats {
  /** Store requests the prefetcher made, and the pages and bytes they asked for. */
  runs: number;
  pages: number;
  /** Candidates passed over because the cache had no room for them (every resident page is needed sooner). */
  refused: number;
  errors: number;
}

/**
 * Reads hinted pages ahead of the jobs: soonest next use first, within bounded
 * concurrency and bytes, and only pages the cache admits (it never evicts a page
 * needed sooner than the one it fetches).
 */
export class Prefetcher {
  readonly #reg: HintRegistry;
  readonly #target: PrefetchTarget;
  readonly #concurrency: number;
  readonly #maxBytes: number;
  readonly #runPages: number;
  readonly #inFlight = new Set<PageKey>();
  #running = 0;
  #bytes = 0;
  #pumping = false;
  #again = false;
  #closed = false;
  readonly #stats: PrefetchStats = { runs: 0, pages: 0, refused: 0, errors: 0 };

  constructor(registry: HintRegistry, target: PrefetchTarget, options: PrefetcherOptions = {}) {
    this.#reg = registry;
    this.#target = target;
    this.#concurrency = optionalInt('hints.prefetchConcurrency', options.concurrency, 4, 0);
    this.#maxBytes = optionalInt('hints.prefetchBytes', options.maxBytes, 64 * 1024 * 1024, 0);
    this.#runPages = optionalInt('hints.runPages', options.runPages, 8, 1);
  }

  stats(): PrefetchStats {
    return { ...this.#stats };
  }

  /** Whether the prefetcher is reading this page now. */
  inFlight(key: PageKey): boolean {
    return this.#inFlight.has(key);
  }

  /** Look for work: after new hints, a cursor move, or a finished prefetch. */
  pump(): void {
    if (this.#closed || this.#concurrency === 0) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#again = false;
        this.#fill();
      } while (this.#again);
    } finally {
      this.#pumping = false;
    }
  }

  close(): void {
    this.#closed = true;
  }

  #fill(): void {
    const ps = this.#target.pageSize;
    if (this.#running >= this.#concurrency || this.#bytes + ps > this.#maxBytes) return;
    const candidates = this.#reg.prefetchCandidates();
    const wanted = new Map<PageKey, PrefetchCandidate>();
    for (const c of candidates) if (!this.#inFlight.has(c.key) && !this.#target.has(c.key)) wanted.set(c.key, c);
    for (const c of candidates) {
      if (this.#running >= this.#concurrency || this.#bytes + ps > this.#maxBytes) return;
      if (!wanted.has(c.key)) continue;
      if (!this.#target.admits(c.nextUse)) {
        // Candidates are sorted by next use: no later one would be admitted either.
        this.#stats.refused++;
        return;
      }
      // Extend to a run of following pages of the same version that are also wanted.
      let count = 1;
      wanted.delete(c.key);
      while (count < this.#runPages && this.#bytes + (count + 1) * ps <= this.#maxBytes) {
        const next = pageKey(c.url, c.etag, c.page + count);
        if (!wanted.has(next)) break;
        wanted.delete(next);
        count++;
      }
      this.#start(c, count);
    }
  }

  #start(c: PrefetchCandidate, count: number): void {
    const ps = this.#target.pageSize;
    const keys = Array.from({ length: count }, (_, k) => pageKey(c.url, c.etag, c.page + k));
    for (const k of keys) this.#inFlight.add(k);
    this.#running++;
    this.#bytes += count * ps;
    this.#stats.runs++;
    this.#stats.pages += count;
    void this.#target
      .fetch(c.url, c.etag, c.page, count)
      .catch(() => {
        // A failed prefetch costs nothing but the attempt: the read that needs the page fetches it.
        this.#stats.errors++;
      })
      .finally(() => {
        for (const k of keys) this.#inFlight.delete(k);
        this.#running--;
        this.#bytes -= count * ps;
        this.pump();
      });
  }
}


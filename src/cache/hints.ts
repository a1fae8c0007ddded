/**
 * Clairvoyant cache hints, worker side: the registry of announced reads
 * (hint-registry.ts), the prefetcher that reads them ahead (prefetcher.ts), Belady
 * admission, and the classification of reads by what the hints did for them. The
 * wire body lives in hint-request.ts, the client's routing of accesses to workers in
 * client-hints.ts. See docs/hints.md.
 */
import { beladyPolicy } from './belady.js';
import { HintRegistry, type HintRegistryStats } from './hint-registry.js';
import { parseHintRequest, type HintResponse } from './hint-request.js';
import { pageKey, type PageKey } from './page-key.js';
import { Prefetcher, type PrefetcherOptions, type PrefetchStats } from './prefetcher.js';

export { HintRegistry, type HintRegistryOptions, type HintRegistryStats, type PrefetchCandidate } from './hint-registry.js';
export { hintRequestSchema, parseHintRequest, type HintAccess, type HintRequest, type HintResponse } from './hint-request.js';
export { Prefetcher, type PrefetcherOptions, type PrefetchStats, type PrefetchTarget } from './prefetcher.js';
export { routeAccesses } from './client-hints.js';

/** `startWorker({ hints })`: the registry's limits and the prefetcher's bounds. */
export interface WorkerHintOptions extends PrefetcherOptions {
  maxJobs?: number | undefined;
  maxPagesPerJob?: number | undefined;
  defaultTtlMs?: number | undefined;
  maxTtlMs?: number | undefined;
}

/**
 * How the worker's `/v1/read` requests were answered, judged when each arrives:
 * - `ready`: every page it needs was in the page store (a hit, whether cached
 *   earlier or prefetched); it never waits on the store.
 * - `prefetchedReady`: the part of `ready` where at least one page was put there by
 *   the prefetcher and not read since (a hit that only the hints made).
 * - `joined`: some pages were missing but every missing page was already being
 *   prefetched; the read waited for the rest of a store read already under way.
 * - `waited`: some page was neither present nor being prefetched: the read waited on
 *   a store read of its own (or another reader's).
 * Loads (`/v1/load`) and reads without an `etag` are not classified.
 */
export interface ReadClassStats {
  ready: number;
  prefetchedReady: number;
  joined: number;
  waited: number;
}

export interface WorkerHintStats {
  registry: HintRegistryStats;
  prefetch: PrefetchStats;
  reads: ReadClassStats;
  /** Pages read on a miss that were not kept, because every resident page is needed sooner (Belady's bypass). */
  bypassed: number;
}

/** What `WorkerHints` needs from the worker once its store is open. */
export interface WorkerHintTarget {
  has(key: PageKey): boolean;
  /** Whether the memory tier has room for one more page without evicting. */
  hasRoom(): boolean;
  fetch(url: string, etag: string, first: number, count: number): Promise<void>;
}

const MAX_TRACKED_PREFETCHED = 1 << 20;

/** The worker's side of hints: registry, prefetcher, Belady admission, read classification. */
export class WorkerHints {
  readonly registry: HintRegistry;
  /** The store's eviction policy factory: Belady by `registry.nextUse`. */
  readonly policy: ReturnType<typeof beladyPolicy>;
  #prefetcher: Prefetcher | undefined;
  #target: WorkerHintTarget | undefined;
  readonly #options: WorkerHintOptions;
  readonly #timer: NodeJS.Timeout;
  /** Pages the prefetcher stored that no read has used yet (insertion order, capped). */
  readonly #prefetched = new Set<PageKey>();
  readonly #reads: ReadClassStats = { ready: 0, prefetchedReady: 0, joined: 0, waited: 0 };
  #bypassed = 0;
  #usesBelady = false;

  constructor(pageSize: number, options: WorkerHintOptions = {}) {
    this.#options = options;
    this.registry = new HintRegistry({
      pageSize,
      maxJobs: options.maxJobs,
      maxPagesPerJob: options.maxPagesPerJob,
      defaultTtlMs: options.defaultTtlMs,
      maxTtlMs: options.maxTtlMs,
    });
    this.policy = beladyPolicy((key) => this.registry.nextUse(key));
    this.#timer = setInterval(() => this.registry.expire(), 1000);
    this.#timer.unref();
  }

  /** Start prefetching into the store; `usesBelady`: the store was opened with `policy`. */
  attach(target: WorkerHintTarget, usesBelady: boolean): void {
    this.#target = target;
    this.#usesBelady = usesBelady;
    this.#prefetcher = new Prefetcher(
      this.registry,
      {
        pageSize: this.registry.pageSize,
        has: (k) => target.has(k),
        // A prefetch must not displace a page of some job's prefetch window either: that
        // page was (or is about to be) prefetched too, and would have to be read twice.
        admits: (nextUse) => this.admits(nextUse, this.registry.horizon()),
        fetch: async (url, etag, first, count) => {
          await target.fetch(url, etag, first, count);
          for (let k = 0; k < count; k++) {
            const key = pageKey(url, etag, first + k);
            if (!target.has(key)) continue;
            if (this.#prefetched.size >= MAX_TRACKED_PREFETCHED) this.#prefetched.clear();
            this.#prefetched.add(key);
          }
        },
      },
      { concurrency: this.#options.concurrency, maxBytes: this.#options.maxBytes, runPages: this.#options.runPages },
    );
    this.registry.onChange(() => this.#prefetcher?.pump());
  }

  /** Handle one `POST /v1/hints` body. */
  apply(body: unknown): HintResponse {
    return this.registry.apply(parseHintRequest(body));
  }

  /**
   * Whether a page needed next at `nextUse` may enter the memory tier: there is room,
   * or the page Belady would evict for it is needed later (or never, when neither is
   * hinted: plain LRU), and not before `protect`.
   */
  admits(nextUse: number, protect = -1): boolean {
    const t = this.#target;
    if (!this.#usesBelady || t === undefined || t.hasRoom()) return true;
    const victim = this.policy.built[0]?.victim();
    if (victim === undefined) return true;
    if (victim.nextUse === Infinity) return true;
    return victim.nextUse > nextUse && victim.nextUse >= protect;
  }

  /** `admits` for a page just read on a miss; counts a refusal as a bypass. */
  admitsKey(key: PageKey): boolean {
    if (!this.registry.active) return true;
    const ok = this.admits(this.registry.nextUse(key));
    if (!ok) this.#bypassed++;
    return ok;
  }

  /** Classify a read by the state of its pages when it arrives (see `ReadClassStats`). */
  classify(keys: readonly PageKey[]): void {
    const t = this.#target;
    if (t === undefined) return;
    let missing = 0;
    let joined = 0;
    let prefetched = false;
    for (const k of keys) {
      if (t.has(k)) {
        if (this.#prefetched.delete(k)) prefetched = true;
      } else {
        missing++;
        if (this.#prefetcher?.inFlight(k) === true) joined++;
      }
    }
    if (missing === 0) {
      this.#reads.ready++;
      if (prefetched) this.#reads.prefetchedReady++;
    } else if (joined === missing) {
      this.#reads.joined++;
    } else {
      this.#reads.waited++;
    }
  }

  stats(): WorkerHintStats {
    return {
      registry: this.registry.stats(),
      prefetch: this.#prefetcher?.stats() ?? { runs: 0, pages: 0, refused: 0, errors: 0 },
      reads: { ...this.#reads },
      bypassed: this.#bypassed,
    };
  }

  close(): void {
    clearInterval(this.#timer);
    this.#prefetcher?.close();
    this.registry.clear();
  }
}

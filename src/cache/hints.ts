/**
 * Clairvoyant cache hints, worker side: a registry of the page reads each training
 * job has announced it will make, in its order, and a prefetcher that reads the next
 * ones from the store before they are asked for. The Belady eviction policy
 * (`./belady.ts`) ranks resident pages by `HintRegistry.nextUse`.
 *
 * Positions are the job's own logical clock (the loader uses the index of a partition
 * in its epoch plan). Distances `pos - cursor` of different jobs are compared as they
 * are, which is right when jobs advance through positions at similar rates (jobs
 * reading the same dataset with the same loader settings). See docs/hints.md.
 */
import { BadRequestError, InvalidArgumentError } from '../errors.js';
import { checkRange } from '../ufs/url.js';
import { beladyPolicy } from './belady.js';
import { pageKey, pagesForRange, type PageKey } from './page-key.js';

/** One future read a job announces: a byte range of one object version, at a position of its plan. */
export interface HintAccess {
  url: string;
  etag: string;
  offset: number;
  length: number;
  /** The job's position at which it reads this range (>= 0; the loader's partition index in its plan). */
  pos: number;
}

/** The body of `POST /v1/hints`. Every field but `job` is optional; see docs/hints.md. */
export interface HintRequest {
  /** The job's id: 1-200 characters. */
  job: string;
  /** Reads at positions below `cursor` are done; they no longer count. Never moves back (except after `reset`). */
  cursor?: number | undefined;
  /** The job has already sent its reads for positions below this; prefetch from here. @default cursor */
  readFrom?: number | undefined;
  /** Positions from `readFrom` the worker may prefetch. @default 8 */
  lookahead?: number | undefined;
  /** The job's hints expire this long after its last request. @default 60_000 (capped by the worker's `maxTtlMs`) */
  ttlMs?: number | undefined;
  /** Drop the job's earlier hints first (a new epoch, a new stream). */
  reset?: boolean | undefined;
  /** Drop the job's hints now (the stream closed); other fields are ignored. */
  end?: boolean | undefined;
  accesses?: HintAccess[] | undefined;
}

export interface HintResponse {
  job: string;
  /** Accesses of this request the worker keeps. */
  accepted: number;
  /** Accesses refused because the job reached `maxPagesPerJob` (resend them later) or the worker `maxJobs`. */
  dropped: number;
  /** Page reads of this job the worker holds (not yet passed by its cursor). */
  pages: number;
  /** When the job's hints expire unless renewed (ms since the epoch); 0 after `end`. */
  expiresAt: number;
}

export interface HintRegistryOptions {
  pageSize: number;
  /** Jobs hinting at once; hints of further jobs are dropped. @default 64 */
  maxJobs?: number | undefined;
  /** Page reads held per job (not yet passed by its cursor); more are dropped. @default 1_000_000 */
  maxPagesPerJob?: number | undefined;
  /** @default 60_000 */
  defaultTtlMs?: number | undefined;
  /** @default 600_000 */
  maxTtlMs?: number | undefined;
  /** Clock, for tests. @default Date.now */
  now?: (() => number) | undefined;
}

export interface HintRegistryStats {
  jobs: number;
  /** Page reads held, over all jobs. */
  pages: number;
  /** Jobs that expired without `end`. */
  expiredJobs: number;
  /** Accesses dropped by the limits. */
  droppedAccesses: number;
}

/** A page the prefetcher may read: one of a job's next reads. */
export interface PrefetchCandidate {
  key: PageKey;
  url: string;
  etag: string;
  page: number;
  /** `HintRegistry.nextUse(key)` at the time of the call. */
  nextUse: number;
}

interface Use {
  pos: number;
  key: PageKey;
  url: string;
  etag: string;
  page: number;
}

interface Job {
  id: string;
  cursor: number;
  readFrom: number;
  lookahead: number;
  expiresAt: number;
  /** Uses sorted by position; those before `head` are passed. */
  uses: Use[];
  head: number;
  /** For each page, its positions not yet passed, ascending. */
  byPage: Map<PageKey, number[]>;
}

const DEFAULT_LOOKAHEAD = 8;
const MAX_JOB_ID = 200;
const MAX_ACCESSES_PER_REQUEST = 100_000;

function nonNegInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new BadRequestError(`Hint field \`${name}\` must be an integer from 0 and up, got \`${String(v).slice(0, 100)}\` (${typeof v})`);
  }
  return v;
}

/** Validates a `POST /v1/hints` body; throws `GRANARY_ERR_BAD_REQUEST` naming the field. */
export function parseHintRequest(body: unknown): HintRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new BadRequestError('Expected a JSON body { "job", "cursor"?, "readFrom"?, "lookahead"?, "ttlMs"?, "reset"?, "end"?, "accesses"? }');
  }
  const b = body as Record<string, unknown>;
  if (typeof b.job !== 'string' || b.job.length === 0 || b.job.length > MAX_JOB_ID) {
    throw new BadRequestError(`Hint field \`job\` must be a string of 1-${MAX_JOB_ID} characters, got \`${String(b.job).slice(0, 100)}\``);
  }
  const req: HintRequest = { job: b.job };
  for (const f of ['cursor', 'readFrom', 'lookahead', 'ttlMs'] as const) {
    if (b[f] !== undefined) req[f] = nonNegInt(f, b[f]);
  }
  for (const f of ['reset', 'end'] as const) {
    if (b[f] !== undefined) {
      if (typeof b[f] !== 'boolean') throw new BadRequestError(`Hint field \`${f}\` must be a boolean, got \`${JSON.stringify(b[f]).slice(0, 100)}\``);
      req[f] = b[f];
    }
  }
  if (b.accesses !== undefined) {
    if (!Array.isArray(b.accesses)) throw new BadRequestError('Hint field `accesses` must be an array of { url, etag, offset, length, pos }');
    if (b.accesses.length > MAX_ACCESSES_PER_REQUEST) {
      throw new BadRequestError(`Hint request holds ${b.accesses.length} accesses, more than ${MAX_ACCESSES_PER_REQUEST}; send them in chunks`);
    }
    req.accesses = b.accesses.map((a: unknown, i) => {
      const o = a as Partial<HintAccess> | null;
      if (!o || typeof o !== 'object' || typeof o.url !== 'string' || typeof o.etag !== 'string') {
        throw new BadRequestError(`accesses[${i}] must be { url: string, etag: string, offset, length, pos }`);
      }
      const offset = nonNegInt(`accesses[${i}].offset`, o.offset);
      const length = nonNegInt(`accesses[${i}].length`, o.length);
      const pos = nonNegInt(`accesses[${i}].pos`, o.pos);
      checkRange(o.url, offset, length);
      return { url: o.url, etag: o.etag, offset, length, pos };
    });
  }
  return req;
}

function insertSorted(list: number[], pos: number): boolean {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((list[mid] as number) < pos) lo = mid + 1;
    else hi = mid;
  }
  if (list[lo] === pos) return false;
  list.splice(lo, 0, pos);
  return true;
}

/**
 * The hints of all jobs on one worker. All methods are synchronous; `nextUse` is
 * O(jobs) and is what the Belady policy calls for every page it ranks.
 */
export class HintRegistry {
  readonly pageSize: number;
  readonly #jobs = new Map<string, Job>();
  readonly #maxJobs: number;
  readonly #maxPages: number;
  readonly #defaultTtl: number;
  readonly #maxTtl: number;
  readonly #now: () => number;
  readonly #listeners = new Set<() => void>();
  #pages = 0;
  #expired = 0;
  #dropped = 0;

  constructor(options: HintRegistryOptions) {
    const int = (name: string, v: unknown, min: number): number => {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
        throw new InvalidArgumentError(`Expected \`hints.${name}\` to be an integer from ${min} and up, got \`${String(v)}\` (${typeof v})`);
      }
      return v;
    };
    this.pageSize = int('pageSize', options.pageSize, 1);
    this.#maxJobs = int('maxJobs', options.maxJobs ?? 64, 1);
    this.#maxPages = int('maxPagesPerJob', options.maxPagesPerJob ?? 1_000_000, 1);
    this.#defaultTtl = int('defaultTtlMs', options.defaultTtlMs ?? 60_000, 1);
    this.#maxTtl = int('maxTtlMs', options.maxTtlMs ?? 600_000, 1);
    this.#now = options.now ?? Date.now;
  }

  /** Whether any job holds hints: without them the Belady policy is plain LRU. */
  get active(): boolean {
    return this.#pages > 0;
  }

  stats(): HintRegistryStats {
    return { jobs: this.#jobs.size, pages: this.#pages, expiredJobs: this.#expired, droppedAccesses: this.#dropped };
  }

  /** The ids of the jobs holding hints. */
  jobs(): string[] {
    return [...this.#jobs.keys()];
  }

  /** Called after every change (new hints, a cursor move, an end, an expiry). */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Apply one request (already validated by `parseHintRequest`). */
  apply(req: HintRequest): HintResponse {
    this.expire();
    if (req.end === true) {
      this.#drop(req.job);
      this.#changed();
      return { job: req.job, accepted: 0, dropped: 0, pages: 0, expiresAt: 0 };
    }
    if (req.reset === true) this.#drop(req.job);
    let job = this.#jobs.get(req.job);
    const n = req.accesses?.length ?? 0;
    if (!job) {
      if (this.#jobs.size >= this.#maxJobs) {
        this.#dropped += n;
        return { job: req.job, accepted: 0, dropped: n, pages: 0, expiresAt: 0 };
      }
      job = { id: req.job, cursor: 0, readFrom: 0, lookahead: DEFAULT_LOOKAHEAD, expiresAt: 0, uses: [], head: 0, byPage: new Map() };
      this.#jobs.set(req.job, job);
    }
    job.expiresAt = this.#now() + Math.min(this.#maxTtl, req.ttlMs ?? this.#defaultTtl);
    if (req.lookahead !== undefined) job.lookahead = req.lookahead;
    if (req.cursor !== undefined) this.#advance(job, req.cursor);
    job.readFrom = Math.max(job.cursor, req.readFrom ?? job.readFrom);
    let accepted = 0;
    let dropped = 0;
    for (const a of req.accesses ?? []) {
      if (a.pos < job.cursor) {
        accepted++; // already passed: nothing to keep, nothing to resend
        continue;
      }
      const { first, count } = pagesForRange(a.offset, a.length, this.pageSize);
      if (this.#held(job) + count > this.#maxPages) {
        dropped++;
        continue;
      }
      for (let page = first; page < first + count; page++) this.#add(job, { pos: a.pos, key: pageKey(a.url, a.etag, page), url: a.url, etag: a.etag, page });
      accepted++;
    }
    this.#dropped += dropped;
    this.#changed();
    return { job: job.id, accepted, dropped, pages: this.#held(job), expiresAt: job.expiresAt };
  }

  /**
   * How soon any job reads `key` next: the least `pos - cursor` over the jobs that
   * will read it; `Infinity` when none will (the page is "unhinted").
   */
  nextUse(key: string): number {
    if (this.#pages === 0) return Infinity;
    let best = Infinity;
    for (const job of this.#jobs.values()) {
      const first = job.byPage.get(key as PageKey)?.[0];
      if (first !== undefined && first - job.cursor < best) best = first - job.cursor;
    }
    return best;
  }

  /**
   * Each job's reads in `[readFrom, readFrom + lookahead)`, soonest first, one entry per
   * page. The prefetcher filters out what is resident or in flight.
   */
  prefetchCandidates(limit = 4096): PrefetchCandidate[] {
    const seen = new Set<PageKey>();
    const out: PrefetchCandidate[] = [];
    for (const job of this.#jobs.values()) {
      const end = job.readFrom + job.lookahead;
      for (let i = job.head; i < job.uses.length && out.length < limit; i++) {
        const u = job.uses[i] as Use;
        if (u.pos >= end) break;
        if (u.pos < job.readFrom || seen.has(u.key)) continue;
        seen.add(u.key);
        out.push({ key: u.key, url: u.url, etag: u.etag, page: u.page, nextUse: 0 });
      }
    }
    for (const c of out) c.nextUse = this.nextUse(c.key);
    out.sort((a, b) => a.nextUse - b.nextUse || (a.url < b.url ? -1 : a.url > b.url ? 1 : a.page - b.page));
    return out;
  }

  /**
   * The furthest next use any job's prefetch window reaches: the largest
   * `readFrom + lookahead - cursor`. A prefetch may not displace a page within it.
   */
  horizon(): number {
    let h = 0;
    for (const job of this.#jobs.values()) h = Math.max(h, job.readFrom + job.lookahead - job.cursor);
    return h;
  }

  /** Drop jobs whose TTL ran out. Called on every `apply` and by the worker's timer. */
  expire(): void {
    const now = this.#now();
    let any = false;
    for (const job of [...this.#jobs.values()]) {
      if (job.expiresAt <= now) {
        this.#drop(job.id);
        this.#expired++;
        any = true;
      }
    }
    if (any) this.#changed();
  }

  /** Forget every job. */
  clear(): void {
    for (const id of [...this.#jobs.keys()]) this.#drop(id);
  }

  #held(job: Job): number {
    return job.uses.length - job.head;
  }

  #add(job: Job, use: Use): void {
    let list = job.byPage.get(use.key);
    if (!list) job.byPage.set(use.key, (list = []));
    if (!insertSorted(list, use.pos)) return; // a resent hint
    const uses = job.uses;
    const last = uses[uses.length - 1];
    if (last === undefined || last.pos <= use.pos) {
      uses.push(use);
    } else {
      let lo = job.head;
      let hi = uses.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((uses[mid] as Use).pos <= use.pos) lo = mid + 1;
        else hi = mid;
      }
      uses.splice(lo, 0, use);
    }
    this.#pages++;
  }

  #advance(job: Job, cursor: number): void {
    if (cursor <= job.cursor) return;
    job.cursor = cursor;
    while (job.head < job.uses.length && (job.uses[job.head] as Use).pos < cursor) {
      const u = job.uses[job.head] as Use;
      const list = job.byPage.get(u.key);
      if (list) {
        while (list.length > 0 && (list[0] as number) < cursor) list.shift();
        if (list.length === 0) job.byPage.delete(u.key);
      }
      job.head++;
      this.#pages--;
    }
    // Compact now and then, so passed uses do not pin memory.
    if (job.head > 1024 && job.head * 2 > job.uses.length) {
      job.uses = job.uses.slice(job.head);
      job.head = 0;
    }
  }

  #drop(id: string): void {
    const job = this.#jobs.get(id);
    if (!job) return;
    this.#pages -= this.#held(job);
    this.#jobs.delete(id);
  }

  #changed(): void {
    for (const l of this.#listeners) l();
  }
}

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
    const int = (name: string, v: number, min: number): number => {
      if (!Number.isSafeInteger(v) || v < min) throw new InvalidArgumentError(`Expected \`hints.${name}\` to be an integer from ${min} and up, got \`${String(v)}\``);
      return v;
    };
    this.#reg = registry;
    this.#target = target;
    this.#concurrency = int('prefetchConcurrency', options.concurrency ?? 4, 0);
    this.#maxBytes = int('prefetchBytes', options.maxBytes ?? 64 * 1024 * 1024, 0);
    this.#runPages = int('runPages', options.runPages ?? 8, 1);
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

/**
 * Splits accesses at `blockSize` boundaries and groups them by the worker that owns
 * each block (`ownerOf(url, etag, block)`), for a client to send each worker its share.
 */
export function routeAccesses<W>(
  accesses: readonly HintAccess[],
  blockSize: number,
  ownerOf: (url: string, etag: string, block: number) => W | undefined,
): Map<W, HintAccess[]> {
  const out = new Map<W, HintAccess[]>();
  for (const a of accesses) {
    const end = a.offset + a.length;
    for (let pos = a.offset; pos < end; ) {
      const block = Math.floor(pos / blockSize);
      const blockEnd = Math.min(end, (block + 1) * blockSize);
      const w = ownerOf(a.url, a.etag, block);
      if (w !== undefined) {
        let list = out.get(w);
        if (!list) out.set(w, (list = []));
        list.push({ url: a.url, etag: a.etag, offset: pos, length: blockEnd - pos, pos: a.pos });
      }
      pos = blockEnd;
    }
  }
  return out;
}

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

/**
 * The worker's registry of clairvoyant cache hints: the page reads each training job
 * has announced it will make, in its order. The Belady eviction policy (`./belady.ts`)
 * ranks resident pages by `HintRegistry.nextUse`, and the prefetcher
 * (`./prefetcher.ts`) reads its `prefetchCandidates` ahead of the jobs.
 *
 * Positions are the job's own logical clock (the loader uses the index of a partition
 * in its epoch plan). Distances `pos - cursor` of different jobs are compared as they
 * are, which is right when jobs advance through positions at similar rates (jobs
 * reading the same dataset with the same loader settings). See docs/hints.md.
 */
import { checkInt } from '../util/validate.js';
import type { HintRequest, HintResponse } from './hint-request.js';
import { pageKey, pagesForRange, type PageKey } from './page-key.js';

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
    this.pageSize = checkInt('hints.pageSize', options.pageSize, 1);
    this.#maxJobs = checkInt('hints.maxJobs', options.maxJobs ?? 64, 1);
    this.#maxPages = checkInt('hints.maxPagesPerJob', options.maxPagesPerJob ?? 1_000_000, 1);
    this.#defaultTtl = checkInt('hints.defaultTtlMs', options.defaultTtlMs ?? 60_000, 1);
    this.#maxTtl = checkInt('hints.maxTtlMs', options.maxTtlMs ?? 600_000, 1);
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


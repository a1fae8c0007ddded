/**
 * Clairvoyant cache hints, loader side: the epoch plan says exactly which byte ranges
 * the stream will read and in what order, so the stream tells the cache workers ahead
 * of time (docs/hints.md). Hints are advice: they change what the workers prefetch and
 * keep, never what the stream yields, and a failed hint request is counted and ignored.
 */
import { randomUUID } from 'node:crypto';
import { InvalidArgumentError } from '../errors.js';
import { checkInt } from '../util/validate.js';
import type { HintAccess, HintRequest } from '../cache/hints.js';

/** One byte range a partition's fetch reads. */
export interface HintRange {
  url: string;
  etag: string;
  offset: number;
  length: number;
}

/** What accepts hints: `CacheClient` does. */
export interface HintTarget {
  hint(jobId: string, hint: Omit<HintRequest, 'job'>, options?: { signal?: AbortSignal | undefined }): Promise<{ accepted: number; dropped: number; failed: number }>;
}

export function isHintTarget(fs: unknown): fs is HintTarget {
  return typeof fs === 'object' && fs !== null && typeof (fs as HintTarget).hint === 'function';
}

/** `ds.batches({ hints })`. */
export interface LoaderHintOptions {
  /**
   * The job id the workers file these hints under. One per stream: a new stream with the
   * same id replaces the old one's hints.
   * @default a random UUID per stream
   */
  jobId?: string | undefined;
  /**
   * Partitions past the loader's own fetches that the workers may prefetch.
   * @default 8
   */
  lookahead?: number | undefined;
  /**
   * Partitions hinted ahead of the loader's position. Belady needs the whole epoch to
   * tell a page needed later this epoch from a dead one.
   * @default Infinity (the whole epoch)
   */
  window?: number | undefined;
  /**
   * Partitions per hint request: the epoch is sent in requests of this many partitions.
   * @default 64
   */
  chunk?: number | undefined;
  /**
   * Workers drop the job's hints this long after its last request; the stream renews
   * them every `ttlMs / 3` while it runs and ends them when it closes.
   * @default 60_000
   */
  ttlMs?: number | undefined;
}

export interface LoaderHintStats {
  jobId: string;
  /** Hint requests sent (each goes to every worker). */
  requests: number;
  /** Partitions hinted so far. */
  hintedPartitions: number;
  /** Worker answers that failed, and accesses workers dropped at their limits. */
  failed: number;
  dropped: number;
}

/** The stream's hooks: a partition's fetch started, finished; the stream ended. Hints start with the first fetch. */
export interface StreamHints {
  started(partition: number): void;
  fetched(partition: number): void;
  close(): void;
}

/** The accesses of positions `[from, to)` of `order` (position = index in the order). */
export function hintAccesses(order: readonly number[], rangesOf: (partition: number) => readonly HintRange[], from: number, to: number): HintAccess[] {
  const out: HintAccess[] = [];
  for (let pos = Math.max(0, from); pos < Math.min(to, order.length); pos++) {
    for (const r of rangesOf(order[pos] as number)) {
      if (r.length > 0) out.push({ url: r.url, etag: r.etag, offset: r.offset, length: r.length, pos });
    }
  }
  return out;
}

/** A hints option: an integer from `min` (`window` may also be Infinity: no limit). */
function checkOpt(name: string, v: number, min: number, allowInfinity = false): number {
  return allowInfinity && v === Infinity ? v : checkInt(`hints.${name}`, v, min);
}

/**
 * Sends one stream's hints: the whole epoch's reads in chunks (as far as `window`
 * allows), then, as fetches start and finish, the stream's position: `cursor` (the
 * oldest fetch not finished: reads before it are done) and `readFrom` (the next
 * partition not yet started: workers prefetch from there). One request at a time;
 * changes made meanwhile go in the next one.
 */
export class LoaderHints implements StreamHints {
  readonly jobId: string;
  readonly #target: HintTarget;
  readonly #order: readonly number[];
  readonly #posOf = new Map<number, number>();
  readonly #rangesOf: (partition: number) => readonly HintRange[];
  readonly #lookahead: number;
  readonly #window: number;
  readonly #chunk: number;
  readonly #ttlMs: number;
  #timer: NodeJS.Timeout | undefined;
  readonly #pending = new Set<number>();
  #readFrom = 0;
  #hinted = 0;
  #sent: { cursor: number; readFrom: number } | undefined;
  /** Workers were full at this cursor: do not resend until it moves. */
  #stalledAt = -1;
  #renew = false;
  #busy: Promise<void> | undefined;
  #closed = false;
  readonly #stats: LoaderHintStats;

  constructor(target: HintTarget, order: readonly number[], rangesOf: (partition: number) => readonly HintRange[], options: LoaderHintOptions = {}) {
    this.jobId = options.jobId ?? randomUUID();
    if (typeof this.jobId !== 'string' || this.jobId.length === 0 || this.jobId.length > 200) {
      throw new InvalidArgumentError(`Expected \`hints.jobId\` to be a string of 1-200 characters, got \`${String(this.jobId)}\``);
    }
    this.#target = target;
    this.#order = order;
    order.forEach((p, i) => this.#posOf.set(p, i));
    this.#rangesOf = rangesOf;
    this.#lookahead = checkOpt('lookahead', options.lookahead ?? 8, 0);
    this.#window = checkOpt('window', options.window ?? Infinity, 1, true);
    this.#chunk = checkOpt('chunk', options.chunk ?? 64, 1);
    this.#ttlMs = checkOpt('ttlMs', options.ttlMs ?? 60_000, 1000);
    this.#stats = { jobId: this.jobId, requests: 0, hintedPartitions: 0, failed: 0, dropped: 0 };
  }

  stats(): LoaderHintStats {
    return { ...this.#stats };
  }

  started(partition: number): void {
    const pos = this.#posOf.get(partition);
    if (pos === undefined) return;
    this.#pending.add(pos);
    this.#readFrom = Math.max(this.#readFrom, pos + 1);
    this.#pump();
  }

  fetched(partition: number): void {
    const pos = this.#posOf.get(partition);
    if (pos === undefined) return;
    this.#pending.delete(pos);
    this.#pump();
  }

  /** Stop renewing and tell the workers the job ended (after any request in flight). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    if (this.#sent === undefined && this.#busy === undefined) return; // never sent anything
    const busy = this.#busy ?? Promise.resolve();
    void busy
      .then(() => this.#target.hint(this.jobId, { end: true }))
      .catch(() => {
        // The workers drop the job when its TTL runs out.
      });
  }

  /** Settles when no request is in flight (for tests). */
  async idle(): Promise<void> {
    while (this.#busy) await this.#busy;
  }

  #cursor(): number {
    let c = this.#readFrom;
    for (const p of this.#pending) if (p < c) c = p;
    return c;
  }

  #pump(): void {
    if (this.#closed) return;
    if (this.#timer === undefined) {
      // Renew the TTL while the stream lives, even if the consumer pauses for long.
      this.#timer = setInterval(() => {
        this.#renew = true;
        this.#pump();
      }, Math.max(250, Math.floor(this.#ttlMs / 3)));
      this.#timer.unref();
    }
    if (this.#busy) return;
    this.#busy = this.#loop().finally(() => {
      this.#busy = undefined;
    });
  }

  async #loop(): Promise<void> {
    while (!this.#closed) {
      const cursor = this.#cursor();
      const readFrom = this.#readFrom;
      const limit = Math.min(this.#order.length, cursor + this.#window);
      const to = this.#stalledAt === cursor ? this.#hinted : Math.min(limit, this.#hinted + this.#chunk);
      const accesses = to > this.#hinted ? hintAccesses(this.#order, this.#rangesOf, this.#hinted, to) : [];
      const first = this.#sent === undefined;
      const moved = first || this.#sent?.cursor !== cursor || this.#sent.readFrom !== readFrom;
      if (!moved && to <= this.#hinted && !this.#renew) return;
      this.#renew = false;
      const req: Omit<HintRequest, 'job'> = { cursor, readFrom, lookahead: this.#lookahead, ttlMs: this.#ttlMs };
      if (first) req.reset = true;
      if (accesses.length > 0) req.accesses = accesses;
      this.#stats.requests++;
      let r: { accepted: number; dropped: number; failed: number };
      try {
        r = await this.#target.hint(this.jobId, req);
      } catch {
        // A closed client, an aborted request: hints stop; reads go on.
        this.#stats.failed++;
        return;
      }
      this.#sent = { cursor, readFrom };
      this.#stats.failed += r.failed;
      this.#stats.dropped += r.dropped;
      if (r.dropped > 0) {
        // A worker is full: resend from here once the cursor has moved (resent hints are deduplicated).
        this.#stalledAt = cursor;
      } else {
        this.#hinted = to;
        this.#stats.hintedPartitions = to;
      }
    }
  }
}

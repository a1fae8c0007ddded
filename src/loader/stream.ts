import { setMaxListeners } from 'node:events';
import type { RecordBatch, Schema } from 'apache-arrow';
import PQueue from 'p-queue';
import { ClosedError, InternalError } from '../errors.js';
import { resumeState, type ShuffleResumeState } from '../shuffle/index.js';
import type { EpochPlanInput, RankPlan } from '../shuffle/types.js';
import { emptyBatch, gatherBatch } from './gather.js';
import type { HintRange, StreamHints } from './hints.js';
import { abortable } from '../util/retry.js';
import { queuedTask } from './signals.js';

/** What the pipeline needs from a dataset format: fetch a partition's bytes, decode them. */
export interface PartitionSource {
  readonly schema: Schema;
  readonly partitionRows: readonly number[];
  /** Bytes fetching partition `p` reads (counted against `prefetchBytes`). */
  partitionBytes(p: number): number;
  fetch(p: number, signal: AbortSignal): Promise<unknown>;
  /** `priority`: among decodes waiting for a thread, higher goes first (the pipeline passes its need order). */
  decode(p: number, fetched: unknown, signal: AbortSignal, priority?: number): Promise<RecordBatch[]>;
  /** The byte ranges fetching partition `p` reads, and where it reads them, for cache hints. */
  ranges?(p: number): readonly HintRange[];
  /**
   * When `fetch` did more than read (it read and decoded in a decode thread): how long
   * each part took there, so `stats()` keeps fetch and decode apart.
   */
  timing?(fetched: unknown): { fetchMs: number; decodeMs: number } | undefined;
  readonly fs?: unknown;
}

/** `stream.state()`: the shuffle module's resume state plus the rank that saved it. JSON-serialisable. */
export interface LoaderState extends ShuffleResumeState {
  rank: number;
}

export interface StreamStats {
  batches: number;
  rows: number;
  partitionsFetched: number;
  bytesFetched: number;
  /** Summed time of partition fetches (they overlap, so this can exceed wall time). */
  fetchMs: number;
  /** Summed time of partition decodes (pool tasks, overlapping). */
  decodeMs: number;
  /** Main-thread time spent gathering rows into batches. */
  assembleMs: number;
  /** Time the consumer waited for data after asking for the next batch. */
  stallMs: number;
  /** From the first `next()` to now (or the end). */
  wallMs: number;
  rowsPerSec: number;
  /** Most bytes resident (fetched or being fetched, not yet freed) at once. */
  peakResidentBytes: number;
}

export interface StreamConfig {
  plan: RankPlan;
  input: EpochPlanInput;
  prefetch: number;
  prefetchBytes: number;
  fetchConcurrency: number;
  signal?: AbortSignal | undefined;
  onEnd?: (() => void) | undefined;
  /** Told when fetches start and finish, to send cache hints (docs/hints.md); never changes what is yielded. */
  hints?: StreamHints | undefined;
  /**
   * Build every batch as a fresh copy, never as a slice of a decoded partition (the
   * loader thread moves batches to the consumer by transferring their buffers).
   */
  alwaysGather?: boolean | undefined;
  /**
   * With `alwaysGather`: when a partition is done with, detach the buffers its source
   * marked as owned (`ownDecoded`), so they are freed at the next minor GC instead of
   * whenever V8 next runs a full one (a thread that only receives decoded partitions
   * and allocates little else may go a long while without one).
   */
  releaseDecoded?: boolean | undefined;
}

/** Partitions started so far by every stream of this thread: earlier started, earlier needed. */
let startSequence = 0;

/** ArrayBuffers that nothing but the decoded partition built on them refers to. */
const ownedBuffers = new WeakSet<ArrayBuffer>();

/** Mark `buffer` as owned by the partition decoded from it (see `releaseDecoded`). */
export function ownDecoded(buffer: ArrayBufferLike): void {
  if (buffer instanceof ArrayBuffer) ownedBuffers.add(buffer);
}

/**
 * Detach the owned buffers under `batches`: moving them into a throwaway clone leaves
 * the partition's views empty and hands the memory to young objects nobody keeps.
 */
function releaseOwned(batches: readonly RecordBatch[]): void {
  const seen = new Set<ArrayBuffer>();
  const visit = (d: { values?: unknown; valueOffsets?: unknown; nullBitmap?: unknown; typeIds?: unknown; children?: readonly unknown[]; dictionary?: { data?: readonly unknown[] } } | undefined): void => {
    if (!d) return;
    for (const v of [d.values, d.valueOffsets, d.nullBitmap, d.typeIds]) {
      const b = (v as { buffer?: unknown } | undefined)?.buffer;
      if (b instanceof ArrayBuffer && ownedBuffers.has(b)) seen.add(b);
    }
    for (const c of d.children ?? []) visit(c as typeof d);
    for (const c of d.dictionary?.data ?? []) visit(c as typeof d);
  };
  for (const b of batches) visit(b.data);
  if (seen.size === 0) return;
  const list = [...seen];
  for (const b of list) ownedBuffers.delete(b);
  structuredClone(list, { transfer: list });
}

/** A decoded partition: its record batches, and the row offset of each within it. */
export interface DecodedPartition {
  batches: RecordBatch[];
  starts: number[];
}

/**
 * What `PipelineStream.partitions()` yields per batch: the partitions it needs that were
 * not handed out before, and, already gathered, every batch that is not one run of one
 * decoded batch (`runSlice`) and whose last partition is among them.
 */
export interface PartitionDelivery {
  batch: number;
  fresh: { partition: number; decoded: DecodedPartition }[];
  assembled: { batch: number; rb: RecordBatch }[];
  /** Every partition of the plan has now been handed out (and every gathered batch): nothing more will come. */
  final: boolean;
}

/**
 * Where batch `run` lies in `part` when it is one contiguous run inside one of its decoded
 * batches (so the batch is a zero-copy slice of it), else undefined.
 */
export function runSlice(part: DecodedPartition, run: { row: number; count: number }): { src: RecordBatch; at: number } | undefined {
  const { starts } = part;
  let b = starts.length - 1;
  while (b > 0 && (starts[b] as number) > run.row) b--;
  const src = part.batches[b] as RecordBatch;
  const at = run.row - (starts[b] as number);
  return at + run.count <= src.numRows ? { src, at } : undefined;
}

/**
 * One epoch's batches for one rank: what `ds.batches()` returns. Breaking out of a
 * `for await` (the iterator's `return()`) or `close()` releases what it prefetched.
 *
 * @example
 * await using stream = ds.batches({ batchSize: 1024, epoch, seed: 42, shuffle: true });
 * for await (const batch of stream) train(batch);
 */
export interface BatchStream extends AsyncIterable<RecordBatch>, AsyncDisposable {
  /** Batches this stream yields in all (after `resume`, the remaining ones). */
  readonly numBatches: number;
  /** A JSON-serialisable resume point: pass it as `resume` to `ds.batches` to continue after the batches consumed so far. */
  state(): LoaderState;
  stats(): StreamStats;
  /** Stop fetching and decoding; the iterator throws `reason` (or ends, when it already has). */
  cancel(reason?: unknown): void;
  /**
   * Stop fetching and decoding and free what was prefetched: a `next()` waiting then, and
   * every later one, rejects with `GRANARY_ERR_CLOSED` (a stream that already yielded its
   * last batch just stays ended). Resolves once its fetches and decodes have settled
   * (and, in a loader thread, the thread has let go of the stream). Idempotent.
   */
  close(): Promise<void>;
  /** `close()`, but a waiting `next()` and later ones reject with `err`. */
  destroy(err?: unknown): Promise<void>;
}

interface Slot {
  bytes: number;
  /** Resolves with the partition's decoded batches; never rejects unhandled. */
  done: Promise<RecordBatch[]>;
  /** Settles once the partition's bytes are in (or its fetch failed); never rejects. */
  fetched: Promise<void>;
  batches?: RecordBatch[];
  /** Row offset of each decoded batch within the partition. */
  starts?: number[];
}

/**
 * Executes one epoch's `RankPlan`: partitions are fetched in `plan.partitionOrder`,
 * at most `prefetch` ahead of the batch being assembled and within `prefetchBytes`
 * (a partition the current batch needs is always started, so one partition larger
 * than the budget still loads, alone), decoded, gathered into batches, and freed
 * after `plan.lastUse(p)`.
 */
export class PipelineStream implements BatchStream {
  readonly numBatches: number;
  readonly #src: PartitionSource;
  readonly #cfg: StreamConfig;
  readonly #ac = new AbortController();
  readonly #queue: PQueue;
  readonly #slots = new Map<number, Slot>();
  #next = 0;
  /** Set by `prime`: settles once the first batch's partitions are read. */
  #primeFirst: Promise<void> | undefined;
  #batchesDone = 0;
  #resident = 0;
  #started = false;
  #ended = false;
  /** Set when the stream was stopped before its end (cancel, close, the signal): later `next()` calls throw it. */
  #failure: { error: unknown } | undefined;
  /** Each started partition's fetch and decode, until it settles: `close()` waits for them. */
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #onAbort: () => void;
  readonly #stats = {
    batches: 0,
    rows: 0,
    partitionsFetched: 0,
    bytesFetched: 0,
    fetchMs: 0,
    decodeMs: 0,
    assembleMs: 0,
    stallMs: 0,
    peakResidentBytes: 0,
  };
  #t0 = 0;
  #t1 = 0;

  constructor(src: PartitionSource, cfg: StreamConfig) {
    this.#src = src;
    this.#cfg = cfg;
    this.numBatches = cfg.plan.numBatches;
    this.#queue = new PQueue({ concurrency: cfg.fetchConcurrency });
    // Every read in flight (partitions x column chunks x parts) listens on this one signal.
    setMaxListeners(0, this.#ac.signal);
    this.#onAbort = (): void => this.cancel(cfg.signal?.reason);
    if (cfg.signal?.aborted) this.#onAbort();
    else cfg.signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** A JSON-serialisable resume point: pass it as `resume` to `ds.batches` to continue after the batches consumed so far. */
  state(): LoaderState {
    return { ...resumeState(this.#cfg.input, this.#batchesDone), rank: this.#cfg.input.rank };
  }

  stats(): StreamStats {
    const end = this.#t1 || performance.now();
    const wallMs = this.#t0 ? end - this.#t0 : 0;
    return { ...this.#stats, wallMs, rowsPerSec: wallMs > 0 ? (this.#stats.rows * 1000) / wallMs : 0 };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<RecordBatch> {
    if (this.#started) throw new InternalError('A batch stream can be iterated only once; call ds.batches() again');
    this.#started = true;
    const gen = this.#run();
    const it: AsyncIterableIterator<RecordBatch> = {
      [Symbol.asyncIterator]: () => it,
      next: async () => {
        const r = await gen.next();
        // A stream stopped early keeps saying why, as the thread's stream does.
        if (r.done && this.#failure) throw this.#failure.error;
        return r;
      },
      return: async () => {
        await gen.return(undefined);
        await this.#settled();
        return { done: true, value: undefined };
      },
    };
    return it;
  }

  /**
   * Start fetching and decoding now, before anyone iterates, as iterating would: the
   * partitions the first batch needs, read alone, and then, with `window`, the next ones
   * within `prefetch` and `prefetchBytes` (the loader thread primes the next epoch this
   * way once the current one has no more decoding to do). Called again with `window`,
   * it adds the window. Decodes go by need (see `#start`), so the first batch's come first.
   */
  prime(window = true): void {
    if (this.#started || this.#ac.signal.aborted) return;
    if (!this.#primeFirst) {
      const { plan } = this.#cfg;
      const order = plan.partitionOrder;
      const first: Promise<void>[] = [];
      while (this.#next < order.length && plan.firstUse(order[this.#next] as number) <= 0) {
        const p = order[this.#next++] as number;
        this.#start(p);
        first.push((this.#slots.get(p) as Slot).fetched);
      }
      this.#primeFirst = Promise.all(first).then(() => undefined);
    }
    if (window) {
      void this.#primeFirst.then(() => {
        if (!this.#started && !this.#ac.signal.aborted) this.#schedule(0);
      });
    }
  }

  /** Every partition of the plan has been fetched and decoded: what is left is assembly. */
  get drained(): boolean {
    if (this.#next < this.#cfg.plan.partitionOrder.length) return false;
    for (const slot of this.#slots.values()) if (!slot.batches) return false;
    return true;
  }

  /** Stop fetching and decoding; the iterator throws `reason` (or ends, when it already has). */
  cancel(reason?: unknown): void {
    this.#stop(reason ?? new DOMException('The batch stream was cancelled', 'AbortError'));
  }

  close(): Promise<void> {
    return this.destroy(new ClosedError(`The batch stream was closed after ${this.#batchesDone} of ${this.numBatches} batches`));
  }

  async destroy(err?: unknown): Promise<void> {
    this.#stop(err ?? new ClosedError(`The batch stream was destroyed after ${this.#batchesDone} of ${this.numBatches} batches`));
    // Free the prefetched partitions now, not at the consumer's next call (it may never come).
    this.#end();
    await this.#settled();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #stop(reason: unknown): void {
    if (this.#ended || this.#ac.signal.aborted) return;
    this.#failure = { error: reason };
    this.#ac.abort(reason);
  }

  /**
   * Resolves once every fetch and decode started so far has settled (after `cancel()`,
   * they were told to stop): then none of its reads holds a file or a connection.
   */
  settled(): Promise<void> {
    return this.#settled();
  }

  /** Resolves once every fetch and decode started so far has settled (they were told to stop). */
  async #settled(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  #schedule(current: number): void {
    const { plan } = this.#cfg;
    const order = plan.partitionOrder;
    while (this.#next < order.length && !this.#ac.signal.aborted) {
      const p = order[this.#next] as number;
      const needed = plan.firstUse(p) <= current;
      if (!needed) {
        let ahead = 0;
        for (const q of this.#slots.keys()) if (plan.firstUse(q) > current) ahead++;
        const bytes = this.#src.partitionBytes(p);
        if (ahead >= this.#cfg.prefetch) break;
        if (this.#resident > 0 && this.#resident + bytes > this.#cfg.prefetchBytes) break;
      }
      this.#next++;
      this.#start(p);
    }
  }

  #start(p: number): void {
    const bytes = this.#src.partitionBytes(p);
    this.#resident += bytes;
    this.#stats.peakResidentBytes = Math.max(this.#stats.peakResidentBytes, this.#resident);
    const signal = this.#ac.signal;
    this.#cfg.hints?.started(p);
    // Among fetched partitions waiting for a decode thread, the one needed first goes
    // first: concurrent fetches finish in any order, and first come, first served had a
    // row group needed next decoded after others that were not. A decode thread never
    // waits for a fetch while another partition is ready (that cost the warm-cache epoch
    // a tenth of its speed).
    const priority = -++startSequence;
    let fetchSettled!: () => void;
    const fetchedP = new Promise<void>((resolve) => (fetchSettled = resolve));
    const done = (async () => {
      const t0 = performance.now();
      const fetched = await queuedTask(this.#queue, () => this.#src.fetch(p, signal), signal).finally(() => {
        fetchSettled();
        this.#cfg.hints?.fetched(p);
      });
      const t1 = performance.now();
      const split = this.#src.timing?.(fetched);
      this.#stats.fetchMs += split ? split.fetchMs : t1 - t0;
      this.#stats.partitionsFetched++;
      this.#stats.bytesFetched += bytes;
      const batches = await this.#src.decode(p, fetched, signal, priority);
      this.#stats.decodeMs += (split?.decodeMs ?? 0) + performance.now() - t1;
      return batches;
    })();
    const slot: Slot = { bytes, done, fetched: fetchedP };
    this.#inflight.add(done);
    const settled = (): void => {
      this.#inflight.delete(done);
    };
    done.then(settled, settled);
    done.then(
      (b) => {
        slot.batches = b;
        const starts: number[] = [];
        let n = 0;
        for (const x of b) {
          starts.push(n);
          n += x.numRows;
        }
        slot.starts = starts;
      },
      () => {},
    );
    this.#slots.set(p, slot);
  }

  #free(p: number, release = false): void {
    const slot = this.#slots.get(p);
    if (!slot) return;
    this.#slots.delete(p);
    this.#resident -= slot.bytes;
    if (release && this.#cfg.alwaysGather && this.#cfg.releaseDecoded && slot.batches) releaseOwned(slot.batches);
  }

  /**
   * The same pipeline, but instead of assembling batch `i`, hand out the decoded
   * partitions it needs that were not handed out yet (once each, in first-use order);
   * the caller slices its batches out of them. Batches that are not a slice of one
   * decoded batch (a run across two partitions, across two decoded batches, or not a run)
   * are gathered here, from the partition's rows cut out before it is handed out, and come
   * with the delivery of their last partition. After a partition is handed out the stream
   * no longer reads it.
   */
  partitions(): AsyncIterable<PartitionDelivery> {
    if (this.#started) throw new InternalError('A batch stream can be iterated only once; call ds.batches() again');
    this.#started = true;
    return this.#run(true);
  }

  #run(deliver: true): AsyncGenerator<PartitionDelivery>;
  #run(deliver?: false): AsyncGenerator<RecordBatch>;
  async *#run(deliver = false): AsyncGenerator<RecordBatch | PartitionDelivery> {
    const { plan } = this.#cfg;
    const delivered = new Set<number>();
    /** Deliver mode: batch -> (partition -> its rows of the batch, gathered), until every partition of the batch gave its piece. */
    const pending = new Map<number, Map<number, RecordBatch>>();
    const signal = this.#ac.signal;
    this.#t0 = performance.now();
    try {
      for (let i = 0; i < plan.numBatches; i++) {
        // Let the event loop run once per batch. A consumer whose step is synchronous CPU
        // work blocks it while it trains, and a batch that is already decoded is handed out
        // through microtasks alone, so without this hop fetch replies and decode results
        // would wait until the consumer ran dry: the pipeline would only move while it stalls.
        if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
        if (signal.aborted) throw signal.reason;
        this.#schedule(i);
        const rows = plan.batch(i);
        const parts = distinctInOrder(rows.partitions);
        const tw = performance.now();
        let waited = false;
        for (const p of parts) {
          const slot = this.#slots.get(p);
          if (!slot) throw new InternalError(`partition ${p} is needed by batch ${i} but was never started`);
          if (!slot.batches) {
            waited = true;
            await abortable(slot.done, signal);
          }
        }
        if (waited) this.#stats.stallMs += performance.now() - tw;
        if (deliver) {
          const fresh: PartitionDelivery['fresh'] = [];
          const assembled: PartitionDelivery['assembled'] = [];
          const ta = performance.now();
          for (const p of parts) {
            if (delivered.has(p)) continue;
            delivered.add(p);
            const slot = this.#slots.get(p) as Slot;
            const decoded = { batches: slot.batches as RecordBatch[], starts: slot.starts as number[] };
            fresh.push({ partition: p, decoded });
            this.#cutPieces(p, decoded, i, pending, assembled);
          }
          this.#stats.assembleMs += performance.now() - ta;
          for (const p of parts) if (plan.lastUse(p) <= i) this.#free(p);
          this.#stats.batches++;
          this.#stats.rows += rows.partitions.length;
          this.#batchesDone = i + 1;
          this.#schedule(i + 1);
          yield { batch: i, fresh, assembled, final: delivered.size === plan.partitionOrder.length };
          continue;
        }
        const ta = performance.now();
        const batch = assembleBatch(this.#src.schema, (p) => this.#slots.get(p) as DecodedPartition, rows.partitions, rows.rows, this.#cfg.alwaysGather ?? false);
        this.#stats.assembleMs += performance.now() - ta;
        for (const p of parts) if (plan.lastUse(p) <= i) this.#free(p, true);
        this.#stats.batches++;
        this.#stats.rows += batch.numRows;
        this.#batchesDone = i + 1;
        // Start the next fetches before handing over the batch, so they overlap the training step.
        this.#schedule(i + 1);
        yield batch;
      }
    } finally {
      this.#t1 = performance.now();
      this.#end();
    }
  }

  /**
   * Deliver mode, partition `p` about to be handed out at batch `from` (its first use): for
   * each batch from there to its last use that the consumer cannot slice out of it, gather
   * p's rows of that batch now; a batch whose every partition has given its rows is joined
   * and added to `out`.
   */
  #cutPieces(p: number, decoded: DecodedPartition, from: number, pending: Map<number, Map<number, RecordBatch>>, out: PartitionDelivery['assembled']): void {
    const { plan } = this.#cfg;
    const { schema } = this.#src;
    const last = plan.lastUse(p);
    for (let j = from; j <= last; j++) {
      const run = plan.run?.(j);
      if (run && (run.partition !== p || runSlice(decoded, run))) continue;
      const rows = plan.batch(j);
      const ps = distinctInOrder(rows.partitions);
      if (!ps.includes(p)) continue;
      if (ps.length === 1) {
        out.push({ batch: j, rb: assembleBatch(schema, () => decoded, rows.partitions, rows.rows, true) });
        continue;
      }
      let n = 0;
      for (let k = 0; k < rows.partitions.length; k++) if (rows.partitions[k] === p) n++;
      const pr = new Int32Array(n).fill(p);
      const rr = new Int32Array(n);
      for (let k = 0, at = 0; k < rows.partitions.length; k++) if (rows.partitions[k] === p) rr[at++] = rows.rows[k] as number;
      let got = pending.get(j);
      if (!got) pending.set(j, (got = new Map<number, RecordBatch>()));
      got.set(p, assembleBatch(schema, () => decoded, pr, rr, true));
      if (got.size < ps.length) continue;
      pending.delete(j);
      out.push({ batch: j, rb: joinPieces(schema, ps, got, rows.partitions) });
    }
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#cfg.hints?.close();
    this.#ac.abort(new DOMException('The batch stream ended', 'AbortError'));
    this.#cfg.signal?.removeEventListener('abort', this.#onAbort);
    for (const p of [...this.#slots.keys()]) this.#free(p, true);
    this.#cfg.onEnd?.();
  }
}

/**
 * Batch rows (`partitions[k]`, `rows[k]`) from decoded partitions: a zero-copy slice when
 * they are one contiguous run of one decoded batch (unless `alwaysGather`), else a gather.
 */
export function assembleBatch(schema: Schema, slotOf: (p: number) => DecodedPartition, partitions: Int32Array, rows: Int32Array, alwaysGather = false): RecordBatch {
  const n = partitions.length;
  if (n === 0) return emptyBatch(schema);
  const src: RecordBatch[] = [];
  // Partition -> (decoded batch -> index in src, -1 until used); numeric keys, no string per row.
  const srcIndex = new Map<number, number[]>();
  const s = new Int32Array(n);
  const r = new Int32Array(n);
  let lastP = -1;
  let slot: DecodedPartition | undefined;
  let idxs: number[] = [];
  for (let k = 0; k < n; k++) {
    const p = partitions[k] as number;
    if (p !== lastP) {
      lastP = p;
      const cur = slotOf(p);
      slot = cur;
      let x = srcIndex.get(p);
      if (x === undefined) {
        x = new Array<number>(cur.batches.length).fill(-1);
        srcIndex.set(p, x);
      }
      idxs = x;
    }
    const starts = (slot as DecodedPartition).starts;
    const row = rows[k] as number;
    let b = starts.length - 1;
    while (b > 0 && (starts[b] as number) > row) b--;
    let idx = idxs[b] as number;
    if (idx === -1) {
      idx = src.length;
      src.push((slot as DecodedPartition).batches[b] as RecordBatch);
      idxs[b] = idx;
    }
    s[k] = idx;
    r[k] = row - (starts[b] as number);
  }
  // A contiguous run inside one decoded batch is a zero-copy slice.
  if (src.length === 1 && n > 0 && !alwaysGather) {
    let contiguous = true;
    for (let k = 1; k < n; k++) {
      if ((r[k] as number) !== (r[0] as number) + k) {
        contiguous = false;
        break;
      }
    }
    if (contiguous) return (src[0] as RecordBatch).slice(r[0], (r[0] as number) + n);
  }
  return gatherBatch(schema, src, s, r);
}

/** Batch rows from per-partition pieces (each holding its partition's rows of the batch, in batch order). */
function joinPieces(schema: Schema, ps: readonly number[], pieces: Map<number, RecordBatch>, partitions: Int32Array): RecordBatch {
  const n = partitions.length;
  const s = new Int32Array(n);
  const r = new Int32Array(n);
  const next = new Int32Array(ps.length);
  let lastP = -1;
  let x = 0;
  for (let k = 0; k < n; k++) {
    const p = partitions[k] as number;
    if (p !== lastP) {
      lastP = p;
      x = ps.indexOf(p);
    }
    s[k] = x;
    r[k] = next[x] as number;
    next[x] = (next[x] as number) + 1;
  }
  return gatherBatch(schema, ps.map((p) => pieces.get(p) as RecordBatch), s, r);
}

/** The distinct values of `xs` in order of first appearance (a batch touches few partitions, in runs). */
export function distinctInOrder(xs: Int32Array): number[] {
  const out: number[] = [];
  let seen: Set<number> | undefined; // only once there are many ('global' shuffle)
  let last = -1;
  for (let k = 0; k < xs.length; k++) {
    const x = xs[k] as number;
    if (x === last) continue;
    last = x;
    if (seen ? seen.has(x) : out.includes(x)) continue;
    out.push(x);
    if (seen) seen.add(x);
    else if (out.length > 16) seen = new Set(out);
  }
  return out;
}

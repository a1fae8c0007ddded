import { randomUUID } from 'node:crypto';
import { MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { RecordBatch } from 'apache-arrow';
import { Data, Struct, type Schema } from 'apache-arrow';
import { Piscina } from 'piscina';
import { ClosedError, InternalError, errorFromCode, throwIfAborted } from '../errors.js';
import { resumeState } from '../shuffle/index.js';
import type { EpochPlanInput, RankPlan } from '../shuffle/types.js';
import { threadEntry } from './decode-pool.js';
import type { LoaderHintOptions } from './hints.js';
import type { DatasetReadStats } from './read-stats.js';
import { CTL, CTL_SLOTS, STAT, STAT_SLOTS, type CloseTask, type DatasetInit, type StatsTask, type StreamMessage, type StreamTask } from './loader-thread.js';
import { emptyBatch } from './gather.js';
import { wrapBatch } from './record-batch.js';
import { abortable } from '../util/retry.js';
import { linkedController, threadsExited } from './signals.js';
import { runSlice, type BatchStream, type DecodedPartition, type LoaderState, type StreamStats } from './stream.js';
import { unipcBatches, unpackBatches, type WireBatches } from './wire.js';

/**
 * The consumer's end of a pipeline that runs in the loader thread. A training step that
 * keeps this thread busy (synchronous CPU work, a blocked event loop) no longer holds up
 * fetches and decodes: they run in another thread, and finished batches wait in a
 * MessagePort. `next()` takes one with `receiveMessageOnPort` (no event-loop turn) and
 * rebuilds it as views over the transferred buffer, so the consumer pays a few
 * microseconds per batch.
 */

export interface ThreadStreamConfig {
  input: EpochPlanInput;
  /** The same plan the thread executes: needed in mode 'none', where batches are sliced here. */
  plan: RankPlan | undefined;
  numBatches: number;
  prefetch: number;
  prefetchBytes: number;
  fetchConcurrency: number;
  ahead: number;
  /** Bytes of the batches sent but not yet consumed, at most (shuffled batches; one always goes). */
  aheadBytes: number;
  hints: false | LoaderHintOptions;
  signal?: AbortSignal | undefined;
  onEnd?: (() => void) | undefined;
}

/**
 * One piscina thread that runs every stream of one dataset. `close()` ends the dataset
 * there (its decode pool, its store client) and then the thread; calls in flight reject
 * with `GRANARY_ERR_CLOSED`. The dataset closes its streams first.
 */
export class LoaderThread {
  readonly id = randomUUID();
  readonly #init: DatasetInit;
  #pool: Piscina | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** One controller per `readStats()` in flight: `close()` aborts them. */
  readonly #calls = new Set<AbortController>();

  constructor(init: DatasetInit) {
    this.#init = init;
  }

  #get(): Piscina {
    if (this.#closed) throw new ClosedError('Dataset is closed');
    this.#pool ??= new Piscina({
      ...threadEntry('loader-thread'),
      minThreads: 1,
      maxThreads: 1,
      // Every stream is a task that lasts its epoch; several may overlap (the next epoch
      // created before this one ends), plus the close task.
      concurrentTasksPerWorker: 1024,
      idleTimeout: 60_000,
      // Never block the thread in Atomics.wait between tasks (piscina's default): the
      // next epoch's priming runs there after its stream's task ended, and must go on.
      atomics: 'async',
    });
    return this.#pool;
  }

  setDecodeThreads(threads: number | undefined): void {
    this.#init.decodeThreads = threads;
  }

  stream(schema: Schema, cfg: ThreadStreamConfig): ThreadBatchStream {
    const pool = this.#get();
    const { port1, port2 } = new MessageChannel();
    const ctl = new SharedArrayBuffer(CTL_SLOTS * Int32Array.BYTES_PER_ELEMENT);
    Atomics.store(new Int32Array(ctl), CTL.WAKE_AT, -1);
    const stats = new SharedArrayBuffer(STAT_SLOTS * Float64Array.BYTES_PER_ELEMENT);
    const task: StreamTask = {
      op: 'stream',
      dataset: this.id,
      init: this.#init,
      port: port2,
      ctl,
      stats,
      input: cfg.input,
      prefetch: cfg.prefetch,
      prefetchBytes: cfg.prefetchBytes,
      fetchConcurrency: cfg.fetchConcurrency,
      ahead: cfg.ahead,
      aheadBytes: cfg.aheadBytes,
      hints: cfg.hints,
    };
    const done = pool.run(task, { transferList: [port2] }) as Promise<void>;
    return new ThreadBatchStream(schema, cfg, port1, ctl, stats, done);
  }

  /** The thread's store client counters, or undefined before its first stream. */
  async readStats(options: { signal?: AbortSignal | undefined } = {}): Promise<DatasetReadStats | undefined> {
    if (this.#closed) throw new ClosedError('Dataset is closed');
    throwIfAborted(options.signal);
    if (!this.#pool) return undefined;
    const { controller, dispose } = linkedController(options.signal);
    this.#calls.add(controller);
    try {
      const task: StatsTask = { op: 'stats', dataset: this.id };
      return (await abortable(this.#pool.run(task) as Promise<DatasetReadStats | undefined>, controller.signal));
    } finally {
      this.#calls.delete(controller);
      dispose();
    }
  }

  /** End the dataset in the thread, then the thread; resolves once it has exited. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown(true, new ClosedError('Dataset is closed'));
    return this.#closing;
  }

  /** End the thread at once (calls in flight reject with `err`); resolves once it has exited. */
  destroy(err?: unknown): Promise<void> {
    this.#closing ??= this.#shutdown(false, err ?? new ClosedError('Dataset was destroyed'));
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #shutdown(graceful: boolean, reason: unknown): Promise<void> {
    this.#closed = true;
    for (const c of [...this.#calls]) c.abort(reason);
    this.#calls.clear();
    const pool = this.#pool;
    this.#pool = undefined;
    if (!pool) return;
    if (graceful) {
      const task: CloseTask = { op: 'close', dataset: this.id };
      await (pool.run(task) as Promise<void>).catch(() => undefined);
    }
    // Wait for the thread to be gone, not only told to go: close() leaves nothing running.
    const exited = threadsExited(pool.threads);
    await pool.destroy();
    await exited;
  }
}

/** `batch.slice(at, at + n)` with fewer intermediate objects (the consumer's thread pays for it per batch). */
function sliceBatch(batch: RecordBatch, structType: Struct, at: number, n: number): RecordBatch {
  if (at === 0 && n === batch.numRows) return batch;
  const children = batch.data.children.map((c) => c.slice(at, n));
  return wrapBatch(batch.schema, new Data(structType, 0, n, 0, [] as never, children));
}

/** Rows in batch `i` of `plan` (batches are `batchSize` rows but the last). */
function batchRows(plan: RankPlan, batchSize: number, i: number): number {
  return Math.max(0, Math.min(batchSize, plan.numRows - i * batchSize));
}

export class ThreadBatchStream implements BatchStream {
  readonly numBatches: number;
  readonly #schema: Schema;
  readonly #struct: Struct;
  readonly #cfg: ThreadStreamConfig;
  readonly #port: MessagePort;
  readonly #ctl: Int32Array;
  readonly #stats: Float64Array;
  readonly #queue: StreamMessage[] = [];
  /** Mode 'none': decoded partitions received and still needed. */
  readonly #parts = new Map<number, DecodedPartition>();
  /** Mode 'none': batches the thread gathered (not a slice of one decoded batch), by index. */
  readonly #ready = new Map<number, RecordBatch>();
  #wake: (() => void) | undefined;
  #started = false;
  #ended = false;
  /** Set when the stream must throw: cancel(reason), the signal, a dead thread. */
  #failure: { error: unknown } | undefined;
  #consumed = 0;
  #rows = 0;
  #stallMs = 0;
  #assembleMs = 0;
  #t0 = 0;
  #t1 = 0;
  readonly #onAbort: () => void;
  /** Settles once the thread has let go of this stream (its task ended). */
  readonly #released: Promise<void>;

  constructor(schema: Schema, cfg: ThreadStreamConfig, port: MessagePort, ctl: SharedArrayBuffer, stats: SharedArrayBuffer, done: Promise<void>) {
    this.#schema = schema;
    this.#struct = new Struct(schema.fields);
    this.#cfg = cfg;
    this.numBatches = cfg.numBatches;
    this.#port = port;
    this.#ctl = new Int32Array(ctl);
    this.#stats = new Float64Array(stats);
    // Messages the event loop delivers (when the consumer awaits) join the queue in order;
    // the rest are taken synchronously by next().
    port.on('message', (m: StreamMessage) => {
      this.#queue.push(m);
      this.#notify();
    });
    this.#released = done.then(
      () => undefined,
      () => undefined,
    );
    done.then(
      () => this.#notify(),
      (err: unknown) => {
        // The thread died (not a pipeline error: those arrive as messages).
        this.#failure ??= { error: new InternalError(`The loader thread failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }) };
        this.#notify();
      },
    );
    this.#onAbort = () => this.cancel(cfg.signal?.reason);
    if (cfg.signal?.aborted) this.#onAbort();
    else cfg.signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  state(): LoaderState {
    return { ...resumeState(this.#cfg.input, this.#consumed), rank: this.#cfg.input.rank };
  }

  stats(): StreamStats {
    const s = this.#stats;
    const end = this.#t1 || performance.now();
    const wallMs = this.#t0 ? end - this.#t0 : 0;
    return {
      batches: this.#consumed,
      rows: this.#rows,
      partitionsFetched: s[STAT.PARTITIONS] as number,
      bytesFetched: s[STAT.BYTES] as number,
      fetchMs: s[STAT.FETCH_MS] as number,
      decodeMs: s[STAT.DECODE_MS] as number,
      assembleMs: (s[STAT.ASSEMBLE_MS] as number) + (s[STAT.PACK_MS] as number) + this.#assembleMs,
      stallMs: this.#stallMs,
      wallMs,
      rowsPerSec: wallMs > 0 ? (this.#rows * 1000) / wallMs : 0,
      peakResidentBytes: s[STAT.PEAK_RESIDENT] as number,
    };
  }

  cancel(reason?: unknown): void {
    if (this.#ended) return;
    this.#failure ??= { error: reason ?? new DOMException('The batch stream was cancelled', 'AbortError') };
    this.#stop();
    this.#notify();
  }

  close(): Promise<void> {
    return this.destroy(new ClosedError(`The batch stream was closed after ${this.#consumed} of ${this.numBatches} batches`));
  }

  async destroy(err?: unknown): Promise<void> {
    if (!this.#ended) {
      this.#failure ??= { error: err ?? new ClosedError(`The batch stream was destroyed after ${this.#consumed} of ${this.numBatches} batches`) };
      // Let go of what was received now, not at the consumer's next call (it may never come).
      this.#finish();
      this.#notify();
    }
    await this.#released;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<RecordBatch> {
    if (this.#started) throw new InternalError('A batch stream can be iterated only once; call ds.batches() again');
    this.#started = true;
    this.#t0 = performance.now();
    return {
      next: () => this.#next(),
      return: async () => {
        this.#finish();
        await this.#released;
        return { done: true, value: undefined };
      },
    };
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #throwFailure(): never {
    const { error } = this.#failure as { error: unknown };
    this.#finish();
    throw error;
  }

  /** The next message: taken at once when the thread has sent it, else awaited (that wait is the data stall). */
  async #message(): Promise<StreamMessage> {
    let m = this.#queue.length > 0 ? this.#queue.shift() : (receiveMessageOnPort(this.#port)?.message as StreamMessage | undefined);
    if (m !== undefined) return m;
    const tw = performance.now();
    while (m === undefined) {
      if (this.#failure) {
        this.#stallMs += performance.now() - tw;
        this.#throwFailure();
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      m = this.#queue.length > 0 ? this.#queue.shift() : (receiveMessageOnPort(this.#port)?.message as StreamMessage | undefined);
    }
    this.#stallMs += performance.now() - tw;
    return m;
  }

  #unpack(m: { w: WireBatches } | { ipc: Uint8Array }): RecordBatch[] {
    return 'w' in m ? unpackBatches(this.#schema, this.#struct, m.w) : unipcBatches(m.ipc);
  }

  /** Take the next message of partitions and gathered batches (mode 'none'). */
  async #receiveParts(i: number): Promise<void> {
    const m = await this.#message();
    if (Array.isArray(m) || !('parts' in m) || m.parts === undefined) {
      if (!Array.isArray(m)) this.#control(m);
      throw new InternalError(`The loader thread sent a batch where the data of batch ${i} was expected`);
    }
    const t = performance.now();
    const all = this.#unpack(m);
    let at = 0;
    for (const meta of m.parts) {
      this.#parts.set(meta.p, { batches: all.slice(at, at + meta.n), starts: meta.starts });
      at += meta.n;
    }
    m.ready.forEach((j, k) => this.#ready.set(j, ('w' in m ? all[at + k] : unipcBatches(m.readyIpc[k] as Uint8Array)[0]) as RecordBatch));
    this.#assembleMs += performance.now() - t;
  }

  /** Throws for an error message, or for an end before the last batch. */
  #control(m: StreamMessage): void {
    if ('error' in m) {
      const e = m.error;
      this.#finish();
      throw e.code !== undefined ? errorFromCode(e.code, e.message, e.url) : Object.assign(new Error(e.message), { name: e.name });
    }
    if ('end' in m) {
      this.#finish();
      throw new InternalError(`The loader thread ended after ${this.#consumed} of ${this.numBatches} batches`);
    }
  }

  async #next(): Promise<IteratorResult<RecordBatch>> {
    if (this.#failure) this.#throwFailure();
    if (this.#ended) return { done: true, value: undefined };
    const i = this.#consumed;
    const { plan } = this.#cfg;
    if (i >= this.numBatches) {
      this.#finish(true);
      return { done: true, value: undefined };
    }
    let batch: RecordBatch | undefined;
    if (plan) {
      // Mode 'none': a slice of a decoded partition the thread sent, or a batch it gathered.
      while (batch === undefined) {
        const t = performance.now();
        batch = this.#ready.get(i);
        if (batch) this.#ready.delete(i);
        else {
          const run = plan.run?.(i);
          const part = run && this.#parts.get(run.partition);
          const cut = part && runSlice(part, run);
          if (cut) batch = sliceBatch(cut.src, this.#struct, cut.at, run.count);
          else if (!run && batchRows(plan, this.#cfg.input.batchSize, i) === 0) batch = emptyBatch(this.#schema);
        }
        this.#assembleMs += performance.now() - t;
        if (batch === undefined) await this.#receiveParts(i);
      }
      for (const p of this.#parts.keys()) if (plan.lastUse(p) <= i) this.#parts.delete(p);
    } else {
      const m = await this.#message();
      const t = performance.now();
      if (Array.isArray(m)) batch = unpackBatches(this.#schema, this.#struct, m)[0] as RecordBatch;
      else if ('ipc' in m && m.parts === undefined) batch = unipcBatches(m.ipc)[0] as RecordBatch;
      else {
        this.#control(m);
        throw new InternalError('The loader thread sent partitions in a shuffled stream');
      }
      this.#assembleMs += performance.now() - t;
    }
    this.#consumed = i + 1;
    this.#rows += batch.numRows;
    const ctl = this.#ctl;
    Atomics.store(ctl, CTL.CONSUMED, this.#consumed);
    const wakeAt = Atomics.load(ctl, CTL.WAKE_AT);
    if (wakeAt >= 0 && this.#consumed >= wakeAt) {
      Atomics.store(ctl, CTL.WAKE_AT, -1);
      Atomics.notify(ctl, CTL.CONSUMED);
    }
    return { done: false, value: batch };
  }

  /** Tell the thread to stop, keep nothing. */
  #stop(): void {
    Atomics.store(this.#ctl, CTL.CANCEL, 1);
    Atomics.notify(this.#ctl, CTL.CONSUMED);
    try {
      this.#port.postMessage({ cancel: true });
    } catch {
      /* closed */
    }
  }

  /** `complete`: every batch was taken, and the thread may go on (it primes the next epoch). */
  #finish(complete = false): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#t1 = performance.now();
    if (!complete) this.#stop();
    this.#port.close();
    this.#queue.length = 0;
    this.#parts.clear();
    this.#ready.clear();
    this.#cfg.signal?.removeEventListener('abort', this.#onAbort);
    this.#cfg.onEnd?.();
  }
}

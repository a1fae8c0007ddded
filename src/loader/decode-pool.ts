import { availableParallelism } from 'node:os';
import PQueue from 'p-queue';
import { Piscina } from 'piscina';
import { ClosedError, DecodeError, InternalError, TimeoutError, errorFromCode, isGranaryError } from '../errors.js';
import { optionalInt } from '../util/validate.js';
import type { FetchRange, FetchedDecode, ParquetDecodeTask } from './decode-parquet.js';
import type { UfsSpec } from './portable-fs.js';
import type { DatasetReadStats } from './read-stats.js';
import { linkedController, threadsExited } from './signals.js';

export interface DecodePoolOptions {
  /**
   * Decode threads.
   * @default max(1, cores - 1)
   */
  threads?: number | undefined;
  /**
   * A decode that takes longer than this fails with `GRANARY_ERR_TIMEOUT` naming the
   * file, and the pool's threads are replaced: a decoder stuck on a malformed file must
   * not hang the loader.
   * @default 120_000
   */
  timeoutMs?: number | undefined;
  /**
   * The threads will also read (`fetchInDecoder`): keep their event loops running
   * between tasks.
   * @default false
   */
  threadsRead?: boolean | undefined;
}

/** Options of one `decode()` / `fetchAndDecode()` call. */
export interface DecodeCallOptions {
  /** Abort the call: it rejects with `signal.reason`, and a queued task is dropped. */
  signal?: AbortSignal | undefined;
  /**
   * Among tasks waiting for a thread, a higher priority goes first, then the one asked first.
   * @default 0
   */
  priority?: number | undefined;
}

/**
 * The piscina pool that decodes Parquet row groups off the main thread. Under tsx /
 * vitest the worker is the .ts source run through tsx; from dist/ it is the .js file.
 *
 * `close()` (or `destroy(err)`) settles every call at once: queued and running decodes
 * reject with `GRANARY_ERR_CLOSED` (or `err`), later calls reject at once, and it
 * resolves once the pool's threads have exited.
 *
 * @example
 * await using pool = new DecodePool({ threads: 4 });
 * const a = await Dataset.parquet(urlA, { fs, pool });
 * const b = await Dataset.parquet(urlB, { fs, pool });
 */
export class DecodePool {
  readonly threads: number;
  readonly timeoutMs: number;
  #pool: Piscina | undefined;
  readonly #order: PQueue;
  readonly #threadsRead: boolean;
  /** Set by `close()` / `destroy()`: what every call rejects with from then on. */
  #closedWith: { error: unknown } | undefined;
  #closing: Promise<void> | undefined;
  /** One controller per call queued or running: `close()` aborts them all. */
  readonly #calls = new Set<AbortController>();
  /** Pools ended after a timeout whose threads may still be exiting. */
  readonly #retiring = new Set<Promise<void>>();

  constructor(options: DecodePoolOptions = {}) {
    this.threads = optionalInt('decodeThreads', options.threads, Math.max(1, availableParallelism() - 1), 1);
    this.timeoutMs = optionalInt('timeoutMs', options.timeoutMs, 120_000, 1);
    this.#order = new PQueue({ concurrency: this.threads });
    this.#threadsRead = options.threadsRead === true;
  }

  /** Whether `close()` or `destroy()` was called. */
  get closed(): boolean {
    return this.#closedWith !== undefined;
  }

  #get(): Piscina {
    if (this.#closedWith) throw this.#closedWith.error;
    if (!this.#pool) {
      this.#pool = new Piscina({
        ...threadEntry('decode-worker'),
        // Every failed decode ends its thread on purpose (see decode-worker.ts); keeping
        // minThreads at the pool size makes piscina start a replacement at once, so a
        // task queued behind the failed one never waits for a thread.
        minThreads: this.threads,
        maxThreads: this.threads,
        idleTimeout: 30_000,
        // A thread that reads for its decodes keeps a store or cache client, whose sockets
        // and timers must run between tasks: never park it in Atomics.wait then. Only
        // then: with 'async', peak RSS grew with the dataset in the loader bench (section 3).
        ...(this.#threadsRead ? { atomics: 'async' as const } : {}),
      });
      // A worker that dies between tasks emits 'error' on the pool; tasks in flight get it instead.
      this.#pool.on('error', () => {});
    }
    return this.#pool;
  }

  /**
   * Decode one row group (or a schema) to Arrow IPC stream bytes. Failures are DecodeErrors
   * naming the file. An abort of `signal` rejects with its reason at once (a queued task
   * is dropped; a running one finishes unobserved).
   */
  async decode(task: ParquetDecodeTask, transfer: ArrayBuffer[], options: DecodeCallOptions = {}): Promise<Uint8Array> {
    const out = await this.#run(task, transfer, undefined, options.signal, undefined, options.priority ?? 0);
    if (!(out instanceof Uint8Array)) throw new DecodeError(`Decoder returned no bytes for ${task.url}`, { url: task.url });
    return out;
  }

  /**
   * Read a row group's `ranges` in a decode thread, through its own client built from
   * `fs` (see portable-fs.ts), and decode them there. The decode deadline (`timeoutMs`)
   * starts once the bytes are in; the read itself is bounded by the client's own
   * timeouts. A failed read rejects with the client's coded error and keeps the thread.
   * `onStats` is told what the read did to the thread's client (for `ds.readStats()`),
   * also when the caller gave up meanwhile.
   */
  async fetchAndDecode(
    task: Omit<ParquetDecodeTask, 'pieces' | 'fetch'>,
    fs: UfsSpec,
    ranges: FetchRange[],
    options: DecodeCallOptions & { onStats?: ((stats: DatasetReadStats) => void) | undefined } = {},
  ): Promise<Extract<FetchedDecode, { ipc: Uint8Array }>> {
    const { signal, onStats } = options;
    // [0]: when the read finished (Date.now(), 0 until then); [1]: 1 once the caller gave up.
    const shared = new Float64Array(new SharedArrayBuffer(16));
    const out = (await this.#run(
      { ...task, pieces: [], fetch: { fs, ranges, done: shared.buffer } },
      [],
      shared,
      signal,
      (running) => {
        running.then((r) => {
          const st = (r as FetchedDecode | undefined)?.stats;
          if (st) onStats?.(st);
        }, () => undefined);
      },
      options.priority ?? 0,
    )) as FetchedDecode | undefined;
    if (out && 'fetchError' in out) {
      const e = out.fetchError;
      if (e.code !== undefined) throw errorFromCode(e.code, e.message, e.url ?? task.url);
      throw new InternalError(`Reading ${task.url} in a decode thread failed: ${e.name}: ${e.message}`, { url: task.url });
    }
    if (!out || !(out.ipc instanceof Uint8Array)) throw new DecodeError(`Decoder returned no bytes for ${task.url}`, { url: task.url });
    return out;
  }

  /**
   * By priority, then in the order asked, at most one task per thread handed to piscina:
   * piscina's own queue put a task carrying an abort signal that it could not place at
   * once in front of earlier ones, so the row group a consumer needs next could be
   * decoded last. Each call runs under a signal of its own that the caller's `signal`
   * and `close()` both abort: p-queue drops an aborted task that is still queued, which
   * `clear()` would leave pending forever.
   */
  async #run(task: ParquetDecodeTask, transfer: ArrayBuffer[], fetchedAt: Float64Array | undefined, signal?: AbortSignal, watch?: (running: Promise<unknown>) => void, priority = 0): Promise<unknown> {
    if (this.#closedWith) throw this.#closedWith.error;
    const { controller, dispose } = linkedController(signal);
    if (controller.signal.aborted) throw controller.signal.reason;
    this.#calls.add(controller);
    try {
      return await this.#order.add(() => this.#runNow(task, transfer, fetchedAt, controller.signal, watch), { signal: controller.signal, priority });
    } catch (err) {
      throw controller.signal.aborted ? (controller.signal.reason ?? err) : err;
    } finally {
      this.#calls.delete(controller);
      dispose();
    }
  }

  /** One task under the decode deadline; `fetchedAt`: see `fetchAndDecode` (the deadline counts from the end of the read). */
  async #runNow(task: ParquetDecodeTask, transfer: ArrayBuffer[], fetchedAt: Float64Array | undefined, signal: AbortSignal, watch?: (running: Promise<unknown>) => void): Promise<unknown> {
    const pool = this.#get();
    // The deadline aborts the task in piscina, which ends its thread (a wedged decoder
    // cannot be interrupted otherwise). A caller's abort does not: the caller stops
    // waiting at once and a row group's decode, already running, finishes on its own,
    // which is cheaper than ending the thread and starting a new one.
    const timer = new AbortController();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        // A task that reads sees this and skips its decode.
        if (fetchedAt) fetchedAt[1] = 1;
        reject(signal.reason);
      };
    });
    aborted.catch(() => undefined);
    if (signal.aborted) onAbort?.();
    else if (onAbort) signal.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    let t: NodeJS.Timeout | undefined;
    const arm = (ms: number): void => {
      t = setTimeout(() => {
        if (fetchedAt && fetchedAt[1] !== 0) return; // the caller gave up; the task ends on its own
        if (fetchedAt && fetchedAt[0] === 0) return arm(this.timeoutMs); // still reading
        const left = fetchedAt ? this.timeoutMs - (Date.now() - (fetchedAt[0] as number)) : 0;
        if (left > 0) return arm(left);
        timedOut = true;
        timer.abort(new TimeoutError(`Decoding ${task.url} took over ${this.timeoutMs} ms`, { url: task.url }));
      }, ms);
      t.unref();
    };
    arm(this.timeoutMs);
    try {
      const running = pool.run(task, { transferList: transfer, signal: timer.signal }) as Promise<unknown>;
      running.catch(() => undefined);
      watch?.(running);
      return await Promise.race([running, aborted]);
    } catch (err) {
      if (signal.aborted) throw signal.reason ?? err;
      if (timedOut) {
        // Replace every thread: whatever wedged this task must not wedge the next.
        if (this.#pool === pool) this.#pool = undefined;
        this.#retire(pool);
        throw new TimeoutError(`Decoding ${task.schemaOnly ? 'the schema of' : `${task.numRows} rows of`} ${task.url} took over ${this.timeoutMs} ms; the decoder threads were replaced`, {
          url: task.url,
          cause: err,
        });
      }
      if (isGranaryError(err)) throw err;
      const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      throw new DecodeError(`Cannot decode ${task.schemaOnly ? 'the schema of' : `${task.numRows} rows of`} ${task.url}: ${msg}`, {
        url: task.url,
        cause: err,
      });
    } finally {
      clearTimeout(t);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  /** End `pool`'s threads in the background; `close()` waits for them. */
  #retire(pool: Piscina): void {
    const exited = threadsExited(pool.threads);
    const gone: Promise<void> = Promise.all([pool.destroy().catch(() => undefined), exited]).then(() => {
      this.#retiring.delete(gone);
    });
    this.#retiring.add(gone);
  }

  /**
   * Reject every queued and running decode with `GRANARY_ERR_CLOSED`, and every later
   * call at once; resolves once the pool's threads have exited. Idempotent.
   */
  close(): Promise<void> {
    return this.#shutdown(new ClosedError(`Decode pool is closed (${this.threads} threads)`));
  }

  /**
   * Stop at once: queued and running decodes reject with `err` (`GRANARY_ERR_CLOSED` by
   * default), later calls with `GRANARY_ERR_CLOSED`. Resolves once the threads have
   * exited. After `close()` it only waits for that.
   */
  destroy(err?: unknown): Promise<void> {
    return this.#shutdown(err ?? new ClosedError(`Decode pool was destroyed (${this.threads} threads)`));
  }

  #shutdown(reason: unknown): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closedWith = { error: reason instanceof ClosedError ? reason : new ClosedError(`Decode pool was destroyed (${this.threads} threads)`, { cause: reason }) };
    // Settle every call now, queued ones included (p-queue drops an aborted queued task).
    for (const c of [...this.#calls]) c.abort(reason);
    this.#calls.clear();
    const pool = this.#pool;
    this.#pool = undefined;
    if (pool) this.#retire(pool);
    this.#closing = Promise.all([...this.#retiring]).then(() => undefined);
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Piscina `filename` (and `execArgv`) for a worker module next to this file: under tsx /
 * vitest the .ts source run through tsx, from dist/ the .js file.
 */
export function threadEntry(name: string): { filename: string; execArgv?: string[] } {
  const self = new URL(import.meta.url);
  const isTs = self.pathname.endsWith('.ts');
  const filename = new URL(`./${name}${isTs ? '.ts' : '.js'}`, self).href;
  return isTs ? { filename, execArgv: [...withoutTsx(process.execArgv), '--import', 'tsx'] } : { filename };
}

const VALUE_FLAGS = new Set(['--require', '-r', '--import', '--loader', '--experimental-loader']);

/**
 * `execArgv` without tsx's own flags. `npx tsx` passes them as pairs
 * (`--require <tsx>/preflight.cjs --import file://<tsx>/loader.mjs`), `node --import tsx`
 * as `--import tsx`: drop the flag together with its value, or the worker gets a flag
 * with no argument.
 */
function withoutTsx(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const next = argv[i + 1];
    if (VALUE_FLAGS.has(a) && next !== undefined && next.includes('tsx')) {
      i++;
      continue;
    }
    if (a.includes('tsx')) continue;
    out.push(a);
  }
  return out;
}

import { availableParallelism } from 'node:os';
import PQueue from 'p-queue';
import { Piscina } from 'piscina';
import { ClosedError, DecodeError, InvalidArgumentError, TimeoutError, isGranaryError } from '../errors.js';
import type { ParquetDecodeTask } from './decode-parquet.js';

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
}

/**
 * The piscina pool that decodes Parquet row groups off the main thread. Under tsx /
 * vitest the worker is the .ts source run through tsx; from dist/ it is the .js file.
 */
export class DecodePool {
  readonly threads: number;
  readonly timeoutMs: number;
  #pool: Piscina | undefined;
  readonly #order: PQueue;
  #closed = false;

  constructor(options: DecodePoolOptions = {}) {
    const t = options.threads ?? Math.max(1, availableParallelism() - 1);
    if (!Number.isInteger(t) || t < 1) {
      throw new InvalidArgumentError(`Expected \`decodeThreads\` to be an integer from 1 and up, got \`${String(t)}\` (${typeof t})`);
    }
    this.threads = t;
    const ms = options.timeoutMs ?? 120_000;
    if (!Number.isSafeInteger(ms) || ms < 1) {
      throw new InvalidArgumentError(`Expected \`timeoutMs\` to be an integer from 1 and up, got \`${String(ms)}\` (${typeof ms})`);
    }
    this.timeoutMs = ms;
    this.#order = new PQueue({ concurrency: t });
  }

  #get(): Piscina {
    if (this.#closed) throw new ClosedError('Decode pool is closed');
    if (!this.#pool) {
      this.#pool = new Piscina({
        ...threadEntry('decode-worker'),
        // Every failed decode ends its thread on purpose (see decode-worker.ts); keeping
        // minThreads at the pool size makes piscina start a replacement at once, so a
        // task queued behind the failed one never waits for a thread.
        minThreads: this.threads,
        maxThreads: this.threads,
        idleTimeout: 30_000,
      });
      // A worker that dies between tasks emits 'error' on the pool; tasks in flight get it instead.
      this.#pool.on('error', () => {});
    }
    return this.#pool;
  }

  /** Decode one row group (or a schema) to Arrow IPC stream bytes. Failures are DecodeErrors naming the file. */
  async decode(task: ParquetDecodeTask, transfer: ArrayBuffer[], signal?: AbortSignal): Promise<Uint8Array> {
    // In the order asked, at most one task per thread handed to piscina: piscina's own
    // queue sends a task it could not place at once behind later ones (with an abort
    // signal, even in front of earlier ones), so the row group a consumer needs next
    // could be decoded after those it needs later.
    return this.#order.add(() => this.#decodeNow(task, transfer, signal), { signal }).catch((err: unknown) => {
      throw signal?.aborted ? (signal.reason ?? err) : err;
    });
  }

  async #decodeNow(task: ParquetDecodeTask, transfer: ArrayBuffer[], signal?: AbortSignal): Promise<Uint8Array> {
    const pool = this.#get();
    // The deadline aborts the task in piscina, which ends its thread (a wedged decoder
    // cannot be interrupted otherwise). A caller's abort does not: the caller stops
    // waiting at once and a row group's decode, already running, finishes on its own,
    // which is cheaper than ending the thread and starting a new one.
    const timer = new AbortController();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal?.reason);
    });
    aborted.catch(() => undefined);
    if (signal?.aborted) onAbort?.();
    else if (onAbort) signal?.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      timer.abort(new TimeoutError(`Decoding ${task.url} took over ${this.timeoutMs} ms`, { url: task.url }));
    }, this.timeoutMs);
    t.unref();
    try {
      const running = pool.run(task, { transferList: transfer, signal: timer.signal }) as Promise<unknown>;
      running.catch(() => undefined);
      const out: unknown = await (signal ? Promise.race([running, aborted]) : running);
      if (!(out instanceof Uint8Array)) throw new DecodeError(`Decoder returned no bytes for ${task.url}`, { url: task.url });
      return out;
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err;
      if (timedOut) {
        // Replace every thread: whatever wedged this task must not wedge the next.
        if (this.#pool === pool) this.#pool = undefined;
        void pool.destroy().catch(() => undefined);
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
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#order.clear();
    const p = this.#pool;
    this.#pool = undefined;
    if (!p) return;
    // Wait for the threads to be gone, not only told to go: close() leaves nothing running.
    const exited = p.threads.map((w) => new Promise<void>((resolve) => (w.threadId === -1 ? resolve() : w.once('exit', () => resolve()))));
    await p.destroy();
    await Promise.all(exited);
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

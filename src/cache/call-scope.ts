/**
 * The calls a long-lived object has in flight, so that closing it settles every one
 * of them: p-queue's `clear()` drops queued tasks without settling their promises, and
 * a caller that gave no signal would wait forever.
 */
import { setMaxListeners } from 'node:events';
import { throwIfAborted } from '../errors.js';

/** What a call is about, for the error that ends it. */
export interface CallInfo {
  what: string;
  url?: string | undefined;
}

const ignore = (): void => undefined;

/** Settles with `signal.reason` when `signal` aborts (never, otherwise). */
function whenAborted(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/**
 * @example
 * const calls = new CallScope();
 * read(url, { signal }) { return calls.run({ what: 'read', url }, signal, (s) => this.#read(url, s)); }
 * close() { calls.end((call) => new ClosedError(`closed (${call.what})`)); return calls.drained(); }
 */
export class CallScope {
  readonly #calls = new Map<AbortController, CallInfo>();
  readonly #work = new Set<Promise<void>>();
  #endReason: ((call: CallInfo) => Error) | undefined;

  /** The error a call gets once the scope has ended; undefined before. */
  endError(call: CallInfo): Error | undefined {
    return this.#endReason?.(call);
  }

  /**
   * Run `fn` with a signal that aborts when the caller's does or the scope ends. The
   * result settles as soon as either happens, with the caller's `signal.reason` or the
   * scope's end error, whether or not `fn` has noticed yet; the caller's listener is
   * removed when it settles.
   */
  async run<T>(call: CallInfo, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.#endReason) throw this.#endReason(call);
    throwIfAborted(signal);
    const ac = new AbortController();
    // A read of many parts hangs a listener per part (queue, request) on this one signal.
    setMaxListeners(0, ac.signal);
    const onAbort = (): void => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    this.#calls.set(ac, call);
    try {
      let work: Promise<T>;
      try {
        work = fn(ac.signal);
      } catch (err) {
        work = Promise.reject(err);
      }
      const settled = work.then(ignore, ignore);
      this.#work.add(settled);
      void settled.then(() => this.#work.delete(settled));
      return await Promise.race([work, whenAborted(ac.signal)]);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.#calls.delete(ac);
    }
  }

  /**
   * End every call in flight now with `reasonFor(call)`, and refuse later calls with
   * `refuseWith(call)` (by default the same). Idempotent.
   */
  end(reasonFor: (call: CallInfo) => Error, refuseWith: (call: CallInfo) => Error = reasonFor): void {
    if (this.#endReason) return;
    this.#endReason = refuseWith;
    const calls = [...this.#calls];
    this.#calls.clear();
    for (const [ac, call] of calls) ac.abort(reasonFor(call));
  }

  /** Resolves once the work of every call started so far has settled (after `end()`: has stopped). */
  async drained(): Promise<void> {
    while (this.#work.size > 0) await Promise.all(this.#work);
  }
}

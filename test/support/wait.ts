/**
 * Waiting for something to happen without guessing how long it takes.
 *
 * Prefer an event (`once(emitter, 'close')`, a promise the fake server resolves when a
 * request arrives: `deferred()`). Where the thing waited for has no event (a counter in
 * another object, a status that changes behind a watch), `waitFor` polls it on a short
 * interval and fails with a message naming what never happened.
 *
 * @example
 * await waitFor(() => proxy.stats().activeConnections === 0, { what: 'the connection to close' });
 *
 * const arrived = deferred();
 * server.intercept = () => (arrived.resolve(), true);
 * await arrived.promise; // the request is at the server now
 */
import { setTimeout as sleep } from 'node:timers/promises';

export interface WaitForOptions {
  /** Fail after this long. @default 10_000 */
  timeoutMs?: number;
  /** Time between two checks. @default 5 */
  intervalMs?: number;
  /** What is waited for, for the failure message ("the worker to join"). @default 'the condition' */
  what?: string;
}

/** Polls `cond` until it holds; rejects after `timeoutMs` saying what never happened. */
export async function waitFor(cond: () => boolean | Promise<boolean>, options: WaitForOptions = {}): Promise<void> {
  const { timeoutMs = 10_000, intervalMs = 5, what = 'the condition' } = options;
  const start = performance.now();
  for (;;) {
    if (await cond()) return;
    const waited = performance.now() - start;
    if (waited >= timeoutMs) throw new Error(`waitFor: ${what} did not happen within ${timeoutMs} ms (waited ${Math.round(waited)} ms)`);
    await sleep(intervalMs);
  }
}

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}

/** A promise and the functions that settle it (`Promise.withResolvers`, which Node 20 lacks). */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

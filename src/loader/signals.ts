import type PQueue from 'p-queue';

/**
 * Abort plumbing shared by the loader's long-lived objects: a call listens on its
 * caller's signal only while it runs, and every listener goes in `finally`.
 */

/**
 * A controller that aborts with `signal`'s reason when `signal` aborts (at once when it
 * already has), so an owner can also abort it (on `close()`) without touching the
 * caller's signal. `dispose()` removes the listener; call it in `finally`.
 */
export function linkedController(signal: AbortSignal | undefined): { controller: AbortController; dispose: () => void } {
  const controller = new AbortController();
  if (!signal) return { controller, dispose: () => undefined };
  if (signal.aborted) {
    controller.abort(signal.reason);
    return { controller, dispose: () => undefined };
  }
  const onAbort = (): void => controller.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  return { controller, dispose: () => signal.removeEventListener('abort', onAbort) };
}

/** Resolves once every worker thread of a piscina pool has exited (after `destroy()`). */
export function threadsExited(threads: readonly { threadId: number; once(event: 'exit', listener: () => void): unknown }[]): Promise<void> {
  return Promise.all(threads.map((w) => new Promise<void>((resolve) => (w.threadId === -1 ? resolve() : w.once('exit', () => resolve()))))).then(() => undefined);
}

/**
 * `Promise.all`, but it settles only once every promise has: a read that fails (or is
 * aborted) does not leave its siblings running, holding file descriptors, after the
 * caller has moved on (closed the stream, the file system, unmounted). Rejects with
 * the first rejection to happen.
 */
export async function allSettledOrThrow<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  let first: { error: unknown } | undefined;
  const results = await Promise.all(
    promises.map((p) =>
      p.then(
        (v) => v,
        (err: unknown) => {
          first ??= { error: err };
          return undefined;
        },
      ),
    ),
  );
  if (first) throw first.error;
  return results as T[];
}

/**
 * `queue.add(task, { signal })` that settles only once `task` has: an abort drops the
 * task while it waits, but p-queue also rejects a running task's promise at once, and
 * the task (a read holding a file descriptor) would go on after the caller had closed
 * everything.
 */
export async function queuedTask<T>(queue: PQueue, task: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  let running: Promise<T> | undefined;
  try {
    return await queue.add(() => (running = task()), { signal });
  } catch (err) {
    await running?.catch(() => undefined);
    throw err;
  }
}

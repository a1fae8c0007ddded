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

/**
 * A cache worker in a worker thread of this process: still "in-process" (nothing to
 * install, nothing to spawn), but serving pages on its own event loop.
 *
 * Why a thread: in the demo the workers and the training loop share one process. On
 * the main thread every page a worker serves (HTTP parsing, copying, hashing) runs
 * between the loader's callbacks, so the step gets scheduled late and the cache looks
 * slower than the store it replaces. In production workers are separate processes on
 * other machines; a thread is the cheapest honest stand-in for that here.
 */
import { Worker } from 'node:worker_threads';
import type { WorkerInfoResponse, WorkerOptions } from '../cache/worker.js';
import { ClosedError, UnavailableError, errorFromCode } from '../errors.js';
import { tsBootstrap } from './ts-entry.js';

export type ThreadRequest = { type: 'info'; seq: number } | { type: 'close' };
export type ThreadReply =
  | { type: 'ready'; id: string; url: string; pageSize: number }
  | { type: 'error'; code: string; message: string }
  | { type: 'info'; seq: number; info: WorkerInfoResponse }
  | { type: 'closed' };

/** Options of a threaded worker: those of `startWorker` that survive structured cloning (no ready `ufs` object). */
export type ThreadedWorkerOptions = Omit<WorkerOptions, 'ufs'> & { ufs?: Exclude<WorkerOptions['ufs'], { read: unknown }> };

export interface ThreadedWorker extends AsyncDisposable {
  readonly id: string;
  readonly url: string;
  readonly pageSize: number;
  /** Thread id, for messages. */
  readonly threadId: number;
  /** The worker's counters and usage, read from its thread. */
  info(): Promise<WorkerInfoResponse>;
  /** Close the worker (it finishes requests in flight), then end its thread. Idempotent. */
  close(): Promise<void>;
}

/** Start a cache worker in a new worker thread; resolves once it listens. */
export async function startThreadedWorker(options: ThreadedWorkerOptions, startTimeoutMs = 20_000): Promise<ThreadedWorker> {
  const self = new URL(import.meta.url);
  const isTs = self.pathname.endsWith('.ts');
  const entry = new URL(isTs ? './worker-thread.ts' : './worker-thread.js', self);
  const thread = isTs ? new Worker(tsBootstrap(entry), { eval: true, workerData: options }) : new Worker(entry, { workerData: options });
  const infos = new Map<number, { resolve: (i: WorkerInfoResponse) => void; reject: (e: Error) => void }>();
  let exited: Error | undefined;
  let seq = 0;

  const ready = await new Promise<{ id: string; url: string; pageSize: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      void thread.terminate();
      reject(new UnavailableError(`Demo cache worker thread ${thread.threadId} did not listen within ${startTimeoutMs} ms`));
    }, startTimeoutMs);
    const onMessage = (m: ThreadReply): void => {
      if (m.type !== 'ready' && m.type !== 'error') return;
      clearTimeout(timer);
      thread.off('error', onError);
      thread.off('exit', onExit);
      thread.off('message', onMessage);
      if (m.type === 'ready') return resolve(m);
      void thread.terminate();
      reject(errorFromCode(m.code, `Demo cache worker thread ${thread.threadId} could not start: ${m.message}`));
    };
    const onError = (err: Error): void => {
      clearTimeout(timer);
      reject(new UnavailableError(`Demo cache worker thread ${thread.threadId} failed to start: ${err.message}`, { cause: err }));
    };
    const onExit = (code: number): void => {
      clearTimeout(timer);
      reject(new UnavailableError(`Demo cache worker thread ${thread.threadId} exited with code ${code} before listening`));
    };
    thread.on('message', onMessage);
    thread.once('error', onError);
    thread.once('exit', onExit);
  });

  const failAll = (err: Error): void => {
    exited ??= err;
    for (const p of infos.values()) p.reject(err);
    infos.clear();
  };
  thread.on('message', (m: ThreadReply) => {
    if (m.type !== 'info') return;
    infos.get(m.seq)?.resolve(m.info);
    infos.delete(m.seq);
  });
  thread.on('error', (err) => failAll(new UnavailableError(`Demo cache worker ${ready.url} (thread ${thread.threadId}) failed: ${err.message}`, { cause: err })));
  thread.on('exit', (code) => failAll(new ClosedError(`Demo cache worker ${ready.url} (thread ${thread.threadId}) has exited (code ${code})`)));

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      if (exited) return;
      const done = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
      const closed = new Promise<void>((resolve) =>
        thread.on('message', (m: ThreadReply) => {
          if (m.type === 'closed') resolve();
        }),
      );
      thread.postMessage({ type: 'close' } satisfies ThreadRequest);
      // A worker that cannot finish its requests within 5 s is stopped anyway.
      const timer = setTimeout(() => void thread.terminate(), 5000);
      await Promise.race([closed.then(() => done), done]);
      clearTimeout(timer);
    })());

  return {
    id: ready.id,
    url: ready.url,
    pageSize: ready.pageSize,
    threadId: thread.threadId,
    info: () => {
      if (closing) return Promise.reject(new ClosedError(`Demo cache worker ${ready.url} is closed (called info)`));
      if (exited) return Promise.reject(exited);
      const n = ++seq;
      return new Promise((resolve, reject) => {
        infos.set(n, { resolve, reject });
        thread.postMessage({ type: 'info', seq: n } satisfies ThreadRequest);
      });
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

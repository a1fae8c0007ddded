/**
 * Entry of one demo cache worker running in a worker thread (see threaded-worker.ts):
 * it starts a `CacheWorker` with the options in `workerData`, answers `info` and
 * `close` messages, and reports a failed start as `{ type: 'error', code, message }`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { startWorker, type CacheWorker, type WorkerOptions } from '../cache/worker.js';
import { isGranaryError } from '../errors.js';
import type { ThreadReply, ThreadRequest } from './threaded-worker.js';

const port = parentPort;
if (!port) throw new Error('src/demo/worker-thread is a worker_threads entry, not a module to import');

const reply = (m: ThreadReply): void => port.postMessage(m);

let worker: CacheWorker | undefined;
try {
  worker = await startWorker(workerData as WorkerOptions);
  reply({ type: 'ready', id: worker.id, url: worker.url, pageSize: worker.pageSize });
} catch (err) {
  reply({
    type: 'error',
    code: isGranaryError(err) ? err.code : 'GRANARY_ERR_INTERNAL',
    message: err instanceof Error ? err.message : String(err),
  });
}

port.on('message', (m: ThreadRequest) => {
  if (m.type === 'info') {
    if (worker) reply({ type: 'info', seq: m.seq, info: worker.info() });
    return;
  }
  const w = worker;
  worker = undefined;
  void (w ? w.close() : Promise.resolve()).finally(() => {
    reply({ type: 'closed' });
    port.close();
  });
});

import { move } from 'piscina';
import { decodeParquet, type ParquetDecodeTask } from './decode-parquet.js';

/**
 * Piscina worker entry: decodes one row group to Arrow IPC bytes and moves them back.
 * Any failure ends this thread (the error is rethrown outside the task, so piscina
 * sees the worker die, rejects the task with the error and starts a fresh thread):
 * after a WebAssembly trap the wasm instance's state is unknown, and after any other
 * decode error we cannot tell it apart cheaply, so a thread that failed is never reused.
 */
/** Results up to this size are moved as they are. */
const SHARE_MIN = 1 << 20;

export default async function decode(task: ParquetDecodeTask): Promise<unknown> {
  try {
    const ipc = await decodeParquet(task);
    // Large results go back in a SharedArrayBuffer: the threads that read them (the loader
    // thread, the training loop) then hold shared memory, which V8 does not count as an
    // isolate's external memory, so large partitions do not start garbage collections
    // there. One copy, here, off those threads.
    if (ipc.byteLength > SHARE_MIN) {
      const shared = new Uint8Array(new SharedArrayBuffer(ipc.byteLength));
      shared.set(ipc);
      return shared;
    }
    return move(ipc);
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    setImmediate(() => {
      throw err;
    });
    return new Promise(() => {});
  }
}

import { move } from 'piscina';
import { decodeParquet, type ParquetDecodeTask } from './decode-parquet.js';

/**
 * Piscina worker entry: decodes one row group to Arrow IPC bytes and moves them back.
 * Any failure ends this thread (the error is rethrown outside the task, so piscina
 * sees the worker die, rejects the task with the error and starts a fresh thread):
 * after a WebAssembly trap the wasm instance's state is unknown, and after any other
 * decode error we cannot tell it apart cheaply, so a thread that failed is never reused.
 */
export default async function decode(task: ParquetDecodeTask): Promise<unknown> {
  try {
    return move(await decodeParquet(task));
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    setImmediate(() => {
      throw err;
    });
    return new Promise(() => {});
  }
}

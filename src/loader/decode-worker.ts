import { move, transferableSymbol, valueSymbol } from 'piscina';
import type { UnderFileSystem } from '../ufs/types.js';
import { membershipKnown, ufsFromSpec } from './portable-fs.js';
import { diffReadStats, readStatsOf } from './read-stats.js';
import { allSettledOrThrow } from './signals.js';
import { decodeParquet, type FetchedDecode, type ParquetDecodeTask, type Piece } from './decode-parquet.js';

/**
 * Piscina worker entry: decodes one row group to Arrow IPC bytes and moves them back.
 * With `task.fetch`, it first reads the row group's column chunks itself, through a
 * store (or cache) client of its own built from the spec, so reading is spread over
 * the decode threads instead of queued on the thread that feeds them.
 *
 * Any decode failure ends this thread (the error is rethrown outside the task, so
 * piscina sees the worker die, rejects the task with the error and starts a fresh
 * thread): after a WebAssembly trap the wasm instance's state is unknown, and after any
 * other decode error we cannot tell it apart cheaply, so a thread that failed is never
 * reused. A failed read is answered as a value (`fetchError`): nothing is wrong with
 * the thread then.
 */
export default async function decode(task: ParquetDecodeTask): Promise<unknown> {
  let fetched: Omit<Extract<FetchedDecode, { ipc: Uint8Array }>, 'ipc' | 'decodeMs'> | undefined;
  if (task.fetch) {
    const flags = new Float64Array(task.fetch.done);
    if (flags[1] !== 0) return undefined; // the caller gave up before it started
    const r = await fetchPieces(task.fetch);
    if ('fetchError' in r || flags[1] !== 0) return 'fetchError' in r ? r : { fetchError: { code: undefined, name: 'AbortError', message: 'cancelled', url: undefined }, stats: r.stats };
    fetched = r;
    task = { ...task, pieces: r.pieces, fetch: undefined };
  }
  try {
    const t = performance.now();
    const ipc = await decodeParquet(task);
    if (!fetched) return move(ipc);
    const { bytes, fetchMs, stats } = fetched;
    const value: FetchedDecode = { ipc, bytes, fetchMs, decodeMs: performance.now() - t, stats };
    return move({ [transferableSymbol]: [ipc.buffer], [valueSymbol]: value });
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    setImmediate(() => {
      throw err;
    });
    return new Promise(() => {});
  }
}

/** This thread's clients, one per spec; they live as long as the thread. */
const clients = new Map<string, UnderFileSystem>();
/** Each client's first worker list (a cache client with etcd membership learns it afresh). */
const ready = new Map<string, Promise<void>>();

async function fetchPieces(
  f: NonNullable<ParquetDecodeTask['fetch']>,
): Promise<{ pieces: Piece[]; bytes: number; fetchMs: number; stats: FetchedDecode['stats'] } | Extract<FetchedDecode, { fetchError: unknown }>> {
  const key = JSON.stringify(f.fs);
  let fs = clients.get(key);
  if (!fs) {
    fs = ufsFromSpec(f.fs);
    clients.set(key, fs);
    ready.set(key, membershipKnown(fs));
  }
  await ready.get(key);
  const before = readStatsOf(fs);
  const t = performance.now();
  try {
    const pieces = await allSettledOrThrow(f.ranges.map(async (r): Promise<Piece> => ({ offset: r.offset, bytes: await fs.read(r.url, r.offset, r.length, { etag: r.etag }) })));
    // The caller's decode deadline starts now.
    new Float64Array(f.done)[0] = Date.now();
    return { pieces, bytes: pieces.reduce((a, p) => a + p.bytes.byteLength, 0), fetchMs: performance.now() - t, stats: diffReadStats(readStatsOf(fs), before) };
  } catch (e) {
    const err = e as { code?: unknown; name?: unknown; message?: unknown; url?: unknown };
    return {
      fetchError: {
        code: typeof err.code === 'string' ? err.code : undefined,
        name: typeof err.name === 'string' ? err.name : 'Error',
        message: typeof err.message === 'string' ? err.message : String(e),
        url: typeof err.url === 'string' ? err.url : undefined,
      },
      stats: diffReadStats(readStatsOf(fs), before),
    };
  }
}

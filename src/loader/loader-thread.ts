import type { MessagePort } from 'node:worker_threads';
import type { DataType } from 'apache-arrow';
import { isGranaryError } from '../errors.js';
import { planEpoch } from '../shuffle/index.js';
import type { EpochPlanInput } from '../shuffle/types.js';
import type { UnderFileSystem } from '../ufs/types.js';
import { DecodePool } from './decode-pool.js';
import { LoaderHints, isHintTarget, type LoaderHintOptions } from './hints.js';
import { membershipKnown, ufsFromSpec, type UfsSpec } from './portable-fs.js';
import { sourceReadStats } from './read-stats.js';
import { readsInDecoder, sourceFromSpec, type SourceSpec } from './sources.js';
import { abortable } from '../util/retry.js';
import { PipelineStream, type PartitionSource } from './stream.js';
import { ipcBatches, packBatches, packable, type WireBatches } from './wire.js';

/**
 * The loader thread (a piscina task module): runs a dataset's whole pipeline (fetch,
 * decode through its own decode pool, batch assembly) off the consumer's thread, and
 * sends finished batches through a MessagePort. See thread-stream.ts for the other end.
 *
 * Each `stream` task is one epoch of one rank and runs until that stream ends; tasks of
 * one dataset share its store client, partition source and decode pool, kept here by
 * dataset id until a `close` task.
 */

/** Indexes into the control Int32Array (a SharedArrayBuffer both threads see). */
export const CTL = { CONSUMED: 0, CANCEL: 1, WAKE_AT: 2 } as const;
export const CTL_SLOTS = 3;
/** Indexes into the stats Float64Array this thread writes after every batch. */
export const STAT = { PARTITIONS: 0, BYTES: 1, FETCH_MS: 2, DECODE_MS: 3, ASSEMBLE_MS: 4, PEAK_RESIDENT: 5, PACK_MS: 6 } as const;
export const STAT_SLOTS = 7;

export interface DatasetInit {
  fs: UfsSpec;
  source: SourceSpec;
  decodeThreads: number | undefined;
  decodeTimeoutMs: number | undefined;
}

export interface StreamTask {
  op: 'stream';
  dataset: string;
  init: DatasetInit;
  port: MessagePort;
  ctl: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  input: EpochPlanInput;
  prefetch: number;
  prefetchBytes: number;
  fetchConcurrency: number;
  /** Batches sent but not yet consumed, at most. */
  ahead: number;
  /** Bytes of the batches sent but not yet consumed, at most (shuffled batches; one always goes). */
  aheadBytes: number;
  hints: false | LoaderHintOptions;
}

export interface CloseTask {
  op: 'close';
  dataset: string;
}

/** The counters of the thread's store client for one dataset. */
export interface StatsTask {
  op: 'stats';
  dataset: string;
}

/** A partition handed over whole: its index, how many record batches it holds and their row offsets. */
export interface PartMeta {
  p: number;
  n: number;
  starts: number[];
}

/**
 * What the consumer's thread receives: one assembled batch (packed, or `ipc`, shuffled
 * modes), decoded partitions (`parts` with `w` or `ipc`, mode 'none': the partitions'
 * record batches, then one batch for each index in `ready`, gathered here because the
 * consumer cannot slice it; with `ipc` each of those is a stream of its own, `readyIpc`,
 * as a gathered dictionary column has a dictionary of its own), the end, or an error.
 */
export type StreamMessage =
  | WireBatches
  | { parts?: undefined; ipc: Uint8Array }
  | { parts: PartMeta[]; ready: number[]; w: WireBatches }
  | { parts: PartMeta[]; ready: number[]; ipc: Uint8Array; readyIpc: Uint8Array[] }
  | { end: true }
  | { error: { name: string; code?: string; message: string; url?: string } };

/** A stream started ahead of its request: the next epoch, same options. */
interface Speculative {
  key: string;
  stream: PipelineStream;
  ac: AbortController;
  timer: NodeJS.Timeout;
}

interface DatasetState {
  fs: UnderFileSystem;
  source: PartitionSource;
  pool: DecodePool | undefined;
  threads: number | undefined;
  timeoutMs: number | undefined;
  streams: number;
  fast: boolean;
  speculative: Speculative | undefined;
  /** Resolves once `fs` knows its cache workers (or gave up waiting); see `membershipKnown`. */
  ready: Promise<void>;
}

const datasets = new Map<string, DatasetState>();

function open(id: string, init: DatasetInit): DatasetState {
  let st = datasets.get(id);
  if (!st) {
    const fs = ufsFromSpec(init.fs);
    const holder: { st?: DatasetState } = {};
    const source = sourceFromSpec(init.source, fs, () => {
      const s = holder.st as DatasetState;
      s.pool ??= new DecodePool({ threads: s.threads, timeoutMs: s.timeoutMs, threadsRead: readsInDecoder(s.source) });
      return s.pool;
    });
    st = {
      fs,
      source,
      pool: undefined,
      threads: init.decodeThreads,
      timeoutMs: init.decodeTimeoutMs,
      streams: 0,
      fast: source.schema.fields.every((f) => packable(f.type as DataType)),
      speculative: undefined,
      ready: membershipKnown(fs),
    };
    holder.st = st;
    datasets.set(id, st);
  } else if (init.decodeThreads !== st.threads && st.streams === 0) {
    const old = st.pool;
    st.pool = undefined;
    void old?.close();
  }
  st.threads = init.decodeThreads;
  return st;
}

async function runStream(task: StreamTask): Promise<void> {
  const { port } = task;
  const ctl = new Int32Array(task.ctl);
  const stats = new Float64Array(task.stats);
  const ac = new AbortController();
  const onMessage = (m: unknown): void => {
    if ((m as { cancel?: boolean } | null)?.cancel) ac.abort(new DOMException('The consumer cancelled the stream', 'AbortError'));
  };
  port.on('message', onMessage);
  // The consumer closed its end before taking every batch (the stream was dropped): stop.
  let total = Number.POSITIVE_INFINITY;
  port.on('close', () => {
    if (Atomics.load(ctl, CTL.CONSUMED) < total) ac.abort(new DOMException('The consumer went away', 'AbortError'));
  });
  const cancelled = (): boolean => Atomics.load(ctl, CTL.CANCEL) !== 0 || ac.signal.aborted;
  let st: DatasetState | undefined;
  try {
    st = open(task.dataset, task.init);
    st.streams++;
    await abortable(st.ready, ac.signal);
    const { fast } = st;
    // The stream this task asks for may already be running: started when the previous
    // epoch's stream ran out of partitions to fetch (see `speculate`).
    const spec = st.speculative;
    st.speculative = undefined;
    let stream: PipelineStream;
    if (spec && spec.key === streamKey(task)) {
      clearTimeout(spec.timer);
      ac.signal.addEventListener('abort', () => spec.ac.abort(ac.signal.reason), { once: true });
      stream = spec.stream;
    } else {
      if (spec) dropSpeculative(spec);
      stream = newStream(st, task, ac.signal);
    }
    total = stream.numBatches;
    let packMs = 0;
    const report = (): void => {
      const s = stream.stats();
      stats[STAT.PARTITIONS] = s.partitionsFetched;
      stats[STAT.BYTES] = s.bytesFetched;
      stats[STAT.FETCH_MS] = s.fetchMs;
      stats[STAT.DECODE_MS] = s.decodeMs;
      stats[STAT.ASSEMBLE_MS] = s.assembleMs;
      stats[STAT.PEAK_RESIDENT] = s.peakResidentBytes;
      stats[STAT.PACK_MS] = packMs;
    };
    /**
     * Hold back while the consumer is `ahead` batches behind `ready`, or (given `held`,
     * the bytes of the batches it has not consumed) `aheadBytes` behind; it bumps
     * CONSUMED and notifies once it reaches WAKE_AT.
     */
    const throttle = async (ready: number, held?: (consumed: number) => number): Promise<void> => {
      for (;;) {
        if (cancelled()) return;
        const consumed = Atomics.load(ctl, CTL.CONSUMED);
        const behind = ready - consumed;
        const full = behind >= task.ahead;
        if (!full && (held === undefined || behind < 2 || held(consumed) < task.aheadBytes)) return;
        Atomics.store(ctl, CTL.WAKE_AT, full ? ready - Math.max(1, task.ahead >> 1) : consumed + 1);
        const w = waitAsync(ctl, CTL.CONSUMED, consumed);
        if (w.async) await w.value;
      }
    };
    if (task.input.mode === 'none') {
      // Batches are runs of consecutive rows: hand the decoded partitions over whole (by
      // transfer, no copy) and let the consumer slice them, which costs it microseconds.
      // The few batches that are not one slice (those spanning two partitions) come
      // gathered, so the consumer's thread never allocates their buffers: with a decoded
      // row group of 32 MiB or more just received, its first allocation of fresh memory
      // made V8 run two minor GCs there and then, inside next().
      for await (const d of stream.partitions()) {
        // Counters first: the consumer may take the message, finish and read stats() at once.
        report();
        if (d.fresh.length > 0 || d.assembled.length > 0) {
          const t = performance.now();
          const parts = d.fresh.map((f) => ({ p: f.partition, n: f.decoded.batches.length, starts: f.decoded.starts }));
          const decoded = d.fresh.flatMap((f) => f.decoded.batches);
          const ready = d.assembled.map((a) => a.batch);
          if (fast) {
            const w = packBatches([...decoded, ...d.assembled.map((a) => a.rb)]);
            port.postMessage({ parts, ready, w } satisfies StreamMessage, w);
          } else {
            const ipc = ipcBatches(decoded);
            const readyIpc = d.assembled.map((a) => ipcBatches([a.rb]));
            port.postMessage({ parts, ready, ipc, readyIpc } satisfies StreamMessage, [ipc, ...readyIpc].map((x) => x.buffer as ArrayBuffer));
          }
          packMs += performance.now() - t;
        }
        // The last data is sent: the consumer has every batch it will slice. End here rather
        // than pace the empty deliveries left, so the next epoch is primed now, while the
        // consumer still trains on the last row group, and not only at its last batches.
        if (d.final) {
          report();
          break;
        }
        await throttle(d.batch + 1);
        if (cancelled()) break;
      }
    } else {
      // Shuffled batches mix rows of several partitions: gather them here (fresh buffers,
      // then transferred) so the consumer only wraps them.
      let sent = 0;
      let primed = false;
      /** sentBytes[i]: bytes of batches 0..i-1 sent. */
      const sentBytes = [0];
      const held = (consumed: number): number => (sentBytes[sent] as number) - (sentBytes[Math.min(consumed, sent)] as number);
      for await (const batch of stream) {
        report();
        const t = performance.now();
        if (fast) {
          const w = packBatches([batch]);
          sentBytes.push((sentBytes[sent] as number) + w.reduce((a, b) => a + b.byteLength, 0));
          port.postMessage(w satisfies WireBatches, w);
        } else {
          const ipc = ipcBatches([batch]);
          sentBytes.push((sentBytes[sent] as number) + ipc.byteLength);
          port.postMessage({ ipc } satisfies StreamMessage, [ipc.buffer as ArrayBuffer]);
        }
        packMs += performance.now() - t;
        sent++;
        // Every partition is decoded and what is left is gathering here: the decode threads
        // would idle until the end of the epoch, so the next epoch's first batch starts on
        // them now. Only that: its prefetch window as well (read by this thread, which is
        // gathering) slowed the end of this epoch more than it sped up the next (1 KiB rows
        // on two cores, warm cache: 91 % -> 80 % of pure decode). The window follows once
        // this epoch has sent its last batch.
        if (!primed && stream.drained) {
          primed = true;
          speculate(st, task, false);
        }
        await throttle(sent, held);
        if (cancelled()) break;
      }
    }
    if (cancelled()) stream.cancel(new DOMException('The consumer cancelled the stream', 'AbortError'));
    else {
      post(port, { end: true });
      speculate(st, task);
    }
  } catch (err) {
    if (!cancelled()) post(port, { error: serializeError(err) });
  } finally {
    if (st) st.streams--;
    port.off('message', onMessage);
    port.close();
  }
}

/** `Atomics.waitAsync` (in Node since 16; in TypeScript's lib only from ES2024). */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync.bind(Atomics);

function newStream(st: DatasetState, task: StreamTask, signal: AbortSignal): PipelineStream {
  const src = st.source;
  const plan = planEpoch(task.input);
  let hints: LoaderHints | undefined;
  if (task.hints !== false && isHintTarget(st.fs) && src.ranges !== undefined) {
    hints = new LoaderHints(st.fs, plan.partitionOrder, (p) => src.ranges?.(p) ?? [], task.hints);
  }
  return new PipelineStream(src, {
    plan,
    input: task.input,
    prefetch: task.prefetch,
    prefetchBytes: task.prefetchBytes,
    fetchConcurrency: task.fetchConcurrency,
    signal,
    hints,
    alwaysGather: true,
    // Needed only when the decode threads read: this thread then allocates almost
    // nothing and V8 would hold dead row groups until a rare full GC.
    releaseDecoded: readsInDecoder(src),
  });
}

/** What makes two stream requests the same stream (everything but the port and shared buffers). */
function streamKey(task: StreamTask): string {
  return JSON.stringify([task.input, task.prefetch, task.prefetchBytes, task.fetchConcurrency, task.ahead, task.hints, task.init.decodeThreads]);
}

/** How long a primed next epoch waits to be asked for before it is dropped. */
const SPECULATIVE_TTL_MS = 60_000;

/**
 * No barrier at epoch boundaries: once an epoch has sent its last data,
 * start the next epoch with the same options, so its first partitions are fetched and
 * decoded while the consumer finishes this one. Used only if the next request matches
 * exactly; dropped on any other request, after SPECULATIVE_TTL_MS, or at close.
 */
function speculate(st: DatasetState, task: StreamTask, window = true): void {
  if (datasets.get(task.dataset) !== st) return;
  // A resumed epoch is followed by a whole one.
  const next: StreamTask = { ...task, input: { ...task.input, epoch: task.input.epoch + 1, resume: undefined } };
  if (st.speculative) {
    if (window && st.speculative.key === streamKey(next)) st.speculative.stream.prime(true);
    return;
  }
  const ac = new AbortController();
  let stream: PipelineStream;
  try {
    stream = newStream(st, next, ac.signal);
  } catch {
    return;
  }
  const spec: Speculative = {
    key: streamKey(next),
    stream,
    ac,
    timer: setTimeout(() => {
      if (st.speculative === spec) st.speculative = undefined;
      dropSpeculative(spec);
    }, SPECULATIVE_TTL_MS),
  };
  spec.timer.unref();
  st.speculative = spec;
  stream.prime(window);
}

function dropSpeculative(spec: Speculative): void {
  clearTimeout(spec.timer);
  spec.ac.abort(new DOMException('The primed next epoch was not asked for', 'AbortError'));
  spec.stream.cancel();
}

function post(port: MessagePort, m: StreamMessage): void {
  try {
    port.postMessage(m);
  } catch {
    /* the consumer is gone */
  }
}

function serializeError(err: unknown): { name: string; code?: string; message: string; url?: string } {
  if (isGranaryError(err)) return { name: err.name, code: err.code, message: err.message, ...(err.url === undefined ? {} : { url: err.url }) };
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: 'Error', message: String(err) };
}

async function closeDataset(id: string): Promise<void> {
  const st = datasets.get(id);
  if (!st) return;
  datasets.delete(id);
  if (st.speculative) dropSpeculative(st.speculative);
  st.speculative = undefined;
  await Promise.allSettled([st.pool?.close(), st.fs.close()]);
}

export default async function task(t: StreamTask | CloseTask | StatsTask): Promise<unknown> {
  if (t.op === 'close') return closeDataset(t.dataset);
  if (t.op === 'stats') {
    const st = datasets.get(t.dataset);
    return st ? sourceReadStats(st.source) : undefined;
  }
  return runStream(t);
}

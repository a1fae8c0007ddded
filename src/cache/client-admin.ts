/**
 * The client's administrative calls to the workers: invalidation, access hints, and
 * preloading. Unlike reads they have no store to fall back to, and they address
 * workers by membership and block ownership rather than one owner per read.
 */
import { UnavailableError, errorFromCode, throwIfAborted } from '../errors.js';
import type { FileInfo, OpOptions } from '../ufs/types.js';
import { splitRange } from './blocks.js';
import { routeAccesses } from './client-hints.js';
import type { HintRequest, HintResponse } from './hint-request.js';
import type { WorkerInfo } from './membership.js';
import { Paths } from './protocol.js';
import { WorkerFault } from './worker-errors.js';
import type { WorkerTransport } from './worker-transport.js';

/** How often `load` asks a worker how its job is doing. */
const LOAD_POLL_MS = 200;

/** What the admin calls need of a client: its transport and where blocks live now. */
export interface AdminTarget {
  readonly transport: WorkerTransport;
  readonly blockSize: number;
  members(): readonly WorkerInfo[];
  /** The worker that owns a block of an object version (no replicas). */
  ownerOf(url: string, etag: string, block: number): WorkerInfo | undefined;
}

export interface HintResult {
  accepted: number;
  dropped: number;
  /** Workers that failed or refused the hint. */
  failed: number;
}

export interface LoadOptions extends OpOptions {
  /** Called after every poll with the bytes loaded so far and the total. */
  onProgress?: ((done: number, total: number) => void) | undefined;
}

export interface LoadResult {
  files: number;
  bytes: number;
}

/** Ask every worker to forget `url`. Best effort: a worker that fails is skipped (its TTL bounds what it serves). */
export async function invalidateOnWorkers(t: AdminTarget, url: string, signal: AbortSignal | undefined): Promise<void> {
  await Promise.all(
    t.members().map((w) =>
      t.transport.send(w, 'POST', Paths.invalidate, { url }, signal).then(
        (r) => r.body.dump(),
        () => undefined,
      ),
    ),
  );
  throwIfAborted(signal);
}

/** `CacheClient.hint`: each access to the owner of its block, the other fields to every worker. */
export async function sendHints(t: AdminTarget, jobId: string, hint: Omit<HintRequest, 'job'>, signal: AbortSignal | undefined): Promise<HintResult> {
  const byWorker = routeAccesses(hint.accesses ?? [], t.blockSize, (url, etag, block) => t.ownerOf(url, etag, block)?.id);
  const out = { accepted: 0, dropped: 0, failed: 0 };
  await Promise.all(
    t.members().map(async (w) => {
      try {
        const r = await t.transport.postJson<HintResponse>(w, Paths.hints, { ...hint, job: jobId, accesses: byWorker.get(w.id) }, signal);
        out.accepted += r.accepted;
        out.dropped += r.dropped;
      } catch {
        out.failed++;
      }
    }),
  );
  throwIfAborted(signal);
  return out;
}

/**
 * `CacheClient.load`: every block of `files` to its owner as one load job per worker,
 * then poll the jobs until all are done. The first failure stops the polling of the others.
 */
export async function loadIntoWorkers(t: AdminTarget, files: readonly FileInfo[], options: LoadOptions): Promise<LoadResult> {
  const byWorker = new Map<string, { worker: WorkerInfo; ranges: { url: string; etag: string; offset: number; length: number }[] }>();
  let total = 0;
  for (const f of files) {
    for (const part of splitRange(0, f.size, t.blockSize, t.blockSize)) {
      const w = t.ownerOf(f.url, f.etag, part.block);
      if (!w) continue;
      let e = byWorker.get(w.id);
      if (!e) byWorker.set(w.id, (e = { worker: w, ranges: [] }));
      e.ranges.push({ url: f.url, etag: f.etag, offset: part.offset, length: part.length });
      total += part.length;
    }
  }
  const done = new Map<string, number>();
  const report = (): void => options.onProgress?.([...done.values()].reduce((a, b) => a + b, 0), total);
  const stop = new AbortController();
  const outer = options.signal;
  const onAbort = (): void => stop.abort(outer?.reason);
  outer?.addEventListener('abort', onAbort, { once: true });
  try {
    throwIfAborted(outer);
    const results = await Promise.allSettled(
      [...byWorker.values()].map(async ({ worker, ranges }) => {
        try {
          await runLoadJob(t, worker, ranges, stop.signal, (bytes) => {
            done.set(worker.id, bytes);
            report();
          });
        } catch (err) {
          stop.abort(err);
          throw err;
        }
      }),
    );
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  } finally {
    outer?.removeEventListener('abort', onAbort);
  }
  return { files: files.length, bytes: total };
}

interface JobState {
  state: string;
  bytesDone: number;
  error?: { code: string; message: string };
}

async function runLoadJob(t: AdminTarget, worker: WorkerInfo, ranges: unknown[], signal: AbortSignal, progress: (bytes: number) => void): Promise<void> {
  const job = await t.transport.postJson<{ id: string }>(worker, Paths.load, { ranges }, signal);
  for (;;) {
    let st: JobState;
    try {
      st = (await t.transport.getJson<JobState>(worker, Paths.jobs + encodeURIComponent(job.id), {}, signal)).value;
    } catch (err) {
      throw err instanceof WorkerFault ? new UnavailableError(`load job ${job.id}: ${err.message}`) : err;
    }
    progress(st.bytesDone);
    if (st.state === 'done') return;
    if (st.state === 'failed') throw errorFromCode(st.error?.code ?? 'GRANARY_ERR_INTERNAL', st.error?.message ?? 'load failed');
    await sleep(LOAD_POLL_MS, signal);
  }
}

/** Wait `ms`, or reject with `signal.reason` as soon as it aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Load jobs (`POST /v1/load`): ranges read through into the cache in the background,
 * their progress readable at `GET /v1/jobs/<id>` for a while after they finish.
 */
import { randomUUID } from 'node:crypto';
import { BadRequestError, ClosedError, InternalError, isGranaryError } from '../errors.js';
import type { ReadThrough } from './worker-core.js';
import type { LoadRange } from './worker-requests.js';

export interface LoadJob {
  id: string;
  state: 'running' | 'done' | 'failed';
  bytesTotal: number;
  bytesDone: number;
  rangesTotal: number;
  rangesDone: number;
  error?: { code: string; message: string };
}

/** Ranges of one job read at once. */
const LANES = 4;
/** How long a finished job's last state stays readable. */
const KEEP_MS = 10 * 60_000;

export class LoadJobs {
  readonly #jobs = new Map<string, LoadJob>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #core: ReadThrough;
  readonly #workerId: string;
  /** Bytes read per step: a page run, so a large range does not sit in memory twice. */
  readonly #step: number;
  #closed = false;

  constructor(core: ReadThrough, workerId: string, step: number) {
    this.#core = core;
    this.#workerId = workerId;
    this.#step = step;
  }

  get(id: string): LoadJob {
    const job = this.#jobs.get(id);
    if (!job) throw new BadRequestError(`No such load job: ${id}`);
    return job;
  }

  /** Start a job over ranges already checked against the worker's policy. */
  start(ranges: readonly LoadRange[]): LoadJob {
    if (this.#closed) throw new ClosedError(`Worker ${this.#workerId} is shutting down`);
    const job: LoadJob = {
      id: randomUUID(),
      state: 'running',
      bytesTotal: ranges.reduce((a, r) => a + r.length, 0),
      bytesDone: 0,
      rangesTotal: ranges.length,
      rangesDone: 0,
    };
    this.#jobs.set(job.id, job);
    const expire = (): void => {
      const t = setTimeout(() => {
        this.#timers.delete(t);
        this.#jobs.delete(job.id);
      }, KEEP_MS).unref();
      this.#timers.add(t);
    };
    void this.#run(job, [...ranges])
      .then(() => {
        job.state = 'done';
      })
      .catch((err: unknown) => {
        job.state = 'failed';
        const e = isGranaryError(err) ? err : new InternalError(String(err));
        job.error = { code: e.code, message: e.message };
      })
      .finally(expire);
    return job;
  }

  async #run(job: LoadJob, queue: LoadRange[]): Promise<void> {
    const lane = async (): Promise<void> => {
      for (let r = queue.shift(); r !== undefined; r = queue.shift()) {
        for (let off = r.offset; off < r.offset + r.length; off += this.#step) {
          if (this.#closed) throw new ClosedError(`Worker ${this.#workerId} closed during load job ${job.id}`);
          const len = Math.min(this.#step, r.offset + r.length - off);
          await this.#core.readRange(r.url, off, len, r.etag);
          job.bytesDone += len;
        }
        job.rangesDone++;
      }
    };
    await Promise.all(Array.from({ length: LANES }, lane));
  }

  /** Stop starting reads; running jobs fail with `GRANARY_ERR_CLOSED` at their next step. */
  close(): void {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }
}

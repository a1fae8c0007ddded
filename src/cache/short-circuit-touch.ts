/**
 * What short-circuit reads tell the worker: the pages a client read from the worker's
 * tmpfs tier, batched (`POST /v1/touch` with `{ keys: [pageKey, ...] }`), so that the
 * worker's eviction policy and hit counters learn about hot pages they never served.
 * Advice only: a lost batch costs recency, never bytes.
 */
import { BadRequestError } from '../errors.js';
import type { WorkerInfo } from './membership.js';
import { tryParsePageKey, type PageKey } from './page-key.js';
import { Paths } from './protocol.js';
import type { WorkerTransport } from './worker-transport.js';

/** The most keys one touch request may carry. */
export const MAX_TOUCH_KEYS = 4096;
/** A client sends a worker's batch once it holds this many keys, or after `TOUCH_FLUSH_MS`. */
const BATCH_KEYS = 1024;
const TOUCH_FLUSH_MS = 1000;

/** The body of `POST /v1/touch`, checked. */
export function parseTouchBody(body: unknown): PageKey[] {
  const keys = (body as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw new BadRequestError('Expected a touch body `{ keys: [pageKey, ...] }`');
  if (keys.length > MAX_TOUCH_KEYS) throw new BadRequestError(`A touch carries at most ${MAX_TOUCH_KEYS} keys, got ${keys.length}`);
  return keys.map((k, i) => {
    if (typeof k !== 'string' || tryParsePageKey(k) === undefined) throw new BadRequestError(`keys[${i}] is not a page key`);
    return k as PageKey;
  });
}

/** Batches of touched page keys per worker, sent in the background. */
export class TouchBatches {
  readonly #transport: WorkerTransport;
  readonly #pending = new Map<string, { worker: WorkerInfo; keys: Set<PageKey> }>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(transport: WorkerTransport) {
    this.#transport = transport;
  }

  add(w: WorkerInfo, keys: readonly PageKey[]): void {
    if (this.#closed) return;
    let batch = this.#pending.get(w.id);
    if (batch === undefined || batch.worker.url !== w.url) this.#pending.set(w.id, (batch = { worker: w, keys: new Set() }));
    for (const k of keys) batch.keys.add(k);
    if (batch.keys.size >= BATCH_KEYS) this.#send(w.id);
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        for (const id of [...this.#pending.keys()]) this.#send(id);
      }, TOUCH_FLUSH_MS);
      this.#timer.unref();
    }
  }

  /** Drop what is not sent yet. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#pending.clear();
  }

  #send(id: string): void {
    const batch = this.#pending.get(id);
    this.#pending.delete(id);
    if (batch === undefined || batch.keys.size === 0) return;
    const keys = [...batch.keys];
    for (let i = 0; i < keys.length; i += MAX_TOUCH_KEYS) {
      this.#transport.postJson(batch.worker, Paths.touch, { keys: keys.slice(i, i + MAX_TOUCH_KEYS) }, undefined).catch(() => undefined);
    }
  }
}

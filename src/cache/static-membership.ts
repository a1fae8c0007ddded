/**
 * A fixed list of cache workers, from options or configuration; `update()` replaces it.
 */
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { MemberList } from './member-list.js';
import { describe, validateWorkerInfo, validateWorkerUrl, type WorkerInfo } from './membership-options.js';
import type { Membership, MembershipListener } from './membership.js';

/**
 * A fixed list of workers, e.g. `new StaticMembership(['http://10.0.0.5:7070'])`.
 * Ids derive from the URLs (the normalised URL itself) unless full WorkerInfo
 * objects are given. `update()` replaces the list (tests, config reloads).
 */
export class StaticMembership implements Membership {
  readonly source = 'static' as const;
  readonly #list = new MemberList('static', undefined);
  #closed = false;

  constructor(workers: readonly (string | WorkerInfo)[]) {
    this.#list.set(StaticMembership.#parse(workers), 'initial');
  }

  static #parse(workers: readonly (string | WorkerInfo)[]): WorkerInfo[] {
    if (!Array.isArray(workers)) {
      throw new InvalidArgumentError(`Expected \`workers\` to be an array of worker URLs, got ${describe(workers)}`);
    }
    const seen = new Set<string>();
    return workers.map((w: string | WorkerInfo, i) => {
      const info =
        typeof w === 'string'
          ? (() => {
              const url = validateWorkerUrl(w, `workers[${i}]`);
              return { id: url, url };
            })()
          : validateWorkerInfo(w, `workers[${i}]`);
      if (seen.has(info.id)) {
        throw new InvalidArgumentError(`\`workers[${i}]\` repeats worker ${JSON.stringify(info.id)}`);
      }
      seen.add(info.id);
      return info;
    });
  }

  members(): readonly WorkerInfo[] {
    this.#assertOpen();
    return this.#list.current;
  }

  subscribe(listener: MembershipListener): () => void {
    this.#assertOpen();
    return this.#list.subscribe(listener);
  }

  async ready(options: { signal?: AbortSignal | undefined } = {}): Promise<void> {
    this.#assertOpen();
    if (options.signal?.aborted) throw options.signal.reason;
  }

  /** Replace the list; subscribers see the difference. */
  update(workers: readonly (string | WorkerInfo)[]): void {
    this.#assertOpen();
    this.#list.set(StaticMembership.#parse(workers), 'update');
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#list.clearListeners();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError('static membership was closed');
  }
}

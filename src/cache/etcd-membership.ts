/**
 * Cache workers as etcd knows them: each worker keeps `/granary/<cluster>/workers/<id>`
 * alive under a lease (registration.ts) and this source lists the prefix and watches it.
 *
 * It never forgets what it knew: while etcd is unreachable `members()` keeps returning
 * the last known list, and on reconnect it re-lists and reconciles by revision, so a
 * reconnect can neither lose a change nor resurrect a departed worker.
 */
import type { Etcd3, IKeyValue, IRangeResponse, IWatchResponse, Watcher } from 'etcd3';
import { ClosedError, InvalidArgumentError, type GranaryError } from '../errors.js';
import { abortable, retry } from '../util/retry.js';
import { optionalInt } from '../util/validate.js';
import { ETCD_BACKOFF, createEtcdClient, decodeWorkerInfo, etcdError, isTerminalEtcdError, workersPrefix } from './etcd.js';
import { MemberList, membershipChannels } from './member-list.js';
import { describe, validateCluster, validateEndpoints, type WorkerInfo } from './membership-options.js';
import { resolveEtcdSecurity, type EtcdSecurityOptions } from './etcd-security.js';
import type { Membership, MembershipChange, MembershipListener } from './membership.js';

export interface EtcdMembershipOptions extends EtcdSecurityOptions {
  /**
   * etcd client URLs.
   * @example ['http://127.0.0.1:2379']
   */
  endpoints: string | readonly string[];
  /** Cluster name: workers live under `/granary/<cluster>/workers/`. */
  cluster: string;
  /** Aborting it closes the membership. */
  signal?: AbortSignal | undefined;
  /**
   * Deadline for each list request in ms, so a black-holed etcd cannot stall a resync.
   * @default 5000
   */
  requestTimeoutMs?: number | undefined;
}

interface Entry {
  /** undefined: the key holds something that is not a valid WorkerInfo. */
  info: WorkerInfo | undefined;
  rev: bigint;
}

/**
 * Workers registered in etcd. Lists the prefix, then watches it from the next
 * revision. While etcd is unreachable the last list stays; on reconnect the watch
 * resumes from its revision and a re-list reconciles anything it could have missed;
 * if etcd cancels the watch (its revision was compacted) or the cluster id changed
 * (etcd was rebuilt), it re-lists from scratch.
 */
export class EtcdMembership implements Membership {
  readonly source = 'etcd' as const;
  readonly cluster: string;
  readonly prefix: string;
  readonly endpoints: readonly string[];
  /** The etcd client, once etcd3 is loaded (#range() resolves it before any watch starts). */
  readonly #client: Promise<Etcd3>;
  #etcd: Etcd3 | undefined;
  readonly #requestTimeoutMs: number;
  readonly #list: MemberList;
  readonly #stop = new AbortController();
  readonly #entries = new Map<string, Entry>();
  /** Deletes seen by the watch while a reconciling list is in flight. */
  #tombstones: Map<string, bigint> | undefined;
  #clusterId: string | undefined;
  #watcher: Watcher | undefined;
  #watchConnected = false;
  #resyncing = false;
  #resyncAgain = false;
  #haveList = false;
  #failure: GranaryError | undefined;
  #closing: Promise<void> | undefined;
  /** Lists and re-lists in progress (each retries until it succeeds or the membership stops). */
  readonly #tasks = new Set<Promise<void>>();
  /** Keys whose value was not a valid WorkerInfo, counted each time one was read. */
  #invalidEntries = 0;
  readonly #readyWaiters = new Set<{ resolve: () => void; reject: (e: unknown) => void }>();
  readonly #onExternalAbort: (() => void) | undefined;
  readonly #signal: AbortSignal | undefined;

  constructor(options: EtcdMembershipOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError(`Expected EtcdMembership options { endpoints, cluster }, got ${describe(options)}`);
    }
    this.endpoints = validateEndpoints(options.endpoints);
    // Read the TLS files now: a missing one fails the constructor, not a retry loop.
    const security = resolveEtcdSecurity(this.endpoints, options);
    validateCluster(options.cluster);
    this.cluster = options.cluster;
    this.prefix = workersPrefix(options.cluster);
    this.#requestTimeoutMs = optionalInt('requestTimeoutMs', options.requestTimeoutMs, 5000);
    this.#list = new MemberList('etcd', this.cluster);
    this.#client = createEtcdClient(this.endpoints, security).then((c) => (this.#etcd = c));
    // A failed load is reported by #bootstrap's first #range().
    this.#client.catch(() => undefined);
    this.#signal = options.signal;
    if (options.signal !== undefined) {
      this.#onExternalAbort = () => void this.close();
      if (options.signal.aborted) queueMicrotask(this.#onExternalAbort);
      else options.signal.addEventListener('abort', this.#onExternalAbort, { once: true });
    }
    this.#track(this.#bootstrap());
  }

  /** How many times a key under the prefix held something that is not a valid WorkerInfo (skipped, and published on `granary:membership:invalid-entry`). */
  get invalidEntries(): number {
    return this.#invalidEntries;
  }

  /** Whether the watch stream is currently connected (false: serving the last known list). */
  get connected(): boolean {
    return this.#watchConnected;
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
    if (this.#haveList) return;
    if (this.#failure) throw this.#failure;
    let waiter: { resolve: () => void; reject: (e: unknown) => void } | undefined;
    const p = new Promise<void>((resolve, reject) => {
      waiter = { resolve, reject };
      this.#readyWaiters.add(waiter);
    });
    try {
      await abortable(p, options.signal);
    } finally {
      if (waiter) this.#readyWaiters.delete(waiter);
    }
  }

  /**
   * Stop watching: cancel the watch (waiting at most a second for etcd to confirm it),
   * end any list in progress, close the etcd client. `ready()` waiters reject with
   * `GRANARY_ERR_CLOSED`. Resolves once all of it has stopped. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown(new ClosedError(`etcd membership for cluster ${JSON.stringify(this.cluster)} was closed`), true);
    return this.#closing;
  }

  /**
   * Stop at once: like `close()`, without waiting for etcd to confirm the watch's
   * cancellation; `ready()` waiters reject with `err`. Idempotent (and a no-op after `close()`).
   */
  destroy(err?: Error): Promise<void> {
    this.#closing ??= this.#shutdown(err ?? new ClosedError(`etcd membership for cluster ${JSON.stringify(this.cluster)} was destroyed`), false);
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #shutdown(reason: Error, graceful: boolean): Promise<void> {
    this.#stop.abort(reason);
    if (this.#onExternalAbort) this.#signal?.removeEventListener('abort', this.#onExternalAbort);
    this.#settleReady(reason);
    this.#list.clearListeners();
    const w = this.#watcher;
    this.#watcher = undefined;
    this.#watchConnected = false;
    if (w) {
      w.removeAllListeners();
      w.on('error', () => undefined);
      // A cancel waits for etcd's answer; when etcd is gone it would wait for ever.
      const cancelled = w.cancel().catch(() => undefined);
      if (graceful) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([cancelled, new Promise((r) => (timer = setTimeout(r, 1000)))]);
        clearTimeout(timer);
      }
    }
    // Every list races the stop signal, so these settle at once.
    await Promise.allSettled([...this.#tasks]);
    (await this.#client.catch(() => undefined))?.close();
  }

  #assertOpen(): void {
    if (this.#stop.signal.aborted) {
      throw new ClosedError(`etcd membership for cluster ${JSON.stringify(this.cluster)} was closed`);
    }
  }

  #settleReady(err?: unknown): void {
    for (const w of this.#readyWaiters) {
      if (err === undefined) w.resolve();
      else w.reject(err);
    }
    this.#readyWaiters.clear();
  }

  /** List the prefix; rejects with the stop reason at once when the membership stops. */
  async #range(): Promise<IRangeResponse> {
    const stop = this.#stop.signal;
    const client = await abortable(this.#client, stop);
    return abortable(
      client
        .getAll()
        .prefix(this.prefix)
        .options({ deadline: Date.now() + this.#requestTimeoutMs })
        .exec(),
      stop,
    );
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    void task.finally(() => this.#tasks.delete(task));
  }

  /** Retry `attempt` against etcd until it succeeds, the membership stops, or a failure is terminal (reported, then given up). */
  async #retryEtcd(doing: string, attempt: () => Promise<void>): Promise<void> {
    try {
      await retry(attempt, {
        ...ETCD_BACKOFF,
        attempts: Infinity,
        signal: this.#stop.signal,
        retryable: (err) => !this.#handleFailure(err, doing),
      });
    } catch {
      // Stopped, or a terminal failure that #handleFailure has already reported and recorded.
    }
  }

  /** List from scratch and (re)start the watch; retries transient failures until closed. */
  async #bootstrap(): Promise<void> {
    await this.#retryEtcd('listing workers', async () => {
      const res = await this.#range();
      if (this.#stop.signal.aborted) return;
      this.#clusterId = res.header.cluster_id;
      this.#entries.clear();
      this.#applySnapshot(res);
      const initial = !this.#haveList;
      this.#haveList = true;
      this.#publish(initial ? 'initial' : 'resync');
      if (initial) this.#settleReady();
      this.#startWatch(BigInt(res.header.revision) + 1n);
    });
  }

  /** Report an error; true when it is terminal (membership then stops updating). */
  #handleFailure(err: unknown, doing: string): boolean {
    const e = etcdError(err, this.endpoints, `${doing} under ${this.prefix}`);
    const terminal = isTerminalEtcdError(err);
    if (membershipChannels.error.hasSubscribers) {
      membershipChannels.error.publish({ cluster: this.cluster, error: e, terminal });
    }
    if (terminal) {
      this.#failure = e;
      this.#settleReady(e);
    }
    return terminal;
  }

  #startWatch(fromRevision: bigint): void {
    const client = this.#etcd;
    if (client === undefined) throw new Error('unreachable: a watch starts only after a successful list');
    const watcher = client.watch().prefix(this.prefix).startRevision(fromRevision.toString()).watcher();
    this.#watcher = watcher;
    let hadDisconnect = false;
    watcher.on('connected', () => {
      if (this.#watcher !== watcher) return;
      this.#watchConnected = true;
      if (membershipChannels.connection.hasSubscribers) {
        membershipChannels.connection.publish({ cluster: this.cluster, connected: true });
      }
      // etcd replays from the watcher's revision, but etcd3 advances that revision on
      // reconnect before the replay arrives; a re-list closes that gap.
      if (hadDisconnect) this.#requestResync();
    });
    watcher.on('disconnected', (err: Error) => {
      if (this.#watcher !== watcher) return;
      hadDisconnect = true;
      this.#watchConnected = false;
      if (membershipChannels.connection.hasSubscribers) {
        membershipChannels.connection.publish({ cluster: this.cluster, connected: false, error: err });
      }
    });
    watcher.on('data', (res: IWatchResponse) => {
      if (this.#watcher !== watcher) return;
      for (const ev of res.events) {
        const rev = BigInt(ev.kv.mod_revision);
        if (ev.type === 'Put') this.#applyPut(ev.kv, rev);
        else this.#applyDelete(ev.kv.key.toString(), rev);
      }
      this.#publish('watch');
    });
    watcher.on('error', (err: Error) => {
      // etcd cancelled the watch (its revision was compacted, or permission was lost).
      if (this.#watcher !== watcher) return;
      this.#watcher = undefined;
      this.#watchConnected = false;
      watcher.removeAllListeners();
      watcher.on('error', () => undefined);
      void watcher.cancel().catch(() => undefined);
      if (this.#stop.signal.aborted) return;
      if (this.#handleFailure(err, 'watching workers')) return;
      this.#track(this.#bootstrap());
    });
  }

  #requestResync(): void {
    if (this.#resyncing) {
      this.#resyncAgain = true;
      return;
    }
    this.#resyncing = true;
    this.#track(
      this.#resync().finally(() => {
        this.#resyncing = false;
      }),
    );
  }

  async #resync(): Promise<void> {
    do {
      this.#resyncAgain = false;
      let restart = false;
      await this.#retryEtcd('re-listing workers', async () => {
        this.#tombstones = new Map();
        try {
          const res = await this.#range();
          if (this.#stop.signal.aborted || this.#watcher === undefined) return;
          if (res.header.cluster_id !== this.#clusterId) {
            // A different etcd cluster answers (rebuilt from scratch): revisions are not
            // comparable, so throw away the watch and start over.
            const w = this.#watcher;
            this.#watcher = undefined;
            w.removeAllListeners();
            w.on('error', () => undefined);
            void w.cancel().catch(() => undefined);
            restart = true;
            return;
          }
          this.#applySnapshot(res);
          this.#publish('resync');
        } finally {
          this.#tombstones = undefined;
        }
      });
      if (restart) {
        await this.#bootstrap();
        return;
      }
      // Stopped, failed for good, or the watch died (and its error handler re-lists).
      if (this.#failure !== undefined || this.#watcher === undefined) return;
    } while (this.#resyncAgain && !this.#stop.signal.aborted);
  }

  /**
   * Merge a list taken at revision R with what the watch has already applied: a key's
   * newer revision wins, a key missing from the list is gone unless the watch put it
   * after R, and a delete the watch saw after R stays deleted.
   */
  #applySnapshot(res: IRangeResponse): void {
    const listRev = BigInt(res.header.revision);
    const seen = new Set<string>();
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      seen.add(key);
      this.#applyPut(kv, BigInt(kv.mod_revision));
    }
    for (const [key, e] of this.#entries) {
      if (!seen.has(key) && e.rev <= listRev) this.#entries.delete(key);
    }
  }

  #applyPut(kv: IKeyValue, rev: bigint): void {
    const key = kv.key.toString();
    const cur = this.#entries.get(key);
    if (cur !== undefined && cur.rev >= rev) return;
    const tomb = this.#tombstones?.get(key);
    if (tomb !== undefined && tomb >= rev) return;
    this.#entries.set(key, { info: this.#parse(key, kv.value), rev });
  }

  #applyDelete(key: string, rev: bigint): void {
    const cur = this.#entries.get(key);
    if (cur !== undefined && cur.rev > rev) return;
    this.#entries.delete(key);
    this.#tombstones?.set(key, rev);
  }

  /** The info a key holds, or undefined (counted and published, never thrown) when it is not a valid WorkerInfo. */
  #parse(key: string, value: Buffer): WorkerInfo | undefined {
    const r = decodeWorkerInfo(this.prefix, key, value);
    if ('info' in r) return r.info;
    this.#invalidEntries++;
    if (membershipChannels.invalidEntry.hasSubscribers) {
      membershipChannels.invalidEntry.publish({ cluster: this.cluster, key, reason: r.reason });
    }
    return undefined;
  }

  #publish(reason: MembershipChange['reason']): void {
    const next: WorkerInfo[] = [];
    for (const e of this.#entries.values()) if (e.info !== undefined) next.push(e.info);
    this.#list.set(next, reason);
  }
}


/**
 * Who the cache workers are. One small interface, two sources: a static list of
 * worker URLs, and etcd, where each worker keeps `/granary/<cluster>/workers/<id>`
 * alive under a lease (see registration.ts) and clients watch the prefix.
 *
 * The etcd source never forgets what it knew: while etcd is unreachable `members()`
 * keeps returning the last known list, and on reconnect it re-lists and reconciles by
 * revision, so a reconnect can neither lose a change nor resurrect a departed worker.
 */
import { channel } from 'node:diagnostics_channel';
import type * as Etcd3Module from 'etcd3';
import type { Etcd3, IKeyValue, IRangeResponse, IWatchResponse, Watcher } from 'etcd3';
import { AccessDeniedError, ClosedError, GranaryError, InvalidArgumentError, UnavailableError } from '../errors.js';

/** What a worker publishes about itself; stored as JSON in its etcd key. */
export interface WorkerInfo {
  /** Stable worker id; the last segment of its etcd key. No `/`. */
  id: string;
  /** Base URL of the worker's HTTP endpoint, e.g. `http://127.0.0.1:7070`. */
  url: string;
  /** Total cache capacity (memory + disk) in bytes. */
  capacityBytes?: number;
  /** When the worker process started (ms since epoch). */
  startedAt?: number;
  /** granary version the worker runs. */
  version?: string;
  /** Host name of the machine the worker runs on. */
  host?: string;
  /** The worker's page size in bytes. */
  pageSize?: number;
  /** Free-form labels (zone, node name). */
  labels?: Record<string, string>;
}

export interface MembershipChange {
  /** The full list after the change, sorted by id. */
  readonly members: readonly WorkerInfo[];
  readonly added: readonly WorkerInfo[];
  readonly removed: readonly WorkerInfo[];
  /** Same id, different info (e.g. a new URL after a restart). */
  readonly updated: readonly WorkerInfo[];
  /** `initial`: first list; `watch`: a watch event; `resync`: re-list after a reconnect; `update`: set by the owner (static). */
  readonly reason: 'initial' | 'watch' | 'resync' | 'update';
}

/** Gets the new list first (what most callers need), then the details of the change. */
export type MembershipListener = (members: readonly WorkerInfo[], change: MembershipChange) => void;

/** A source of the current cache workers. */
export interface Membership extends AsyncDisposable {
  readonly source: 'static' | 'etcd';
  /** The current workers, sorted by id; a frozen snapshot. Throws ClosedError after close(). */
  members(): readonly WorkerInfo[];
  /** Called after every change with the new list and what changed; returns the unsubscribe function. */
  subscribe(listener: MembershipListener): () => void;
  /** Resolves once the first list is known. Rejects on a terminal error, on close, or with `signal.reason`. */
  ready(options?: { signal?: AbortSignal | undefined }): Promise<void>;
  /** Stop watching. Idempotent. */
  close(): Promise<void>;
}

/** Diagnostics channels; messages are plain objects. */
export const membershipChannels = {
  /** `{ source, cluster?, reason, members, added, removed, updated }` */
  change: channel('granary:membership:change'),
  /** `{ cluster, connected, error? }`: the etcd watch stream went down or came back. */
  connection: channel('granary:membership:connection'),
  /** `{ cluster, error, terminal }`: a failed list or watch (transient: retried; terminal: given up). */
  error: channel('granary:membership:error'),
  /** `{ cluster, key, reason }`: a key under the prefix whose value is not a valid WorkerInfo (ignored). */
  invalidEntry: channel('granary:membership:invalid-entry'),
};

// ---------------------------------------------------------------------------
// Keys and validation, shared with registration.ts

const CLUSTER_RE = /^[A-Za-z0-9._-]{1,128}$/;
const WORKER_ID_RE = /^[A-Za-z0-9._:@-]{1,200}$/;

/** `/granary/<cluster>/workers/`: the prefix every worker key of a cluster lives under. */
export function workersPrefix(cluster: string): string {
  validateCluster(cluster);
  return `/granary/${cluster}/workers/`;
}

/** `/granary/<cluster>/workers/<id>` */
export function workerKey(cluster: string, id: string): string {
  validateWorkerId(id, 'info.id');
  return `${workersPrefix(cluster)}${id}`;
}

export function validateCluster(cluster: unknown, option = 'cluster'): asserts cluster is string {
  if (typeof cluster !== 'string' || !CLUSTER_RE.test(cluster)) {
    throw new InvalidArgumentError(
      `Expected \`${option}\` to be 1-128 characters of [A-Za-z0-9._-], got ${describe(cluster)}`,
    );
  }
}

export function validateWorkerId(id: unknown, option = 'id'): asserts id is string {
  if (typeof id !== 'string' || !WORKER_ID_RE.test(id)) {
    throw new InvalidArgumentError(
      `Expected \`${option}\` to be 1-200 characters of [A-Za-z0-9._:@-] (no '/'), got ${describe(id)}`,
    );
  }
}

/**
 * Check a WorkerInfo and return a normalised copy with only the known fields (fixed
 * field order, so two equal infos serialise identically). Throws InvalidArgumentError
 * naming `option` and the offending value.
 */
export function validateWorkerInfo(value: unknown, option = 'info'): WorkerInfo {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(`Expected \`${option}\` to be an object { id, url, ... }, got ${describe(value)}`);
  }
  const v = value as Record<string, unknown>;
  validateWorkerId(v.id, `${option}.id`);
  const url = validateWorkerUrl(v.url, `${option}.url`);
  const out: WorkerInfo = { id: v.id, url };
  if (v.capacityBytes !== undefined) {
    if (typeof v.capacityBytes !== 'number' || !Number.isSafeInteger(v.capacityBytes) || v.capacityBytes < 0) {
      throw new InvalidArgumentError(
        `Expected \`${option}.capacityBytes\` to be an integer >= 0, got ${describe(v.capacityBytes)}`,
      );
    }
    out.capacityBytes = v.capacityBytes;
  }
  if (v.startedAt !== undefined) {
    if (typeof v.startedAt !== 'number' || !Number.isFinite(v.startedAt)) {
      throw new InvalidArgumentError(`Expected \`${option}.startedAt\` to be a finite number, got ${describe(v.startedAt)}`);
    }
    out.startedAt = v.startedAt;
  }
  if (v.version !== undefined) {
    if (typeof v.version !== 'string') {
      throw new InvalidArgumentError(`Expected \`${option}.version\` to be a string, got ${describe(v.version)}`);
    }
    out.version = v.version;
  }
  if (v.host !== undefined) {
    if (typeof v.host !== 'string') {
      throw new InvalidArgumentError(`Expected \`${option}.host\` to be a string, got ${describe(v.host)}`);
    }
    out.host = v.host;
  }
  if (v.pageSize !== undefined) {
    if (typeof v.pageSize !== 'number' || !Number.isSafeInteger(v.pageSize) || v.pageSize <= 0) {
      throw new InvalidArgumentError(`Expected \`${option}.pageSize\` to be an integer > 0, got ${describe(v.pageSize)}`);
    }
    out.pageSize = v.pageSize;
  }
  if (v.labels !== undefined) {
    const labels = v.labels;
    if (
      typeof labels !== 'object' ||
      labels === null ||
      Array.isArray(labels) ||
      !Object.values(labels).every((x) => typeof x === 'string')
    ) {
      throw new InvalidArgumentError(`Expected \`${option}.labels\` to map strings to strings, got ${describe(labels)}`);
    }
    out.labels = Object.fromEntries(Object.entries(labels as Record<string, string>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
  return out;
}

/** An http(s) URL with no query or fragment; returned without a trailing slash. */
export function validateWorkerUrl(value: unknown, option = 'url'): string {
  let u: URL;
  try {
    if (typeof value !== 'string') throw new TypeError('not a string');
    u = new URL(value);
  } catch {
    throw new InvalidArgumentError(`Expected \`${option}\` to be an http(s) URL, got ${describe(value)}`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.search !== '' || u.hash !== '' || u.username !== '') {
    throw new InvalidArgumentError(
      `Expected \`${option}\` to be an http(s) URL without credentials, query or fragment, got ${describe(value)}`,
    );
  }
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

/** Normalise `endpoints` (a string, comma-separated string, or array) for etcd3's `hosts`. */
export function validateEndpoints(value: unknown, option = 'endpoints'): readonly string[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
  if (!Array.isArray(list) || list.length === 0) {
    throw new InvalidArgumentError(`Expected \`${option}\` to be a non-empty list of etcd URLs, got ${describe(value)}`);
  }
  return list.map((e: unknown, i) => {
    try {
      if (typeof e !== 'string') throw new TypeError('not a string');
      const u = new URL(e);
      if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.port === '' || u.pathname !== '/') throw new TypeError('bad');
      return `${u.protocol}//${u.host}`;
    } catch {
      throw new InvalidArgumentError(
        `Expected \`${option}[${i}]\` to be an etcd client URL like http://127.0.0.1:2379, got ${describe(e)}`,
      );
    }
  });
}

function describe(v: unknown): string {
  if (typeof v === 'string') return `${JSON.stringify(v)} (string)`;
  if (v === null) return 'null';
  if (typeof v === 'object') {
    let json: string | undefined;
    try {
      json = JSON.stringify(v);
    } catch {
      json = undefined;
    }
    return `${json === undefined ? 'an unserialisable value' : json.slice(0, 200)} (${Array.isArray(v) ? 'array' : 'object'})`;
  }
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${v.toString()} (${typeof v})`;
  if (typeof v === 'symbol') return `${v.toString()} (symbol)`;
  return typeof v === 'undefined' ? 'undefined' : `a ${typeof v}`;
}

// ---------------------------------------------------------------------------
// etcd helpers, shared with registration.ts

/**
 * etcd3 (with gRPC and protobufjs, ~6 MiB of heap), loaded on first use: a process
 * that never talks to etcd (a static worker list, a loader thread) does not carry it.
 */
let etcd3: typeof Etcd3Module | undefined;
let etcd3Loading: Promise<typeof Etcd3Module> | undefined;
function loadEtcd3(): Promise<typeof Etcd3Module> {
  etcd3Loading ??= import('etcd3').then((m) => (etcd3 = m));
  return etcd3Loading;
}

/**
 * An etcd3 client for granary: watch reconnects back off from 100 ms to at most 1 s
 * (etcd3's default grows to 30 s, far too slow to notice that etcd is back).
 */
export async function createEtcdClient(endpoints: readonly string[]): Promise<Etcd3> {
  const { Etcd3: Client } = await loadEtcd3();
  return new Client({ hosts: [...endpoints], faultHandling: { watchBackoff: watchBackoff(100) } });
}

function watchBackoff(ms: number): { readonly duration: number; next(): ReturnType<typeof watchBackoff> } {
  return { duration: ms, next: () => watchBackoff(Math.min(ms * 2, 1000)) };
}

/** Errors that retrying cannot fix: bad credentials, missing permission, a closed client. */
export function isTerminalEtcdError(err: unknown): boolean {
  if (err instanceof GranaryError) return !(err instanceof UnavailableError);
  // No etcd3 error can exist before etcd3 is loaded.
  const m = etcd3;
  return (
    m !== undefined &&
    (err instanceof m.EtcdAuthenticationFailedError ||
      err instanceof m.EtcdInvalidAuthTokenError ||
      err instanceof m.EtcdPermissionDeniedError ||
      err instanceof m.EtcdUserNotFoundError ||
      err instanceof m.GRPCUnauthenticatedError)
  );
}

/** Wrap an etcd3 error as a coded granary error naming the endpoints and the operation. */
export function etcdError(err: unknown, endpoints: readonly string[], doing: string): GranaryError {
  if (err instanceof GranaryError) return err;
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  const msg = `etcd ${endpoints.join(',')} ${doing}: ${detail}`;
  return isTerminalEtcdError(err) ? new AccessDeniedError(msg, { cause: err }) : new UnavailableError(msg, { cause: err });
}

/** Exponential backoff with jitter: 100 ms doubling to `maxMs`. */
export function retryDelayMs(attempt: number, maxMs = 2000): number {
  const base = Math.min(maxMs, 100 * 2 ** Math.min(attempt, 10));
  return Math.round(base * (0.5 + Math.random() * 0.5));
}

/** Sleep that ends early (resolving, not rejecting) when `signal` aborts. */
export function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Race `promise` against `signal`; listeners removed in `finally`. */
async function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) throw signal.reason;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        onAbort = () => reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

// ---------------------------------------------------------------------------
// Change bookkeeping shared by both sources

class MemberList {
  #members: readonly WorkerInfo[] = Object.freeze([]);
  readonly #listeners = new Set<MembershipListener>();

  constructor(
    private readonly source: 'static' | 'etcd',
    private readonly cluster: string | undefined,
  ) {}

  get current(): readonly WorkerInfo[] {
    return this.#members;
  }

  subscribe(listener: MembershipListener): () => void {
    if (typeof listener !== 'function') {
      throw new InvalidArgumentError(`Expected the membership listener to be a function, got ${describe(listener)}`);
    }
    // Wrap so the same function subscribed twice gets two independent subscriptions.
    const wrapped: MembershipListener = (m, c) => listener(m, c);
    this.#listeners.add(wrapped);
    return () => {
      this.#listeners.delete(wrapped);
    };
  }

  clearListeners(): void {
    this.#listeners.clear();
  }

  /** Replace the list; notify when anything differs (or always, for the initial list). */
  set(next: readonly WorkerInfo[], reason: MembershipChange['reason']): void {
    const sorted = Object.freeze([...next].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((w) => Object.freeze(w)));
    const before = new Map(this.#members.map((w) => [w.id, w]));
    const after = new Map(sorted.map((w) => [w.id, w]));
    const added: WorkerInfo[] = [];
    const updated: WorkerInfo[] = [];
    const removed: WorkerInfo[] = [];
    for (const w of sorted) {
      const old = before.get(w.id);
      if (old === undefined) added.push(w);
      else if (JSON.stringify(old) !== JSON.stringify(w)) updated.push(w);
    }
    for (const w of this.#members) if (!after.has(w.id)) removed.push(w);
    if (reason !== 'initial' && added.length === 0 && updated.length === 0 && removed.length === 0) return;
    this.#members = sorted;
    const change: MembershipChange = Object.freeze({ members: sorted, added, removed, updated, reason });
    if (membershipChannels.change.hasSubscribers) {
      membershipChannels.change.publish({ source: this.source, cluster: this.cluster, ...change });
    }
    for (const l of [...this.#listeners]) {
      try {
        l(sorted, change);
      } catch (err) {
        // A listener's bug must not stop the others or the watch; surface it like an EventEmitter would.
        setImmediate(() => {
          throw err;
        });
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Static list

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

// ---------------------------------------------------------------------------
// etcd

export interface EtcdMembershipOptions {
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
   * Deadline for each list request, so a black-holed etcd cannot stall a resync.
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
  readonly #readyWaiters = new Set<{ resolve: () => void; reject: (e: unknown) => void }>();
  readonly #onExternalAbort: (() => void) | undefined;
  readonly #signal: AbortSignal | undefined;

  constructor(options: EtcdMembershipOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError(`Expected EtcdMembership options { endpoints, cluster }, got ${describe(options)}`);
    }
    this.endpoints = validateEndpoints(options.endpoints);
    validateCluster(options.cluster);
    this.cluster = options.cluster;
    this.prefix = workersPrefix(options.cluster);
    const t = options.requestTimeoutMs ?? 5000;
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) {
      throw new InvalidArgumentError(`Expected \`requestTimeoutMs\` to be a number > 0, got ${describe(t)}`);
    }
    this.#requestTimeoutMs = t;
    this.#list = new MemberList('etcd', this.cluster);
    this.#client = createEtcdClient(this.endpoints).then((c) => (this.#etcd = c));
    // A failed load is reported by #bootstrap's first #range().
    this.#client.catch(() => undefined);
    this.#signal = options.signal;
    if (options.signal !== undefined) {
      this.#onExternalAbort = () => void this.close();
      if (options.signal.aborted) queueMicrotask(this.#onExternalAbort);
      else options.signal.addEventListener('abort', this.#onExternalAbort, { once: true });
    }
    void this.#bootstrap(0);
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
      await raceSignal(p, options.signal);
    } finally {
      if (waiter) this.#readyWaiters.delete(waiter);
    }
  }

  close(): Promise<void> {
    this.#closing ??= this.#doClose();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #doClose(): Promise<void> {
    this.#stop.abort();
    if (this.#onExternalAbort) this.#signal?.removeEventListener('abort', this.#onExternalAbort);
    this.#settleReady(new ClosedError(`etcd membership for cluster ${JSON.stringify(this.cluster)} was closed`));
    this.#list.clearListeners();
    const w = this.#watcher;
    this.#watcher = undefined;
    this.#watchConnected = false;
    if (w) {
      w.removeAllListeners();
      w.on('error', () => undefined);
      // A cancel waits for etcd's answer; when etcd is gone it would wait for ever.
      await Promise.race([w.cancel().catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
    }
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

  async #range(): Promise<IRangeResponse> {
    const client = await this.#client;
    return client
      .getAll()
      .prefix(this.prefix)
      .options({ deadline: Date.now() + this.#requestTimeoutMs })
      .exec();
  }

  /** List from scratch and (re)start the watch; retries transient failures until closed. */
  async #bootstrap(firstAttempt: number): Promise<void> {
    for (let attempt = firstAttempt; !this.#stop.signal.aborted; attempt++) {
      try {
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
        return;
      } catch (err) {
        if (this.#stop.signal.aborted) return;
        if (this.#handleFailure(err, 'listing workers')) return;
        await sleepUnlessAborted(retryDelayMs(attempt), this.#stop.signal);
      }
    }
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
      void this.#bootstrap(0);
    });
  }

  #requestResync(): void {
    if (this.#resyncing) {
      this.#resyncAgain = true;
      return;
    }
    this.#resyncing = true;
    void this.#resync().finally(() => {
      this.#resyncing = false;
    });
  }

  async #resync(): Promise<void> {
    do {
      this.#resyncAgain = false;
      for (let attempt = 0; !this.#stop.signal.aborted; attempt++) {
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
            await this.#bootstrap(0);
            return;
          }
          this.#applySnapshot(res);
          this.#publish('resync');
          break;
        } catch (err) {
          if (this.#stop.signal.aborted) return;
          if (this.#handleFailure(err, 're-listing workers')) return;
          await sleepUnlessAborted(retryDelayMs(attempt), this.#stop.signal);
        } finally {
          this.#tombstones = undefined;
        }
      }
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

  #parse(key: string, value: Buffer): WorkerInfo | undefined {
    const id = key.slice(this.prefix.length);
    try {
      if (!key.startsWith(this.prefix)) throw new Error('outside the prefix');
      validateWorkerId(id, 'key');
      const raw: unknown = JSON.parse(value.toString('utf8'));
      // The key is the identity; a mismatched id inside the value is overridden.
      return validateWorkerInfo(typeof raw === 'object' && raw !== null ? { ...raw, id } : raw, 'value');
    } catch (err) {
      if (membershipChannels.invalidEntry.hasSubscribers) {
        membershipChannels.invalidEntry.publish({
          cluster: this.cluster,
          key,
          reason: err instanceof Error ? err.message : String(err),
        });
      }
      return undefined;
    }
  }

  #publish(reason: MembershipChange['reason']): void {
    const next: WorkerInfo[] = [];
    for (const e of this.#entries.values()) if (e.info !== undefined) next.push(e.info);
    this.#list.set(next, reason);
  }
}

/** Membership options as `CacheClient` and the CLI take them: etcd, or a static list. */
export type MembershipOptions =
  | { etcd: Omit<EtcdMembershipOptions, 'signal'>; workers?: undefined; signal?: AbortSignal | undefined }
  | { workers: readonly (string | WorkerInfo)[]; etcd?: undefined; signal?: AbortSignal | undefined };

/** `{ etcd: { endpoints, cluster } }` → EtcdMembership; `{ workers: [url, ...] }` → StaticMembership. */
export function createMembership(options: MembershipOptions): Membership {
  if (options?.etcd !== undefined && options.workers !== undefined) {
    throw new InvalidArgumentError('Expected either `etcd` or `workers`, not both');
  }
  if (options?.etcd !== undefined) return new EtcdMembership({ ...options.etcd, signal: options.signal });
  if (options?.workers !== undefined) return new StaticMembership(options.workers);
  throw new InvalidArgumentError(`Expected \`etcd: { endpoints, cluster }\` or \`workers: [url, ...]\`, got ${describe(options)}`);
}

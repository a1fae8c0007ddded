/**
 * Who the cache workers are. One small interface, two sources: a static list of
 * worker URLs (static-membership.ts), and etcd (etcd-membership.ts), where each worker
 * keeps `/granary/<cluster>/workers/<id>` alive under a lease (registration.ts) and
 * clients watch the prefix. Option checks live in membership-options.ts, the etcd
 * plumbing both etcd sides share in etcd.ts.
 */
import { InvalidArgumentError } from '../errors.js';
import { EtcdMembership, type EtcdMembershipOptions } from './etcd-membership.js';
import { describe, type WorkerInfo } from './membership-options.js';
import { StaticMembership } from './static-membership.js';

export { EtcdMembership, type EtcdMembershipOptions } from './etcd-membership.js';
export { StaticMembership } from './static-membership.js';
export { MemberList, membershipChannels } from './member-list.js';
export {
  checkWorkerInfo,
  validateCluster,
  validateEndpoints,
  validateWorkerId,
  validateWorkerInfo,
  validateWorkerUrl,
  workerInfoSchema,
  type WorkerInfo,
} from './membership-options.js';
export { createEtcdClient, decodeWorkerInfo, encodeWorkerInfo, etcdError, isTerminalEtcdError, workerKey, workersPrefix } from './etcd.js';

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
  /**
   * Stop watching. Idempotent; resolves only once everything the source runs (its
   * watch, its client, lists in progress) has stopped. `ready()` waiters reject with
   * `GRANARY_ERR_CLOSED`.
   */
  close(): Promise<void>;
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

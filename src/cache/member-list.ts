/**
 * The current worker list of a membership source and its subscribers: replacing the
 * list works out what was added, removed and updated, publishes the change on
 * `granary:membership:change` and calls every listener. Both sources (static, etcd)
 * and any other `Membership` implementation can keep their list in one.
 */
import { channel } from 'node:diagnostics_channel';
import { InvalidArgumentError } from '../errors.js';
import { describe, type WorkerInfo } from './membership-options.js';
import type { MembershipChange, MembershipListener } from './membership.js';

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

/** A sorted, frozen worker list and its listeners. */
export class MemberList {
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

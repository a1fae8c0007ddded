/**
 * One membership per process. The thread that created a `CacheClient` owns its
 * membership (the etcd watch) and its breakers; other threads of the process that read
 * through a copy of that client (decode threads, the loader thread) join them here
 * instead of opening watches of their own.
 *
 * The owner's `MembershipHub` answers on a `BroadcastChannel` named for it, which every
 * thread of the process (nested worker threads too) can open by name, so a copy built
 * from a spec needs no port handed to it: it says hello, and the hub broadcasts its
 * state (the worker list, whether it is known yet, and the breakers' shared memory),
 * then again on every change. A copy's breaker trips come back to the hub, which
 * reports them in the owner's thread (`granary:client:breaker`).
 *
 * Both ends `unref()` their channel: neither keeps a process or thread alive, and both
 * close it on close().
 */
import { channel } from 'node:diagnostics_channel';
import { BroadcastChannel, threadId } from 'node:worker_threads';
import { randomUUID } from 'node:crypto';
import { ClosedError, errorFromCode, isGranaryError, type GranaryError } from '../errors.js';
import { MemberList } from './member-list.js';
import type { Membership, MembershipChange, MembershipListener, WorkerInfo } from './membership.js';

/** Diagnostics channels, published in the thread that owns the client. */
export const sharedStateChannels = {
  /** `{ worker, hub, threadId }`: a worker's breaker went from closed to open (a worker found down), in thread `threadId`. */
  breaker: channel('granary:client:breaker'),
};

/** How a copy of a client finds the hub of the client it copies: plain data, part of its spec. */
export interface HubRef {
  /** The hub's BroadcastChannel name. */
  channel: string;
  /** The process the hub lives in: a spec taken to another process builds its own state. */
  pid: number;
}

type HubMessage =
  | {
      t: 'state';
      seq: number;
      source: 'static' | 'etcd';
      members: WorkerInfo[];
      reason: MembershipChange['reason'];
      ready: boolean;
      failure: { code: string; message: string } | undefined;
      breakers: SharedArrayBuffer;
    }
  | { t: 'closed' }
  | ThreadMessage;

type ThreadMessage = { t: 'hello' } | { t: 'trip'; worker: string; threadId: number };

/** Serves the owner's membership and breakers to the other threads of the process. */
export class MembershipHub {
  readonly ref: HubRef;
  readonly #bc: BroadcastChannel;
  readonly #membership: Membership;
  readonly #breakers: SharedArrayBuffer;
  readonly #unsubscribe: () => void;
  #seq = 0;
  #reason: MembershipChange['reason'] = 'initial';
  #ready = false;
  #failure: GranaryError | undefined;
  #closed = false;

  constructor(membership: Membership, breakers: SharedArrayBuffer) {
    this.#membership = membership;
    this.#breakers = breakers;
    this.ref = { channel: `granary:hub:${randomUUID()}`, pid: process.pid };
    this.#bc = new BroadcastChannel(this.ref.channel);
    this.#bc.unref();
    this.#bc.onmessage = (ev) => this.#onMessage((ev as { data: ThreadMessage }).data);
    this.#unsubscribe = membership.subscribe((_members, change) => {
      this.#seq++;
      this.#reason = change.reason;
      if (change.reason === 'initial') this.#ready = true;
      this.#post();
    });
    membership.ready().then(
      () => {
        if (this.#ready) return;
        this.#ready = true;
        this.#seq++;
        this.#post();
      },
      (err: unknown) => {
        if (this.#closed) return;
        this.#failure = isGranaryError(err) ? err : undefined;
        this.#seq++;
        this.#post();
      },
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    this.#bc.postMessage({ t: 'closed' } satisfies HubMessage);
    this.#bc.close();
  }

  #onMessage(m: ThreadMessage): void {
    if (this.#closed) return;
    if (m.t === 'hello') this.#post();
    else if (m.t === 'trip') publishTrip(m.worker, this.ref.channel, m.threadId);
  }

  #post(): void {
    if (this.#closed) return;
    let members: WorkerInfo[];
    try {
      members = [...this.#membership.members()];
    } catch {
      return; // the membership is closing
    }
    const f = this.#failure;
    this.#bc.postMessage({
      t: 'state',
      seq: this.#seq,
      source: this.#membership.source,
      members,
      reason: this.#reason,
      ready: this.#ready,
      failure: f === undefined ? undefined : { code: f.code, message: f.message },
      breakers: this.#breakers,
    } satisfies HubMessage);
  }
}

/** Publish a trip on `granary:client:breaker` in this thread. */
export function publishTrip(worker: string, hub: string | undefined, thread: number): void {
  if (sharedStateChannels.breaker.hasSubscribers) sharedStateChannels.breaker.publish({ worker, hub, threadId: thread });
}

/**
 * The membership of a client owned by another thread, as its hub broadcasts it. Keeps
 * the last list it was sent when the owner closes (as an etcd membership does while
 * etcd is away).
 */
export class PortMembership implements Membership {
  readonly source: 'static' | 'etcd';
  readonly #bc: BroadcastChannel;
  readonly #onBreakers: (buffer: SharedArrayBuffer) => void;
  readonly #list: MemberList;
  readonly #waiters = new Set<{ resolve: () => void; reject: (e: unknown) => void }>();
  #seq = -1;
  #ready = false;
  #failure: GranaryError | undefined;
  #closed = false;

  /**
   * `onBreakers` gets the owner's breaker memory with the first state, before any member
   * is published. `initial`: the list to start from (a static list, known without asking).
   */
  constructor(ref: HubRef, source: 'static' | 'etcd', onBreakers: (buffer: SharedArrayBuffer) => void, initial?: readonly WorkerInfo[]) {
    this.source = source;
    this.#onBreakers = onBreakers;
    this.#list = new MemberList(source, undefined);
    if (initial !== undefined) {
      this.#list.set(initial, 'initial');
      this.#ready = true;
    }
    this.#bc = new BroadcastChannel(ref.channel);
    this.#bc.unref();
    this.#bc.onmessage = (ev) => this.#onMessage((ev as { data: HubMessage }).data);
    this.#bc.postMessage({ t: 'hello' } satisfies ThreadMessage);
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
    const { signal } = options;
    if (signal?.aborted) throw signal.reason;
    if (this.#ready) return;
    if (this.#failure) throw this.#failure;
    let waiter: { resolve: () => void; reject: (e: unknown) => void } | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        waiter = { resolve, reject };
        this.#waiters.add(waiter);
        if (signal) {
          onAbort = () => reject(signal.reason);
          signal.addEventListener('abort', onAbort, { once: true });
        }
      });
    } finally {
      if (waiter) this.#waiters.delete(waiter);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Tell the owner that this thread found `worker` down (its breaker tripped here). */
  reportTrip(worker: string): void {
    if (this.#closed) return;
    this.#bc.postMessage({ t: 'trip', worker, threadId } satisfies ThreadMessage);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#list.clearListeners();
    this.#bc.close();
    this.#settle(new ClosedError('shared membership was closed'));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError('shared membership was closed');
  }

  #settle(err?: unknown): void {
    for (const w of this.#waiters) {
      if (err === undefined) w.resolve();
      else w.reject(err);
    }
    this.#waiters.clear();
  }

  #onMessage(m: HubMessage): void {
    if (this.#closed) return;
    if (m.t === 'closed') {
      // Keep the last list; a copy that never got one will not get one now.
      if (!this.#ready && !this.#failure) {
        this.#failure = new ClosedError('the cache client this one shares its membership with was closed');
        this.#settle(this.#failure);
      }
      return;
    }
    // Other copies' hellos and trip reports come by too: only the hub's state is for us.
    if (m.t !== 'state' || m.seq <= this.#seq) return;
    const first = this.#seq < 0;
    this.#seq = m.seq;
    if (first) this.#onBreakers(m.breakers);
    const initial = first && !this.#ready;
    if (m.failure && !this.#ready) {
      this.#failure = errorFromCode(m.failure.code, m.failure.message);
      this.#settle(this.#failure);
      return;
    }
    this.#list.set(m.members, initial ? 'initial' : m.reason);
    if (m.ready && !this.#ready) {
      this.#ready = true;
      this.#settle();
    }
  }
}

/**
 * What a `CacheClient` shares with its copies in other threads of the process: its
 * membership and its breakers. The client that was built from options owns them
 * (`ownClientState`); a copy rebuilt from its spec in another thread joins them over
 * the owner's hub (`joinClientState`, src/cache/membership-port.ts), so a process
 * has one etcd watch per client, one ring and one breaker per worker, however many
 * threads read through it.
 */
import { threadId } from 'node:worker_threads';
import type { UfsOptions } from '../ufs/router.js';
import { portableUfsOptions } from '../ufs/router.js';
import { specOf, type PortableSpec } from '../ufs/portable.js';
import type { UnderFileSystem } from '../ufs/types.js';
import { CircuitBreaker, type BreakerOptions } from './breaker.js';
import type { EtcdSecurityOptions } from './etcd-security.js';
import { membershipFor } from './client-options.js';
import { StaticMembership, type Membership, type WorkerInfo } from './membership.js';
import { MembershipHub, PortMembership, publishTrip, type HubRef } from './membership-port.js';
import { SharedBreakers, type Breaker, type BreakerTable } from './shared-breakers.js';

/** The membership and breakers a `CacheClient` routes by, and who else may join them. */
export interface ClientState {
  readonly membership: Membership;
  readonly breakers: BreakerTable;
  /** Where a copy in another thread of this process joins this state; undefined once closed. */
  share(): HubRef | undefined;
  /** Close `resource` with the state (a store client that a rebuilt copy made for itself). */
  alsoClose(resource: { close(): Promise<void> }): void;
  /** Stop the membership (and the hub); idempotent. */
  close(): Promise<void>;
}

/** The options a client's state is built from (a subset of `CacheClientOptions`). */
export interface ClientStateOptions {
  etcd?: ({ endpoints: string[]; cluster?: string } & EtcdSecurityOptions) | undefined;
  workers?: string[] | undefined;
  breaker?: BreakerOptions | undefined;
}

abstract class BaseState {
  #closers: { close(): Promise<void> }[] = [];
  #closing: Promise<void> | undefined;

  alsoClose(resource: { close(): Promise<void> }): void {
    this.#closers.push(resource);
  }

  close(): Promise<void> {
    this.#closing ??= this.doClose().finally(async () => {
      await Promise.allSettled(this.#closers.map((c) => c.close()));
    });
    return this.#closing;
  }

  protected abstract doClose(): Promise<void>;
}

class OwnState extends BaseState implements ClientState {
  readonly membership: Membership;
  readonly breakers: SharedBreakers;
  #hub: MembershipHub | undefined;
  #closed = false;

  constructor(options: ClientStateOptions) {
    super();
    this.breakers = new SharedBreakers(options.breaker ?? {}, undefined, (id) => publishTrip(id, this.#hub?.ref.channel, threadId));
    this.membership = membershipFor(options);
  }

  share(): HubRef | undefined {
    if (this.#closed) return undefined;
    this.#hub ??= new MembershipHub(this.membership, this.breakers.buffer);
    return this.#hub.ref;
  }

  protected async doClose(): Promise<void> {
    this.#closed = true;
    this.#hub?.close();
    await this.membership.close();
  }
}

class JoinedState extends BaseState implements ClientState {
  readonly membership: PortMembership;
  readonly breakers: BreakerTable;
  readonly #ref: HubRef;
  #closed = false;

  constructor(ref: HubRef, options: ClientStateOptions) {
    super();
    this.#ref = ref;
    let shared: SharedBreakers | undefined;
    // Used only until the hub's first answer, which comes before any worker is known.
    const local = new Map<string, CircuitBreaker>();
    this.breakers = {
      get: (id: string): Breaker => {
        if (shared) return shared.get(id);
        let b = local.get(id);
        if (!b) local.set(id, (b = new CircuitBreaker(options.breaker)));
        return b;
      },
    };
    this.membership = new PortMembership(
      ref,
      options.etcd ? 'etcd' : 'static',
      (buffer) => {
        shared = new SharedBreakers(options.breaker ?? {}, buffer, (id) => this.membership.reportTrip(id));
      },
      options.etcd ? undefined : staticMembers(options.workers ?? []),
    );
  }

  share(): HubRef | undefined {
    return this.#closed ? undefined : { ...this.#ref };
  }

  protected async doClose(): Promise<void> {
    this.#closed = true;
    await this.membership.close();
  }
}

/** A static list as `StaticMembership` reads it (ids included), known at once. */
function staticMembers(workers: readonly string[]): readonly WorkerInfo[] {
  const m = new StaticMembership(workers);
  const members = m.members();
  void m.close();
  return members;
}

/** The state of a client built from its options: a membership of its own, its own breakers. */
export function ownClientState(options: ClientStateOptions): ClientState {
  return new OwnState(options);
}

/** The state of a copy in this process: the owner's membership and breakers, over its hub. */
export function joinClientState(ref: HubRef, options: ClientStateOptions): ClientState {
  return new JoinedState(ref, options);
}

/** A hub reference from a spec's `share`, or undefined when it is not one. */
export function hubRefOf(v: unknown): HubRef | undefined {
  const r = v as Partial<HubRef> | null | undefined;
  return typeof r?.channel === 'string' && typeof r.pid === 'number' ? { channel: r.channel, pid: r.pid } : undefined;
}

/**
 * `CacheClientOptions` as data. `ufs` is router options or the spec of the client it
 * was given. The local cache keeps its memory tier (`memoryBytes`, `pageSize`) but not
 * its disk tier: two clients must never share one `diskDir`, so a rebuilt client has none.
 */
export interface PortableCacheClientOptions extends ClientStateOptions {
  ufs?: UfsOptions | PortableSpec | undefined;
  token?: string | undefined;
  blockSize?: number | undefined;
  partSize?: number | undefined;
  concurrency?: number | undefined;
  metadataTtlMs?: number | undefined;
  requestTimeoutMs?: number | undefined;
  replicas?: number | undefined;
  localCache?: { memoryBytes: number; pageSize?: number } | undefined;
  checksums?: boolean | undefined;
}

function isUfs(v: unknown): v is UnderFileSystem {
  return typeof v === 'object' && v !== null && typeof (v as UnderFileSystem).read === 'function';
}

/**
 * A cache client's spec: its options (`CacheClient.portableSpec()`, with a live store
 * client described in turn) and, in `share`, the hub of its state, which a copy in this
 * process joins. Undefined when any part cannot cross a thread.
 */
export function describeCacheClient(
  own: { kind: 'cache'; options: Omit<PortableCacheClientOptions, 'ufs'> & { ufs?: UfsOptions | UnderFileSystem | undefined } } | undefined,
  state: ClientState,
): PortableSpec | undefined {
  if (!own) return undefined;
  const { ufs, localCache, ...rest } = own.options;
  const options: PortableCacheClientOptions = rest;
  if (localCache) options.localCache = localCache.pageSize === undefined ? { memoryBytes: localCache.memoryBytes } : { memoryBytes: localCache.memoryBytes, pageSize: localCache.pageSize };
  if (isUfs(ufs)) {
    const inner = specOf(ufs);
    if (!inner) return undefined;
    options.ufs = inner;
  } else if (ufs !== undefined) {
    const plain = portableUfsOptions(ufs);
    if (!plain) return undefined;
    options.ufs = plain;
  }
  const share = state.share();
  return share === undefined ? { kind: 'cache', options } : { kind: 'cache', options, share };
}

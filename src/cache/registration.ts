/**
 * A cache worker announces itself by keeping `/granary/<cluster>/workers/<id>` alive
 * in etcd under a lease. Clients watching the prefix (membership.ts) see it appear at
 * once, see it go at once on a graceful `close()` (the lease is revoked), and see it
 * go after one TTL when the process dies.
 *
 * Transient versus terminal, like etcd3's Lease: a failed keepalive is only reported
 * (`keepaliveFailed`) — etcd may be back before the TTL runs out, and etcd restores
 * leases with a fresh TTL when it restarts. Only a lost lease (etcd says it expired,
 * or we could not renew it for twice its TTL) is a departure: then a new lease is
 * granted and the key put again as soon as etcd answers.
 */
import { channel } from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';
import type { Etcd3, Lease } from 'etcd3';
import { ClosedError, InternalError, InvalidArgumentError, type GranaryError } from '../errors.js';
import { abortable, retry } from '../util/retry.js';
import { checkInt, optionalInt } from '../util/validate.js';
import { ETCD_BACKOFF, createEtcdClient, encodeWorkerInfo, etcdError, isTerminalEtcdError, workerKey } from './etcd.js';
import { validateCluster, validateEndpoints, validateWorkerInfo, type WorkerInfo } from './membership-options.js';
import { resolveEtcdSecurity, type EtcdSecurityOptions } from './etcd-security.js';

export interface RegistrationOptions extends EtcdSecurityOptions {
  /**
   * etcd client URLs.
   * @example ['http://127.0.0.1:2379']
   */
  endpoints: string | readonly string[];
  /** Cluster name: the key is `/granary/<cluster>/workers/<info.id>`. */
  cluster: string;
  /** What to publish; stored as JSON. */
  info: WorkerInfo;
  /**
   * Lease TTL in whole seconds, at least 2 (etcd's minimum). A dead worker leaves
   * the ring after about this long; a graceful close removes it at once.
   * @default 10
   */
  ttlSeconds?: number | undefined;
  /**
   * Deadline for each etcd request (grant, put, revoke), in ms.
   * @default 5000
   */
  requestTimeoutMs?: number | undefined;
}

export interface RegisterWorkerOptions extends RegistrationOptions {
  /** Aborts the wait for the first registration (the registration is then closed). */
  signal?: AbortSignal | undefined;
}

export type RegistrationState = 'registering' | 'registered' | 'failed' | 'closed';

export interface RegistrationEvents {
  /** The key is in etcd under lease `leaseId` (first time, and after every re-registration). */
  registered: [leaseId: string];
  /** The lease is gone (the worker left the ring); re-registering. */
  lost: [error: Error];
  /** One keepalive failed; the lease may well still be alive. Not a departure. */
  keepaliveFailed: [error: Error];
  /** A terminal error (e.g. access denied): no more attempts. */
  failed: [error: GranaryError];
}

/** Diagnostics channels; messages are plain objects with `cluster`, `id`, `key`. */
export const registrationChannels = {
  /** `{ ..., leaseId, ttlSeconds }` */
  registered: channel('granary:registration:registered'),
  /** `{ ..., error }` */
  lost: channel('granary:registration:lost'),
  /** `{ ..., error }` */
  keepaliveFailed: channel('granary:registration:keepalive-failed'),
  /** `{ ..., error, terminal }`: a failed grant/put (transient ones are retried). */
  error: channel('granary:registration:error'),
  /** `{ ..., revoked }`: closed; `revoked` false when etcd could not be told (the key then expires with its TTL). */
  closed: channel('granary:registration:closed'),
};

/**
 * Keeps one worker registered until `close()`. Starts registering at construction;
 * `whenRegistered()` waits for it. Most callers want `registerWorker()`.
 */
export class Registration extends EventEmitter<RegistrationEvents> implements AsyncDisposable {
  readonly cluster: string;
  readonly key: string;
  readonly ttlSeconds: number;
  readonly endpoints: readonly string[];
  readonly #client: Promise<Etcd3>;
  readonly #requestTimeoutMs: number;
  readonly #stop = new AbortController();
  #info: WorkerInfo;
  #state: RegistrationState = 'registering';
  #lease: Lease | undefined;
  #leaseId: string | undefined;
  /** The JSON this registration last wrote to its key. */
  #lastWritten: string | undefined;
  #lastKeepaliveAt: number | undefined;
  #failure: GranaryError | undefined;
  #loop: Promise<void>;
  #closing: Promise<void> | undefined;
  /** Revokes of leases from failed attempts, still in flight. */
  readonly #revoking = new Set<Promise<void>>();
  readonly #waiters = new Set<{ resolve: () => void; reject: (e: unknown) => void }>();

  constructor(options: RegistrationOptions) {
    super();
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('Expected registration options { endpoints, cluster, info, ttlSeconds? }');
    }
    this.endpoints = validateEndpoints(options.endpoints);
    // Read the TLS files now: a missing one fails the constructor, not a retry loop.
    const security = resolveEtcdSecurity(this.endpoints, options);
    validateCluster(options.cluster);
    this.cluster = options.cluster;
    this.#info = validateWorkerInfo(options.info);
    this.key = workerKey(this.cluster, this.#info.id);
    // 2 s is etcd's minimum lease TTL.
    this.ttlSeconds = checkInt('ttlSeconds', options.ttlSeconds ?? 10, 2);
    this.#requestTimeoutMs = optionalInt('requestTimeoutMs', options.requestTimeoutMs, 5000);
    this.#client = createEtcdClient(this.endpoints, security);
    // A failed load is reported by #run()'s first attempt.
    this.#client.catch(() => undefined);
    this.#loop = this.#run();
  }

  get state(): RegistrationState {
    return this.#state;
  }

  /** The current lease id (decimal string), while registered. */
  get leaseId(): string | undefined {
    return this.#state === 'registered' ? this.#leaseId : undefined;
  }

  /** When etcd last confirmed the lease (ms since epoch): the registration or its latest keepalive. */
  get lastKeepaliveAt(): number | undefined {
    return this.#lastKeepaliveAt;
  }

  get info(): WorkerInfo {
    return this.#info;
  }

  /**
   * Resolves when the key is in etcd (at once if it is now). Rejects on a terminal
   * error, on close, or with `signal.reason`.
   */
  async whenRegistered(options: { signal?: AbortSignal | undefined } = {}): Promise<void> {
    this.#assertOpen();
    if (this.#state === 'registered') return;
    if (this.#failure) throw this.#failure;
    let waiter: { resolve: () => void; reject: (e: unknown) => void } | undefined;
    const registered = new Promise<void>((resolve, reject) => {
      waiter = { resolve, reject };
      this.#waiters.add(waiter);
    });
    try {
      await abortable(registered, options.signal);
    } finally {
      if (waiter) this.#waiters.delete(waiter);
    }
  }

  /**
   * Publish new info (same id). Written at once when registered; otherwise kept and
   * written by the next registration. Rejects with UnavailableError when etcd cannot
   * take it now (the info is still kept for the next registration).
   */
  async update(info: WorkerInfo, options: { signal?: AbortSignal | undefined } = {}): Promise<void> {
    this.#assertOpen();
    const next = validateWorkerInfo(info);
    if (next.id !== this.#info.id) {
      throw new InvalidArgumentError(
        `update() cannot change the worker id (registered as ${JSON.stringify(this.#info.id)}, got ${JSON.stringify(next.id)}); close and register anew`,
      );
    }
    if (options.signal?.aborted) throw options.signal.reason;
    this.#info = next;
    const lease = this.#lease;
    if (this.#state !== 'registered' || lease === undefined) return;
    try {
      await abortable(this.#put(lease, next), options.signal);
    } catch (err) {
      if (options.signal?.aborted) throw err;
      if (this.#stop.signal.aborted) throw new ClosedError(`registration of ${this.key} was closed while updating it`, { cause: err });
      throw etcdError(err, this.endpoints, `updating ${this.key}`);
    }
  }

  /**
   * Revoke the lease so clients drop this worker at once, then disconnect. If etcd
   * cannot be reached the key expires with its TTL instead. `whenRegistered()` waiters
   * and updates in flight reject with `GRANARY_ERR_CLOSED`. Resolves once the
   * registration loop, the lease's keepalives and the etcd client have all stopped.
   * Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown(new ClosedError(`registration of ${this.key} was closed`), true);
    return this.#closing;
  }

  /**
   * Stop at once, like a crash: keepalives stop and the client disconnects, but the
   * lease is not revoked, so clients drop this worker only when its TTL runs out.
   * `whenRegistered()` waiters reject with `err`. Idempotent (a no-op after `close()`).
   */
  destroy(err?: Error): Promise<void> {
    this.#closing ??= this.#shutdown(err ?? new ClosedError(`registration of ${this.key} was destroyed`), false);
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #shutdown(reason: Error, graceful: boolean): Promise<void> {
    const wasFailed = this.#state === 'failed';
    this.#state = 'closed';
    this.#stop.abort(reason);
    this.#settle(reason);
    const lease = this.#lease;
    this.#lease = undefined;
    let revoked = false;
    if (lease !== undefined) {
      lease.removeAllListeners();
      if (graceful) {
        try {
          await lease.revoke({ deadline: Date.now() + this.#requestTimeoutMs });
          revoked = true;
        } catch {
          // etcd unreachable: the lease (and key) expire after ttlSeconds on their own.
          lease.release();
        }
      } else {
        lease.release();
      }
    }
    await this.#loop;
    await Promise.all([...this.#revoking]);
    if (graceful) {
      // Belt and braces: a lease granted by a re-registration racing this close, a revoke
      // etcd acknowledged late, or one that timed out on a loaded machine while etcd was
      // there, must not leave the key behind for a TTL. Delete it if it still holds what
      // this registration wrote (never another worker's); if etcd is unreachable this
      // fails within the request timeout and the key expires with its lease.
      try {
        const deadline = Date.now() + this.#requestTimeoutMs;
        const client = await this.#client;
        const current = await client.get(this.key).options({ deadline }).string();
        if (current !== null && current === this.#lastWritten) await client.delete().key(this.key).options({ deadline }).exec();
      } catch {
        // etcd unreachable: the key expires with its lease.
      }
    }
    (await this.#client.catch(() => undefined))?.close();
    if (registrationChannels.closed.hasSubscribers) {
      registrationChannels.closed.publish({ ...this.#tag(), revoked, failed: wasFailed });
    }
  }

  #assertOpen(): void {
    if (this.#stop.signal.aborted) throw new ClosedError(`registration of ${this.key} was closed`);
  }

  #tag(): { cluster: string; id: string; key: string } {
    return { cluster: this.cluster, id: this.#info.id, key: this.key };
  }

  #settle(err?: unknown): void {
    for (const w of this.#waiters) {
      if (err === undefined) w.resolve();
      else w.reject(err);
    }
    this.#waiters.clear();
  }

  #fail(e: GranaryError): void {
    this.#state = 'failed';
    this.#failure = e;
    this.#settle(e);
    if (this.listenerCount('failed') > 0) this.emit('failed', e);
  }

  #put(lease: Lease, info: WorkerInfo): Promise<unknown> {
    const value = encodeWorkerInfo(info);
    this.#lastWritten = value;
    return lease
      .put(this.key)
      .value(value)
      .options({ deadline: Date.now() + this.#requestTimeoutMs })
      .exec();
  }

  async #run(): Promise<void> {
    const stop = this.#stop.signal;
    let client: Etcd3;
    try {
      client = await this.#client;
    } catch (err) {
      this.#fail(new InternalError(`Registering ${this.key}: the etcd client could not be loaded: ${String(err)}`, { cause: err }));
      return;
    }
    while (!stop.aborted) {
      let registered: { lease: Lease; lost: Promise<Error> };
      try {
        registered = await retry(() => this.#register(client), {
          ...ETCD_BACKOFF,
          attempts: Infinity,
          signal: stop,
          retryable: (err) => !this.#registerFailed(err),
        });
      } catch {
        // Closed, or a terminal failure #registerFailed has reported.
        return;
      }
      let err: Error;
      try {
        err = await abortable(registered.lost, stop);
      } catch {
        return;
      }
      const lease = registered.lease;
      lease.removeAllListeners();
      lease.release();
      this.#lease = undefined;
      this.#leaseId = undefined;
      this.#state = 'registering';
      if (registrationChannels.lost.hasSubscribers) {
        registrationChannels.lost.publish({ ...this.#tag(), error: err });
      }
      this.emit('lost', err);
    }
  }

  /** One attempt: grant a lease, put the key under it. Resolves once registered, with a promise of the lease's loss. */
  async #register(client: Etcd3): Promise<{ lease: Lease; lost: Promise<Error> }> {
    const stop = this.#stop.signal;
    // Grant options carry the deadline; etcd3 keeps it off the keepalive stream.
    const lease = client.lease(this.ttlSeconds, { deadline: Date.now() + this.#requestTimeoutMs });
    const lost = new Promise<Error>((resolve) => {
      lease.on('lost', resolve);
    });
    lease.on('keepaliveSucceeded', () => {
      if (lease === this.#lease) this.#lastKeepaliveAt = Date.now();
    });
    // etcd3 types this handler's argument as a keepalive response; it is the error.
    lease.on('keepaliveFailed', (res: unknown) => {
      if (lease !== this.#lease) return;
      const err = res instanceof Error ? res : new Error(String(res));
      if (registrationChannels.keepaliveFailed.hasSubscribers) {
        registrationChannels.keepaliveFailed.publish({ ...this.#tag(), error: err });
      }
      this.emit('keepaliveFailed', err);
    });
    try {
      // Re-put if update() changed the info while this put was in flight.
      let written: WorkerInfo;
      do {
        written = this.#info;
        await this.#put(lease, written);
      } while (written !== this.#info && !stop.aborted);
      const id = await lease.grant();
      if (stop.aborted) throw stop.reason;
      this.#lease = lease;
      this.#leaseId = id;
      this.#lastKeepaliveAt = Date.now();
      this.#state = 'registered';
      if (registrationChannels.registered.hasSubscribers) {
        registrationChannels.registered.publish({ ...this.#tag(), leaseId: id, ttlSeconds: this.ttlSeconds });
      }
      this.emit('registered', id);
      this.#settle();
      return { lease, lost };
    } catch (err) {
      lease.removeAllListeners();
      // The grant may have succeeded and the put failed: free it rather than leave it to
      // expire. Not awaited, so a black-holed etcd does not slow the next attempt; close()
      // waits for it.
      const revoking = lease.revoke({ deadline: Date.now() + this.#requestTimeoutMs }).then(
        () => undefined,
        () => lease.release(),
      );
      this.#revoking.add(revoking);
      void revoking.finally(() => this.#revoking.delete(revoking));
      throw err;
    }
  }

  /** Report a failed attempt; true when it is terminal (the registration has then failed). */
  #registerFailed(err: unknown): boolean {
    const e = etcdError(err, this.endpoints, `registering ${this.key}`);
    const terminal = isTerminalEtcdError(err);
    if (registrationChannels.error.hasSubscribers) {
      registrationChannels.error.publish({ ...this.#tag(), error: e, terminal });
    }
    if (terminal) this.#fail(e);
    return terminal;
  }
}

/**
 * Register a worker and wait until its key is in etcd.
 *
 * @example
 * const reg = await registerWorker({ endpoints: ['http://127.0.0.1:2379'], cluster: 'prod',
 *   info: { id: 'w1', url: 'http://10.0.0.5:7070', capacityBytes: 8 << 30 }, ttlSeconds: 10 });
 * reg.on('lost', (err) => log('left the ring, re-registering', err));
 * await reg.close(); // revokes: clients drop the worker at once
 *
 * While etcd is unreachable this keeps trying until `signal` aborts; use
 * `new Registration(options)` to register in the background instead.
 */
export async function registerWorker(options: RegisterWorkerOptions): Promise<Registration> {
  if (options?.signal?.aborted) throw options.signal.reason;
  const reg = new Registration(options);
  try {
    await reg.whenRegistered({ signal: options.signal });
  } catch (err) {
    await reg.close();
    throw err;
  }
  return reg;
}

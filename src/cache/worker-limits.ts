/**
 * What one client (or a slow or hostile peer) may cost a worker: how long it may take
 * to send a request's headers and the whole request, and how many requests it may
 * have in flight, on one connection and in total. The excess is answered at once with
 * 503 `GRANARY_ERR_BUSY` and `Retry-After`, which clients take as "read this part
 * from the store": a busy worker sheds load instead of queueing it without bound.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Counter, type Registry } from 'prom-client';
import { InvalidArgumentError, WorkerBusyError } from '../errors.js';
import { optionalInt } from '../util/validate.js';

export interface WorkerLimitOptions {
  /**
   * A connection must send a request's headers within this long, or it is answered
   * 408 and closed (a connection trickling its headers, "slowloris", holds nothing else up).
   * @default 10_000
   */
  headersTimeoutMs?: number;
  /** A connection must send a whole request (headers and body) within this long. At least `headersTimeoutMs`. @default 60_000 */
  requestTimeoutMs?: number;
  /**
   * Requests handled at once, over all connections (`/healthz` and `/metrics` are not
   * counted). The excess is answered 503 `GRANARY_ERR_BUSY` with `Retry-After`.
   * @default 1024
   */
  maxConcurrentRequests?: number;
  /** Requests handled at once on one connection (HTTP/1.1 pipelining). The excess is answered like the above. @default 16 */
  maxRequestsPerConnection?: number;
}

export interface LimitSettings {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  maxConcurrentRequests: number;
  maxRequestsPerConnection: number;
}

/** The limits, checked, with their defaults. */
export function limitSettings(o: WorkerLimitOptions): LimitSettings {
  const s: LimitSettings = {
    headersTimeoutMs: optionalInt('headersTimeoutMs', o.headersTimeoutMs, 10_000),
    requestTimeoutMs: optionalInt('requestTimeoutMs', o.requestTimeoutMs, 60_000),
    maxConcurrentRequests: optionalInt('maxConcurrentRequests', o.maxConcurrentRequests, 1024),
    maxRequestsPerConnection: optionalInt('maxRequestsPerConnection', o.maxRequestsPerConnection, 16),
  };
  if (s.requestTimeoutMs < s.headersTimeoutMs) {
    throw new InvalidArgumentError(`Expected \`requestTimeoutMs\` (${s.requestTimeoutMs}) to be at least \`headersTimeoutMs\` (${s.headersTimeoutMs}): the headers are part of the request`);
  }
  return s;
}

/**
 * Server options for the timeouts. Node checks them on a timer
 * (`connectionsCheckingInterval`, 30 s by default): a quarter of the headers timeout
 * keeps an expired connection from living much past it.
 */
export function serverLimitOptions(s: LimitSettings): { connectionsCheckingInterval: number; headersTimeout: number; requestTimeout: number } {
  return {
    connectionsCheckingInterval: Math.max(50, Math.min(5000, Math.floor(s.headersTimeoutMs / 4))),
    headersTimeout: s.headersTimeoutMs,
    requestTimeout: s.requestTimeoutMs,
  };
}

/** Set the timeouts on a server (they are properties as well as constructor options). */
export function applyServerLimits(server: Server, s: LimitSettings): void {
  server.headersTimeout = s.headersTimeoutMs;
  server.requestTimeout = s.requestTimeoutMs;
}

/** Seconds a client is told to wait before it sends this worker more (`Retry-After`). */
export const RETRY_AFTER_SECONDS = 1;

/** Counts requests in flight, per connection and in total, and turns away the excess. */
export class RequestLimiter {
  readonly #s: LimitSettings;
  readonly #perSocket = new WeakMap<Socket, number>();
  readonly #busy: Counter<'limit'>;
  #inFlight = 0;

  constructor(settings: LimitSettings, registry: Registry) {
    this.#s = settings;
    this.#busy = new Counter({
      name: 'granary_worker_busy_total',
      help: 'Requests answered 503 GRANARY_ERR_BUSY because a concurrency limit was reached, by limit (total, connection)',
      labelNames: ['limit'],
      registers: [registry],
    });
  }

  /** Requests being handled now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Count a request in, until its response closes; over a limit, set `Retry-After` and
   * throw `GRANARY_ERR_BUSY` (the caller answers it like any coded error).
   */
  admit(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    const onSocket = this.#perSocket.get(socket) ?? 0;
    let limit: 'total' | 'connection' | undefined;
    if (onSocket >= this.#s.maxRequestsPerConnection) limit = 'connection';
    else if (this.#inFlight >= this.#s.maxConcurrentRequests) limit = 'total';
    if (limit !== undefined) {
      this.#busy.inc({ limit });
      res.setHeader('retry-after', String(RETRY_AFTER_SECONDS));
      const n = limit === 'total' ? `${this.#inFlight} requests in flight (maxConcurrentRequests ${this.#s.maxConcurrentRequests})` : `${onSocket} requests in flight on this connection (maxRequestsPerConnection ${this.#s.maxRequestsPerConnection})`;
      throw new WorkerBusyError(`Worker is busy: ${n}; retry after ${RETRY_AFTER_SECONDS} s or read the store`);
    }
    this.#inFlight++;
    this.#perSocket.set(socket, onSocket + 1);
    res.once('close', () => {
      this.#inFlight--;
      const left = (this.#perSocket.get(socket) ?? 1) - 1;
      if (left > 0) this.#perSocket.set(socket, left);
      else this.#perSocket.delete(socket);
    });
  }
}

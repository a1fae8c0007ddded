/**
 * An HTTP/1.1 reverse proxy that injects faults into chosen requests: what a store does
 * under load or on a bad link, as the byte-level TCP proxy (`fault-proxy.ts`) cannot,
 * because these faults depend on where one response begins and ends.
 *
 * Faults are queued with `inject(fault, { times, match })`: each matching request takes
 * the next queued fault until its count is spent; other requests are forwarded as they
 * are. Built-in faults: `slowDown` (an S3 `503 SlowDown`, with `Retry-After: 0`),
 * `resetMidBody` (the status, headers and half the body, then a TCP reset) and `hold`
 * (the request waits until the test releases it). A fault is a function, so others
 * (flipping bytes in a body, say) live in their own files.
 *
 * The request's `Host` header is forwarded unchanged, so S3 signatures made for the
 * proxy's address still verify at the target.
 *
 * @example
 * const store = await startHttpFaultProxy({ target: { host: '127.0.0.1', port: s3.port } });
 * store.inject(slowDown(), { times: 3, match: isObjectGet });  // the next 3 GETs of objects get 503
 * store.inject(resetMidBody(), { times: 1 });                 // the next request is cut mid-body
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import { ClosedError } from '../errors.js';
import { checkInt, checkString } from '../util/validate.js';

/** One proxied exchange, as a fault sees it. */
export interface HttpExchange {
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  /** Forward the request to the target; resolves with its response, whose body is not yet read. */
  readonly forward: () => Promise<http.IncomingMessage>;
  /** Send the target's response to the client unchanged (status, headers, body). */
  readonly pipe: (upstream: http.IncomingMessage) => Promise<void>;
}

/** A fault: answers the exchange in its own way. Counted in `stats().injected[name]`. */
export interface HttpFault {
  readonly name: string;
  readonly apply: (x: HttpExchange) => Promise<void>;
}

/** Which requests a queued fault applies to. */
export type RequestMatch = (req: http.IncomingMessage) => boolean;

export interface InjectOptions {
  /** How many matching requests get the fault. @default 1 */
  times?: number;
  /** Requests it applies to. @default every request */
  match?: RequestMatch;
}

export interface HttpFaultProxyOptions {
  target: { host: string; port: number };
  /** @default '127.0.0.1' */
  host?: string;
  /** @default 0 (ephemeral) */
  port?: number;
}

export interface HttpFaultProxyStats {
  /** Requests received. */
  requests: number;
  /** Requests forwarded untouched. */
  forwarded: number;
  /** Faults applied, by fault name. */
  injected: Record<string, number>;
}

export interface HttpFaultProxy extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  /** Queue `fault` for the next `times` requests that `match`. */
  inject(fault: HttpFault, options?: InjectOptions): void;
  /** Faults still queued (counts not yet spent). */
  pending(): number;
  /** Drop every queued fault. */
  clear(): void;
  stats(): HttpFaultProxyStats;
  close(): Promise<void>;
}

/** GETs of objects (not bucket listings): the reads a loader makes. */
export const isObjectGet: RequestMatch = (req) => req.method === 'GET' && /^\/[^/?]+\/[^?]+/.test(req.url ?? '');

/** Requests for one object key (`bucket/key`), any method. */
export function forObject(bucket: string, key: string): RequestMatch {
  const path = `/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  return (req) => (req.url ?? '').split('?')[0] === path;
}

const SLOW_DOWN_BODY =
  '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>granary-fault</RequestId></Error>';

/** An S3 throttle: `503 SlowDown`, without touching the target. */
export function slowDown(): HttpFault {
  return {
    name: 'slowDown',
    apply: ({ req, res }) => {
      req.resume();
      res.writeHead(503, { 'content-type': 'application/xml', 'retry-after': '0', 'content-length': Buffer.byteLength(SLOW_DOWN_BODY) });
      res.end(SLOW_DOWN_BODY);
      return Promise.resolve();
    },
  };
}

/**
 * The target's status, headers and the first half of its body (at least one byte when
 * there is a body), then a TCP reset: a connection lost mid-transfer.
 */
export function resetMidBody(): HttpFault {
  return {
    name: 'resetMidBody',
    apply: async ({ res, forward }) => {
      const up = await forward();
      const length = Number(up.headers['content-length'] ?? 0);
      const keep = Math.max(1, Math.floor(length / 2));
      res.writeHead(up.statusCode ?? 502, up.headers);
      res.flushHeaders();
      let sent = 0;
      const socket = res.socket;
      for await (const chunk of up as AsyncIterable<Buffer>) {
        const piece = chunk.subarray(0, Math.max(0, keep - sent));
        if (piece.byteLength > 0) {
          sent += piece.byteLength;
          await new Promise<void>((resolve) => (socket ? socket.write(piece, () => resolve()) : resolve()));
        }
        if (sent >= keep) break;
      }
      up.destroy();
      if (socket && !socket.destroyed) socket.resetAndDestroy();
    },
  };
}

/** A request held until `release()`; `arrived` resolves when the first one is held. */
export interface HoldFault extends HttpFault {
  readonly arrived: Promise<void>;
  /** Let every held request (and any later one this fault takes) through. */
  readonly release: () => void;
}

/** Hold matching requests until `release()`, then forward them as they are. */
export function hold(): HoldFault {
  let arrive!: () => void;
  let release!: () => void;
  const arrived = new Promise<void>((resolve) => (arrive = resolve));
  const released = new Promise<void>((resolve) => (release = resolve));
  return {
    name: 'hold',
    arrived,
    release,
    apply: async ({ forward, pipe }) => {
      arrive();
      await released;
      await pipe(await forward());
    },
  };
}

interface Queued {
  fault: HttpFault;
  left: number;
  match: RequestMatch;
}

class HttpFaultProxyImpl implements HttpFaultProxy {
  port = 0;
  readonly #host: string;
  readonly #target: { host: string; port: number };
  readonly #server: http.Server;
  readonly #agent = new http.Agent({ keepAlive: true });
  readonly #queue: Queued[] = [];
  readonly #sockets = new Set<Socket>();
  readonly #stats: HttpFaultProxyStats = { requests: 0, forwarded: 0, injected: {} };
  #closing: Promise<void> | undefined;

  constructor(options: HttpFaultProxyOptions) {
    const t = options.target as Partial<HttpFaultProxyOptions['target']> | undefined;
    this.#target = { host: checkString('target.host', t?.host), port: checkInt('target.port', t?.port, 1, 65535) };
    this.#host = options.host ?? '127.0.0.1';
    this.#server = http.createServer((req, res) => void this.#handle(req, res));
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
    });
  }

  get url(): string {
    return `http://${this.#host}:${this.port}`;
  }

  async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, this.#host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const addr = this.#server.address();
    if (addr && typeof addr === 'object') this.port = addr.port;
  }

  inject(fault: HttpFault, options: InjectOptions = {}): void {
    if (this.#closing) throw new ClosedError(`HTTP fault proxy on ${this.url} is closed (called inject)`);
    const times = checkInt('times', options.times ?? 1, 1);
    this.#queue.push({ fault, left: times, match: options.match ?? (() => true) });
  }

  pending(): number {
    return this.#queue.reduce((a, q) => a + q.left, 0);
  }

  clear(): void {
    this.#queue.length = 0;
  }

  stats(): HttpFaultProxyStats {
    return { ...this.#stats, injected: { ...this.#stats.injected } };
  }

  #take(req: http.IncomingMessage): HttpFault | undefined {
    const i = this.#queue.findIndex((q) => q.match(req));
    const q = this.#queue[i];
    if (!q) return undefined;
    if (--q.left === 0) this.#queue.splice(i, 1);
    return q.fault;
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.#stats.requests++;
    const fault = this.#take(req);
    const x = this.#exchange(req, res);
    try {
      if (fault) {
        this.#stats.injected[fault.name] = (this.#stats.injected[fault.name] ?? 0) + 1;
        await fault.apply(x);
      } else {
        this.#stats.forwarded++;
        await x.pipe(await x.forward());
      }
    } catch {
      // The target failed or the client went away: the client sees a reset, as it would without the proxy.
      res.socket?.resetAndDestroy();
    }
  }

  #exchange(req: http.IncomingMessage, res: http.ServerResponse): HttpExchange {
    const forward = (): Promise<http.IncomingMessage> =>
      new Promise((resolve, reject) => {
        const up = http.request(
          { host: this.#target.host, port: this.#target.port, method: req.method, path: req.url, headers: req.headers, agent: this.#agent },
          resolve,
        );
        up.once('error', reject);
        req.pipe(up);
      });
    const pipe = (up: http.IncomingMessage): Promise<void> =>
      new Promise((resolve, reject) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.once('error', reject);
        res.once('close', () => resolve());
        up.pipe(res);
      });
    return { req, res, forward, pipe };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#queue.length = 0;
      for (const s of this.#sockets) s.destroy();
      this.#agent.destroy();
      await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Start an HTTP fault proxy on 127.0.0.1 (ephemeral port) in front of `target`. */
export async function startHttpFaultProxy(options: HttpFaultProxyOptions): Promise<HttpFaultProxy> {
  const proxy = new HttpFaultProxyImpl(options);
  await proxy.listen(options.port ?? 0);
  return proxy;
}

/**
 * A TCP proxy that sits in front of any loopback server and injects network faults:
 * latency per direction, at connect and before the first byte of each response,
 * bandwidth caps per connection and in total (token buckets), and on command
 * stalls, resets, refused connections and one-way partitions.
 *
 * The kernel here has no `netem`, so this is how `granary demo` and the benches
 * emulate a cloud store (s3rver behind `PROFILES.emulatedCloud`) and how fault tests
 * break the network. (`test/support/fault-proxy.ts` re-exports it for the tests.)
 * With `countRequests` it also counts the HTTP requests clients send, by kind (GET,
 * ranged GET, HEAD, LIST, PUT, other): the store requests a bench reports.
 *
 * @example
 * const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: s3.port }, ...PROFILES.emulatedCloud });
 * const s3 = new S3Ufs({ endpoint: proxy.url, ... });
 * proxy.cut('down');            // a partition: requests go out, nothing comes back
 * proxy.cut(null);
 * proxy.resetAll();             // every open connection gets an RST
 * await proxy.close();
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { checkInt, checkString } from '../util/validate.js';
import { BodyFlipper, type BodyFlipOptions } from './body-flip.js';
import { emptyRequestCounts, HttpRequestCounter, type StoreRequestCounts } from './http-requests.js';

export type { BodyFlipOptions } from './body-flip.js';

export type { StoreRequestCounts } from './http-requests.js';

/** Network conditions; every field is live-changeable with `proxy.set()`. 0 means "none" / "unlimited". */
export interface FaultProfile {
  /** Delay added to every chunk going client -> server, in ms. Pipelined: it adds latency, not a throughput cap. @default 0 */
  upLatencyMs?: number;
  /** Delay added to every chunk going server -> client, in ms. @default 0 */
  downLatencyMs?: number;
  /** Delay between accepting a client and connecting to the target, in ms. Nothing flows meanwhile. @default 0 */
  connectLatencyMs?: number;
  /**
   * Delay of the first downstream bytes after each upstream chunk, in ms: a store's
   * time-to-first-byte per request, also on keep-alive connections. @default 0
   */
  firstByteLatencyMs?: number;
  /** Bandwidth cap of each connection, each direction, in bytes per second. @default 0 (unlimited) */
  bandwidthPerConnBps?: number;
  /** Bandwidth cap of all connections together, each direction, in bytes per second. @default 0 (unlimited) */
  totalBandwidthBps?: number;
}

type Settings = Required<FaultProfile>;

const NO_FAULTS: Settings = {
  upLatencyMs: 0,
  downLatencyMs: 0,
  connectLatencyMs: 0,
  firstByteLatencyMs: 0,
  bandwidthPerConnBps: 0,
  totalBandwidthBps: 0,
};

/** Named network profiles. Name the profile in every bench table that uses one. */
export const PROFILES = {
  /** A plain pass-through. `proxy.set(PROFILES.none)` clears every setting. */
  none: { ...NO_FAULTS },
  /**
   * A cloud object store seen from a VM in the same region, as `npm run bench -- peers`
   * measures it: 20 ms to first byte, 100 MB/s per connection, 400 MB/s in total.
   */
  sameRegion: { ...NO_FAULTS, firstByteLatencyMs: 20, bandwidthPerConnBps: 100e6, totalBandwidthBps: 400e6 },
  /** A cloud object store seen from a VM in the same region: 20 ms to first byte, 50 MB/s per connection. */
  emulatedCloud: { ...NO_FAULTS, firstByteLatencyMs: 20, bandwidthPerConnBps: 50e6 },
  /**
   * A cloud store as one training job on a shared node sees it: the `emulatedCloud`
   * latency and per-connection cap, plus a total cap on all of the job's connections
   * together, its share of the node's link to the store (other jobs, other ranks and
   * checkpoint traffic use the rest). Parallel connections no longer add up to more
   * bandwidth than the link has, so a job whose step consumes data faster than that
   * share waits on the store, as real jobs do. `granary demo` uses it by default.
   */
  trainingNode: { ...NO_FAULTS, firstByteLatencyMs: 20, bandwidthPerConnBps: 50e6, totalBandwidthBps: 25e6 },
  /** A cross-region store: 80 ms to first byte, 30 MB/s per connection, 120 MB/s in total. */
  crossRegion: { ...NO_FAULTS, firstByteLatencyMs: 80, bandwidthPerConnBps: 30e6, totalBandwidthBps: 120e6 },
  /** A slow, congested link: 50 ms each way, 1 MB/s per connection. */
  slowLink: { ...NO_FAULTS, upLatencyMs: 50, downLatencyMs: 50, connectLatencyMs: 50, bandwidthPerConnBps: 1e6 },
} as const satisfies Record<string, Settings>;

/** The name of one of `PROFILES`. */
export type ProfileName = keyof typeof PROFILES;
/** The names of `PROFILES`, in their order: what `granary demo --profile` accepts. */
export const PROFILE_NAMES = Object.keys(PROFILES) as ProfileName[];

export type FaultDirection = 'up' | 'down';
export type CutMode = FaultDirection | 'both' | null;
/**
 * How refused connections look to a client: `reset` accepts and sends an RST
 * (ECONNRESET), `close` accepts and closes at once (socket hang up / EOF),
 * `unlisten` stops listening (ECONNREFUSED; the port is re-bound on `refuse(false)`).
 */
export type RefuseMode = 'reset' | 'close' | 'unlisten';

export interface FaultProxyOptions extends FaultProfile {
  /** The server to forward to. */
  target: { host: string; port: number };
  /** Address to listen on; loopback only. @default '127.0.0.1' */
  host?: string;
  /** Port to listen on. @default 0 (ephemeral) */
  port?: number;
  /**
   * Parse the HTTP/1.1 requests clients send and count them by kind (`stats().requests`):
   * for benches that report store requests. @default false (no parsing cost)
   */
  countRequests?: boolean;
  /**
   * Flip one byte in the bodies of HTTP responses (src/netem/body-flip.ts) from the start;
   * `flipBodies()` changes it later. Connections are followed only while this or
   * `flipBodies()` has been set when they were accepted. @default off
   */
  flipBodies?: BodyFlipOptions;
}

export interface FaultProxyStats {
  /** Client connections accepted and proxied, since start. */
  connections: number;
  /** Proxied connections open now. */
  activeConnections: number;
  /** Client connections refused (accepted and closed or reset) while `refuse` was on. */
  refused: number;
  /** Bytes forwarded client -> target. Dropped (cut) bytes are not counted. */
  bytesUp: number;
  /** Bytes forwarded target -> client. */
  bytesDown: number;
  /** Bytes dropped by `cut('up')` / `cut('down')`. */
  droppedUp: number;
  droppedDown: number;
  /** Response bodies with a byte flipped by `flipBodies`. */
  flippedBodies: number;
  /** HTTP requests clients sent, by kind; all 0 unless the proxy was started with `countRequests`. */
  requests: StoreRequestCounts;
}

export interface FaultProxy {
  readonly host: string;
  readonly port: number;
  /** `http://host:port`, for HTTP clients (an S3 endpoint, an HTTP store). */
  readonly url: string;
  readonly target: { host: string; port: number };
  /** Change settings live (merged into the current ones); applies to chunks forwarded from now on. */
  set(profile: FaultProfile): void;
  /** The current settings. */
  settings(): Settings;
  /** Hold all traffic, both directions, on every connection, until `resume()`. Sockets stay open. */
  stall(): void;
  resume(): void;
  /** Send an RST on every open connection, both to the client and to the target. */
  resetAll(): void;
  /** Refuse new connections (`on`), or accept them again. Open connections are untouched. */
  refuse(on: boolean, mode?: RefuseMode): Promise<void>;
  /** Silently drop bytes in one direction (or both): a partition. `null` heals it. */
  cut(direction: CutMode): void;
  /**
   * Flip one byte in the middle of HTTP response bodies (every Nth one of the content
   * type, per connection), on connections accepted from now on and on those already
   * followed; `null` stops flipping.
   */
  flipBodies(options: BodyFlipOptions | null): void;
  stats(): FaultProxyStats;
  /** Stop listening and destroy every connection. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Pause reading a socket when this many bytes wait in the proxy for one direction. */
const HIGH_WATER = 1024 * 1024;
/** With a bandwidth cap, chunks are forwarded in pieces of at most this size, to keep the rate smooth. */
const PIECE = 64 * 1024;
/**
 * Token-bucket debts below this are carried rather than slept off: setTimeout cannot
 * sleep less than ~1 ms, and sleeping per small piece would cap throughput far below
 * the configured rate.
 */
const MIN_SLEEP_MS = 4;

function checkProfile(p: FaultProfile): void {
  for (const [k, v] of Object.entries(p)) {
    if (!(k in NO_FAULTS)) throw new InvalidArgumentError(`Unknown fault proxy setting \`${k}\` (known: ${Object.keys(NO_FAULTS).join(', ')})`);
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new InvalidArgumentError(`Expected \`${k}\` to be a finite number from 0 and up, got \`${String(v)}\` (${typeof v})`);
    }
  }
}

function checkFlip(o: BodyFlipOptions): BodyFlipOptions {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError(`Expected body flip options to be an object, got \`${String(o)}\``);
  if (o.every !== undefined) checkInt('every', o.every, 1);
  if (o.contentType !== undefined) checkString('contentType', o.contentType);
  return { ...o };
}

/** Sleep until `performance.now() >= deadline`; never wakes early (timers may fire up to 1 ms early). */
async function sleepUntil(deadline: number): Promise<void> {
  for (let left = deadline - performance.now(); left > 0; left = deadline - performance.now()) {
    await sleep(Math.ceil(left));
  }
}

/** A token bucket allowing debt: each take returns how long the caller must wait to stay under the rate. */
class TokenBucket {
  #tokens = 0;
  #last = performance.now();
  readonly #rate: () => number;

  constructor(rate: () => number) {
    this.#rate = rate;
  }

  /** ms to wait before sending `n` bytes (0 when unlimited). */
  take(n: number): number {
    const rate = this.#rate();
    const now = performance.now();
    if (!(rate > 0)) {
      this.#tokens = 0;
      this.#last = now;
      return 0;
    }
    const burst = Math.max(PIECE, rate * 0.02);
    this.#tokens = Math.min(burst, this.#tokens + ((now - this.#last) * rate) / 1000);
    this.#last = now;
    this.#tokens -= n;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / rate) * 1000;
  }
}

interface Chunk {
  bytes: Buffer;
  /** performance.now() when the proxy received it. */
  at: number;
}

class Connection {
  readonly client: net.Socket;
  upstream: net.Socket | undefined;
  closed = false;
  /** Set when an upstream chunk was forwarded and no downstream byte followed yet. */
  awaitingFirstByte = false;
  readonly buckets: Record<FaultDirection, TokenBucket>;
  readonly pipes: Record<FaultDirection, Pipe>;
  readonly upstreamReady: Promise<net.Socket | undefined>;
  /** Follows the responses when body flipping was on at accept. */
  readonly flipper: BodyFlipper | undefined;
  #resolveUpstream!: (s: net.Socket | undefined) => void;

  constructor(
    readonly proxy: FaultProxyImpl,
    client: net.Socket,
  ) {
    this.client = client;
    this.upstreamReady = new Promise((resolve) => (this.#resolveUpstream = resolve));
    this.buckets = {
      up: new TokenBucket(() => proxy.current.bandwidthPerConnBps),
      down: new TokenBucket(() => proxy.current.bandwidthPerConnBps),
    };
    this.pipes = { up: new Pipe(this, 'up'), down: new Pipe(this, 'down') };
    this.flipper = proxy.flipping === undefined ? undefined : new BodyFlipper(() => proxy.flipping ?? null, () => proxy.flipped());
  }

  start(): void {
    const { client } = this;
    client.setNoDelay(true);
    const counter = this.proxy.requestCounts ? new HttpRequestCounter(this.proxy.requestCounts) : undefined;
    client.on('data', (b: Buffer) => {
      counter?.push(b);
      this.pipes.up.push(b);
    });
    client.on('end', () => this.pipes.up.end());
    client.on('error', () => this.abort(true));
    client.on('close', (hadError) => this.abort(hadError));
    void this.#connect();
  }

  async #connect(): Promise<void> {
    const delay = this.proxy.current.connectLatencyMs;
    if (delay > 0) await sleepUntil(performance.now() + delay);
    if (this.closed) return this.#resolveUpstream(undefined);
    const up = net.connect({ host: this.proxy.target.host, port: this.proxy.target.port, allowHalfOpen: true });
    this.upstream = up;
    up.setNoDelay(true);
    up.on('data', (b: Buffer) => this.pipes.down.push(b));
    up.on('end', () => this.pipes.down.end());
    up.on('error', () => {
      // The target failed (refused, reset): the client sees a reset, as it would without the proxy.
      if (!this.closed) this.reset();
    });
    up.on('close', (hadError) => {
      if (hadError && !this.closed) this.reset();
    });
    up.once('connect', () => this.#resolveUpstream(up));
    up.once('close', () => this.#resolveUpstream(undefined));
  }

  /** Socket on the far side of a direction: where its bytes go. */
  destination(dir: FaultDirection): net.Socket | undefined {
    return dir === 'up' ? this.upstream : this.client;
  }

  source(dir: FaultDirection): net.Socket | undefined {
    return dir === 'up' ? this.client : this.upstream;
  }

  reset(): void {
    if (this.closed) return;
    this.#finish();
    resetSocket(this.client);
    if (this.upstream) resetSocket(this.upstream);
  }

  abort(hadError: boolean): void {
    if (this.closed) return;
    if (hadError) return this.reset();
    this.#finish();
    this.client.destroy();
    this.upstream?.destroy();
  }

  destroy(): void {
    if (this.closed) return;
    this.#finish();
    this.client.destroy();
    this.upstream?.destroy();
  }

  #finish(): void {
    this.closed = true;
    this.#resolveUpstream(undefined);
    this.proxy.connections.delete(this);
  }
}

function resetSocket(s: net.Socket): void {
  if (s.destroyed) return;
  try {
    s.resetAndDestroy();
  } catch {
    s.destroy();
  }
}

/** One direction of one connection: a queue of chunks and the pump that forwards them under the current faults. */
class Pipe {
  readonly #queue: Chunk[] = [];
  #queued = 0;
  #running = false;
  #ended = false;
  #paused = false;

  constructor(
    readonly conn: Connection,
    readonly dir: FaultDirection,
  ) {}

  push(bytes: Buffer): void {
    if (this.conn.closed) return;
    this.#queue.push({ bytes, at: performance.now() });
    this.#queued += bytes.byteLength;
    if (this.#queued > HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.conn.source(this.dir)?.pause();
    }
    this.#kick();
  }

  end(): void {
    this.#ended = true;
    this.#kick();
  }

  #kick(): void {
    if (this.#running) return;
    this.#running = true;
    this.#run()
      .catch(() => this.conn.reset())
      .finally(() => {
        this.#running = false;
      });
  }

  async #run(): Promise<void> {
    const { conn, dir } = this;
    const proxy = conn.proxy;
    const dst = dir === 'up' ? await conn.upstreamReady : conn.client;
    if (!dst || conn.closed) return;
    for (let c = this.#queue.shift(); c !== undefined; c = this.#queue.shift()) {
      this.#queued -= c.bytes.byteLength;
      if (dir === 'down' && conn.flipper) c.bytes = conn.flipper.process(c.bytes);
      await proxy.unstalled();
      const s = proxy.current;
      const latency = dir === 'up' ? s.upLatencyMs : s.downLatencyMs;
      let deadline = c.at + latency;
      if (dir === 'down' && conn.awaitingFirstByte) deadline += s.firstByteLatencyMs;
      await sleepUntil(deadline);
      if (dir === 'down') conn.awaitingFirstByte = false;
      if (conn.closed) return;
      for (let off = 0; off < c.bytes.byteLength; off += PIECE) {
        const piece = c.bytes.subarray(off, Math.min(off + PIECE, c.bytes.byteLength));
        await proxy.unstalled();
        if (conn.closed) return;
        if (proxy.isCut(dir)) {
          proxy.dropped(dir, piece.byteLength);
          continue;
        }
        const wait = Math.max(conn.buckets[dir].take(piece.byteLength), proxy.buckets[dir].take(piece.byteLength));
        if (wait >= MIN_SLEEP_MS) await sleepUntil(performance.now() + wait);
        if (conn.closed || dst.destroyed) return;
        // A cut that began while this piece waited still drops it.
        if (proxy.isCut(dir)) {
          proxy.dropped(dir, piece.byteLength);
          continue;
        }
        const ok = dst.write(piece);
        proxy.counted(dir, piece.byteLength);
        if (dir === 'up') conn.awaitingFirstByte = true;
        if (!ok) await drained(dst);
      }
      if (this.#paused && this.#queued < HIGH_WATER / 2) {
        this.#paused = false;
        conn.source(dir)?.resume();
      }
    }
    // A partitioned direction loses its FIN too.
    if (this.#ended && !conn.closed && !dst.destroyed && !proxy.isCut(dir)) dst.end();
  }
}

function drained(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}

class FaultProxyImpl implements FaultProxy {
  readonly host: string;
  port = 0;
  readonly target: { host: string; port: number };
  current: Settings;
  readonly connections = new Set<Connection>();
  readonly buckets: Record<FaultDirection, TokenBucket>;
  readonly #server: net.Server;
  #stallGate: { promise: Promise<void>; release: () => void } | undefined;
  #cut: CutMode = null;
  #refuse: RefuseMode | null = null;
  #closing: Promise<void> | undefined;
  #stats = { connections: 0, refused: 0, bytesUp: 0, bytesDown: 0, droppedUp: 0, droppedDown: 0, flippedBodies: 0 };
  /** Body flipping: undefined never set (connections are not followed), null set and off. */
  flipping: BodyFlipOptions | null | undefined;
  /** Set when counting requests: every connection's parser adds to it. */
  readonly requestCounts: StoreRequestCounts | undefined;

  constructor(options: FaultProxyOptions) {
    const { target, host, port: _port, countRequests, flipBodies, ...profile } = options;
    if (flipBodies !== undefined) this.flipping = checkFlip(flipBodies);
    this.requestCounts = countRequests === true ? emptyRequestCounts() : undefined;
    const t = target as Partial<FaultProxyOptions['target']> | undefined;
    this.target = { host: checkString('target.host', t?.host), port: checkInt('target.port', t?.port, 1, 65535) };
    checkProfile(profile);
    this.host = host ?? '127.0.0.1';
    this.current = { ...NO_FAULTS, ...profile };
    this.buckets = {
      up: new TokenBucket(() => this.current.totalBandwidthBps),
      down: new TokenBucket(() => this.current.totalBandwidthBps),
    };
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => this.#accept(socket));
  }

  get url(): string {
    return `http://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen(port, this.host, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
    const addr = this.#server.address();
    if (addr && typeof addr === 'object') this.port = addr.port;
  }

  #accept(socket: net.Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    if (this.#refuse !== null) {
      this.#stats.refused++;
      if (this.#refuse === 'close') socket.destroy();
      else resetSocket(socket);
      return;
    }
    socket.on('error', () => {});
    this.#stats.connections++;
    const conn = new Connection(this, socket);
    this.connections.add(conn);
    conn.start();
  }

  #checkOpen(what: string): void {
    if (this.#closing) throw new ClosedError(`Fault proxy on ${this.url} is closed (called ${what})`);
  }

  set(profile: FaultProfile): void {
    this.#checkOpen('set');
    checkProfile(profile);
    this.current = { ...this.current, ...profile };
  }

  settings(): Settings {
    return { ...this.current };
  }

  stall(): void {
    this.#checkOpen('stall');
    if (this.#stallGate) return;
    let release!: () => void;
    const promise = new Promise<void>((resolve) => (release = resolve));
    this.#stallGate = { promise, release };
  }

  resume(): void {
    const gate = this.#stallGate;
    this.#stallGate = undefined;
    gate?.release();
  }

  /** Resolves at once unless stalled. */
  unstalled(): Promise<void> | undefined {
    return this.#stallGate?.promise;
  }

  isCut(dir: FaultDirection): boolean {
    return this.#cut === 'both' || this.#cut === dir;
  }

  dropped(dir: FaultDirection, n: number): void {
    if (dir === 'up') this.#stats.droppedUp += n;
    else this.#stats.droppedDown += n;
  }

  counted(dir: FaultDirection, n: number): void {
    if (dir === 'up') this.#stats.bytesUp += n;
    else this.#stats.bytesDown += n;
  }

  resetAll(): void {
    this.#checkOpen('resetAll');
    for (const c of [...this.connections]) c.reset();
  }

  async refuse(on: boolean, mode: RefuseMode = 'reset'): Promise<void> {
    this.#checkOpen('refuse');
    if (!['reset', 'close', 'unlisten'].includes(mode)) {
      throw new InvalidArgumentError(`Expected refuse mode 'reset', 'close' or 'unlisten', got \`${String(mode)}\``);
    }
    const was = this.#refuse;
    this.#refuse = on ? mode : null;
    if (on && mode === 'unlisten' && was !== 'unlisten') {
      // Stop accepting; open connections stay (close's callback would wait for them, so don't await it).
      this.#server.close();
    } else if (was === 'unlisten' && this.#refuse !== 'unlisten') {
      await this.listen(this.port);
    }
  }

  cut(direction: CutMode): void {
    this.#checkOpen('cut');
    if (direction !== null && direction !== 'up' && direction !== 'down' && direction !== 'both') {
      throw new InvalidArgumentError(`Expected cut direction 'up', 'down', 'both' or null, got \`${String(direction)}\``);
    }
    this.#cut = direction;
  }

  flipBodies(options: BodyFlipOptions | null): void {
    this.#checkOpen('flipBodies');
    this.flipping = options === null ? null : checkFlip(options);
  }

  flipped(): void {
    this.#stats.flippedBodies++;
  }

  stats(): FaultProxyStats {
    return { ...this.#stats, activeConnections: this.connections.size, requests: { ...(this.requestCounts ?? emptyRequestCounts()) } };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.resume();
      for (const c of [...this.connections]) c.destroy();
      if (this.#server.listening) await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Start a fault proxy on `host:port` (default 127.0.0.1, ephemeral) forwarding to `target`. */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const proxy = new FaultProxyImpl(options);
  await proxy.listen(options.port ?? 0);
  return proxy;
}

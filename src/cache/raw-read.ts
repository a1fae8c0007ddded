/**
 * Large ranged reads from a worker over raw keep-alive sockets, the socket reading
 * straight into the caller's buffer (net `onread`): no 64 KiB chunk per read to
 * allocate, copy and collect, which is most of undici's CPU per byte for multi-MiB
 * parts. Sockets are kept per worker between reads (`RawPool`), so a pass of many
 * parts opens about as many connections as it has reads in flight, not one per part.
 */
import { connect, type NetConnectOpts, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { throwIfAborted } from '../errors.js';
import type { WorkerReadRequest } from './worker-transport.js';
import type { WorkerInfo } from './membership.js';
import { CRC_BYTES, parseCrcHeader, pieceCount } from './page-checksum.js';
import { Headers, Paths, readQuery } from './protocol.js';
import { WorkerFault } from './worker-errors.js';
import { describeConnectError } from './worker-tls.js';

/** Parts at least this large go over a raw socket. */
export const RAW_READ_MIN = 1024 * 1024;

/** An error answer larger than this is not an error body: the worker is at fault. */
const MAX_ERROR_BODY = 1024 * 1024;

/** Idle sockets kept per worker: as many as a client's default concurrency can have in flight to one worker, so a warm pass opens none. */
const MAX_IDLE = 64;

/** A `WorkerReadRequest` (bytes go to `out[at, at + length)`) sent over a raw socket. */
export interface RawReadRequest extends WorkerReadRequest {
  /** An `http://` or `https://` worker. */
  worker: WorkerInfo;
  token: string | undefined;
  timeoutMs: number;
  signal: AbortSignal | undefined;
  /** Ask for page checksums (`crc=<this>`): the body then ends with a trailer. */
  crc?: string | undefined;
}

/**
 * 200: the bytes are in `out`, `cache` says where the worker found them, and when the
 * worker sent checksums, its page size and the trailer. Any other status: its body, for `errorFromAnswer`.
 */
export type RawAnswer = { status: 200; cache: string; pageSize?: number | undefined; trailer?: Uint8Array | undefined } | { status: number; body: string };

/** What one exchange on a connection does with the bytes that arrive. */
interface Exchange {
  buffer(): Uint8Array;
  /** `n` bytes landed in the last buffer handed out. */
  got(n: number): void;
  /** The socket ended or failed before the answer was complete. */
  lost(err: Error | undefined): void;
}

/** One keep-alive socket to a worker; bytes go wherever the current exchange says. */
class RawConnection {
  readonly socket: Socket;
  current: Exchange | undefined;
  /** Whether any exchange has finished on it: a reused socket may have been closed by the worker meanwhile. */
  reused = false;
  readonly #scratch = new Uint8Array(4096);
  /** The buffer handed to the socket for its next read, and the exchange it belongs to. */
  #handed: Uint8Array = this.#scratch;
  #handedTo: Exchange | undefined;

  /** `ca`: verify an `https://` worker against it (undefined: the system's CAs); `tls` false: plain TCP. */
  constructor(host: string, port: number, tls: { ca: Buffer | undefined } | false, onGone: (c: RawConnection) => void) {
    const options = {
      host,
      port,
      noDelay: true,
      onread: {
        // Node asks for the next buffer right after each read (and once at the start),
        // often before the next exchange exists: bytes may land in the scratch buffer.
        buffer: () => {
          this.#handedTo = this.current;
          this.#handed = this.current?.buffer() ?? this.#scratch;
          return this.#handed;
        },
        callback: (n: number) => {
          const ex = this.current;
          // Bytes while idle: the worker broke the protocol; never reuse this socket.
          if (ex === undefined) this.socket.destroy();
          else if (this.#handedTo === ex) ex.got(n);
          else this.#deliver(ex, this.#handed.subarray(0, n));
          // Never false: that would pause a socket that goes back to the pool.
          return true;
        },
      },
    } satisfies NetConnectOpts;
    // TLS sockets take `onread` too: the decrypted bytes land in the exchange's buffer.
    this.socket = tls === false ? connect(options) : tlsConnect({ ...options, ...(tls.ca ? { ca: tls.ca } : {}) } satisfies ConnectionOptions);
    const gone = (err?: Error): void => {
      onGone(this);
      const ex = this.current;
      this.current = undefined;
      ex?.lost(err);
    };
    this.socket.on('error', gone);
    this.socket.on('close', () => gone());
    this.socket.on('end', () => this.socket.destroy());
  }

  /** Bytes that landed outside the exchange's buffer: copied in, in the pieces it asks for. */
  #deliver(ex: Exchange, bytes: Uint8Array): void {
    let pos = 0;
    while (pos < bytes.byteLength && this.current === ex) {
      const dst = ex.buffer();
      const k = Math.min(dst.byteLength, bytes.byteLength - pos);
      if (k === 0) {
        this.socket.destroy();
        return;
      }
      dst.set(bytes.subarray(pos, pos + k));
      pos += k;
      ex.got(k);
    }
  }
}

/** Keep-alive raw sockets per worker, shared by a client's large reads. */
export class RawPool {
  readonly #idle = new Map<string, RawConnection[]>();
  readonly #ca: Buffer | undefined;
  #closed = false;

  /** `ca`: the CA `https://` workers' certificates are verified against; undefined: the system's CAs. */
  constructor(ca?: Buffer) {
    this.#ca = ca;
  }

  /**
   * One ranged read. Rejects with `WorkerFault` when the worker misbehaves (unreachable,
   * malformed or short answer, another version, too slow) and with `signal.reason` on
   * abort. A reused socket the worker closed before answering is retried once on a new one.
   */
  async read(r: RawReadRequest): Promise<RawAnswer> {
    throwIfAborted(r.signal);
    const target = new URL(r.worker.url);
    const qs = new URLSearchParams(readQuery(r, r.crc)).toString();
    let req = `GET ${target.pathname.replace(/\/$/, '')}${Paths.read}?${qs} HTTP/1.1\r\nhost: ${target.host}\r\n`;
    if (r.token) req += `authorization: Bearer ${r.token}\r\n`;
    req += '\r\n';
    const key = `${target.protocol}//${target.host}`;
    const conn = this.#take(key);
    if (conn) {
      try {
        return await this.#exchange(conn, key, req, r);
      } catch (err) {
        if (!(err instanceof StaleSocket)) throw err;
      }
    }
    const https = target.protocol === 'https:';
    const fresh = new RawConnection(target.hostname.replace(/^\[|\]$/g, ''), Number(target.port || (https ? 443 : 80)), https && { ca: this.#ca }, (c) => this.#drop(key, c));
    try {
      return await this.#exchange(fresh, key, req, r);
    } catch (err) {
      if (err instanceof StaleSocket) throw new WorkerFault(`worker ${r.worker.id} at ${r.worker.url} closed the connection before answering for ${r.url}`);
      throw err;
    }
  }

  /** Close every idle socket; later reads open new ones only until `close`d for good. */
  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) for (const c of list) c.socket.destroy();
    this.#idle.clear();
  }

  #take(key: string): RawConnection | undefined {
    const c = this.#idle.get(key)?.pop();
    c?.socket.ref();
    return c;
  }

  #drop(key: string, c: RawConnection): void {
    const list = this.#idle.get(key);
    const i = list?.indexOf(c) ?? -1;
    if (list && i >= 0) list.splice(i, 1);
  }

  #release(key: string, c: RawConnection): void {
    const list = this.#idle.get(key) ?? [];
    if (this.#closed || c.socket.destroyed || list.length >= MAX_IDLE) {
      c.socket.destroy();
      return;
    }
    c.reused = true;
    // An idle socket must not keep the process alive.
    c.socket.unref();
    list.push(c);
    this.#idle.set(key, list);
  }

  #exchange(conn: RawConnection, key: string, req: string, r: RawReadRequest): Promise<RawAnswer> {
    const { worker: w, url, out, at, signal } = r;
    return new Promise<RawAnswer>((resolve, reject) => {
      const head = Buffer.allocUnsafe(16 * 1024);
      let headLen = 0;
      let status = 0;
      let cache = 'miss';
      let keepAlive = true;
      let bodyLen = -1;
      let got = 0;
      let errBody: Buffer | undefined;
      let pageSize: number | undefined;
      let trailer: Uint8Array | undefined;
      let done = false;
      const finish = (err: Error | undefined, value?: RawAnswer): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        conn.current = undefined;
        if (err || !keepAlive) conn.socket.destroy();
        else this.#release(key, conn);
        if (err) reject(err);
        else resolve(value ?? { status: 200, cache, pageSize, trailer });
      };
      const onAbort = (): void => {
        try {
          throwIfAborted(signal);
        } catch (err) {
          finish(err as Error);
        }
      };
      const fault = (msg: string): void => finish(new WorkerFault(msg));
      const onBodyDone = (): void => {
        if (status === 200) finish(undefined, { status, cache, pageSize, trailer });
        else finish(undefined, { status, body: (errBody ?? Buffer.alloc(0)).toString('utf8') });
      };
      const onHead = (): void => {
        const text = head.toString('latin1', 0, headLen);
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) {
          if (headLen === head.byteLength) fault(`worker ${w.id} sent over ${head.byteLength} bytes of headers for ${url}`);
          return;
        }
        const lines = text.slice(0, end).split('\r\n');
        const m = /^HTTP\/1\.([01]) (\d{3})/.exec(lines[0] ?? '');
        if (!m) return fault(`worker ${w.id} sent a malformed status line for ${url}`);
        status = Number(m[2]);
        keepAlive = m[1] === '1';
        let cl = Number.NaN;
        let gotTag: string | undefined;
        for (let i = 1; i < lines.length; i++) {
          const l = lines[i] as string;
          const c = l.indexOf(':');
          if (c <= 0) continue;
          const name = l.slice(0, c).trim().toLowerCase();
          const value = l.slice(c + 1).trim();
          if (name === 'content-length') cl = Number(value);
          else if (name === Headers.etag) gotTag = value;
          else if (name === Headers.cache) cache = value;
          else if (name === Headers.crc && r.crc !== undefined) pageSize = parseCrcHeader(value);
          else if (name === 'connection' && value.toLowerCase() === 'close') keepAlive = false;
        }
        if (!Number.isSafeInteger(cl) || cl < 0) return fault(`worker ${w.id} answered ${status} without a content-length for ${url}`);
        bodyLen = cl;
        if (status === 200) {
          if (gotTag !== r.etag) return fault(`worker ${w.id} answered version ${String(gotTag)} for ${url}, expected ${r.etag}`);
          if (pageSize !== undefined) trailer = new Uint8Array(pieceCount(r.offset, r.length, pageSize) * CRC_BYTES);
          const want = r.length + (trailer?.byteLength ?? 0);
          if (cl > want) return fault(`worker ${w.id} sent more than ${want} bytes for ${url}`);
          if (cl !== want) return fault(`worker ${w.id} sent ${cl} of ${want} bytes for ${url}`);
        } else {
          if (cl > MAX_ERROR_BODY) return fault(`worker ${w.id} answered ${status} with a ${cl}-byte body for ${url}`);
          errBody = Buffer.allocUnsafe(cl);
        }
        const extra = head.subarray(end + 4, headLen);
        if (extra.byteLength > bodyLen) return fault(`worker ${w.id} sent more than ${bodyLen} bytes for ${url}`);
        if (status === 200) {
          const data = Math.min(extra.byteLength, r.length);
          out.set(extra.subarray(0, data), at);
          if (data < extra.byteLength) trailer?.set(extra.subarray(data));
        } else extra.copy(errBody as Buffer, 0);
        got = extra.byteLength;
        if (got === bodyLen) onBodyDone();
      };
      conn.current = {
        buffer: () => {
          if (bodyLen < 0) return head.subarray(headLen);
          if (status === 200) {
            if (got < r.length) return out.subarray(at + got, at + r.length);
            return (trailer as Uint8Array).subarray(got - r.length);
          }
          return (errBody as Buffer).subarray(got);
        },
        got: (n) => {
          if (done) return;
          if (bodyLen < 0) {
            headLen += n;
            onHead();
          } else {
            got += n;
            if (got === bodyLen) onBodyDone();
          }
        },
        lost: (err) => {
          // Nothing came back on a socket that served before: the worker closed it while idle.
          if (conn.reused && headLen === 0 && !done) return finish(new StaleSocket());
          if (err) return fault(`worker ${w.id} at ${w.url} unreachable: ${describeConnectError(err)}`);
          if (bodyLen < 0) fault(`worker ${w.id} at ${w.url} closed the connection before answering for ${url}`);
          else fault(`worker ${w.id} broke off the body of ${url}: sent ${got} of ${bodyLen} bytes`);
        },
      };
      const timer = setTimeout(() => fault(`worker ${w.id} took over ${r.timeoutMs} ms`), r.timeoutMs);
      timer.unref();
      signal?.addEventListener('abort', onAbort, { once: true });
      conn.socket.write(req);
    });
  }
}

/** A reused socket closed before any byte of the answer: safe to send again. */
class StaleSocket extends Error {
  override name = 'StaleSocket';
}

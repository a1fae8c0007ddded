/**
 * Large ranged reads from a worker on their own connection (`connection: close`), the
 * socket reading straight into the caller's buffer (net `onread`): no 64 KiB chunk per
 * read to allocate, copy and collect, which is most of undici's CPU per byte for
 * multi-MiB parts.
 */
import { connect, type NetConnectOpts } from 'node:net';
import { throwIfAborted } from '../errors.js';
import type { WorkerReadRequest } from './worker-transport.js';
import type { WorkerInfo } from './membership.js';
import { Headers, Paths, readQuery } from './protocol.js';
import { WorkerFault } from './worker-errors.js';

/** Parts at least this large are worth a connection of their own. */
export const RAW_READ_MIN = 1024 * 1024;

/** An error answer larger than this is not an error body: the worker is at fault. */
const MAX_ERROR_BODY = 1024 * 1024;

/** A `WorkerReadRequest` (bytes go to `out[at, at + length)`) sent over its own socket. */
export interface RawReadRequest extends WorkerReadRequest {
  /** An `http://` worker. */
  worker: WorkerInfo;
  token: string | undefined;
  timeoutMs: number;
  signal: AbortSignal | undefined;
}

/** 200: the bytes are in `out`, `cache` says where the worker found them. Any other status: its body, for `errorFromAnswer`. */
export type RawAnswer = { status: 200; cache: string } | { status: number; body: string };

/**
 * One ranged read. Rejects with `WorkerFault` when the worker misbehaves (unreachable,
 * malformed or short answer, another version, too slow) and with `signal.reason` on abort.
 */
export function rawRead(r: RawReadRequest): Promise<RawAnswer> {
  throwIfAborted(r.signal);
  const { worker: w, url, out, at, signal } = r;
  const target = new URL(w.url);
  const qs = new URLSearchParams(readQuery(r)).toString();
  let req = `GET ${target.pathname.replace(/\/$/, '')}${Paths.read}?${qs} HTTP/1.1\r\nhost: ${target.host}\r\nconnection: close\r\n`;
  if (r.token) req += `authorization: Bearer ${r.token}\r\n`;
  req += '\r\n';
  return new Promise<RawAnswer>((resolve, reject) => {
    const head = Buffer.allocUnsafe(16 * 1024);
    let headLen = 0;
    let status = 0;
    let headers = new Map<string, string>();
    let bodyLen = -1;
    let got = 0;
    let errBody: Buffer | undefined;
    let done = false;
    const finish = (err: Error | undefined, value?: RawAnswer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve(value ?? { status: 200, cache: 'miss' });
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
      if (status === 200) finish(undefined, { status, cache: headers.get(Headers.cache) ?? 'miss' });
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
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
      if (!m) return fault(`worker ${w.id} sent a malformed status line for ${url}`);
      status = Number(m[1]);
      headers = new Map();
      for (let i = 1; i < lines.length; i++) {
        const l = lines[i] as string;
        const c = l.indexOf(':');
        if (c > 0) headers.set(l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim());
      }
      const cl = Number(headers.get('content-length') ?? Number.NaN);
      if (!Number.isSafeInteger(cl) || cl < 0) return fault(`worker ${w.id} answered ${status} without a content-length for ${url}`);
      bodyLen = cl;
      if (status === 200) {
        const gotTag = headers.get(Headers.etag);
        if (gotTag !== r.etag) return fault(`worker ${w.id} answered version ${String(gotTag)} for ${url}, expected ${r.etag}`);
        if (cl > r.length) return fault(`worker ${w.id} sent more than ${r.length} bytes for ${url}`);
        if (cl !== r.length) return fault(`worker ${w.id} sent ${cl} of ${r.length} bytes for ${url}`);
      } else {
        if (cl > MAX_ERROR_BODY) return fault(`worker ${w.id} answered ${status} with a ${cl}-byte body for ${url}`);
        errBody = Buffer.allocUnsafe(cl);
      }
      const extra = head.subarray(end + 4, headLen);
      if (extra.byteLength > bodyLen) return fault(`worker ${w.id} sent more than ${bodyLen} bytes for ${url}`);
      if (status === 200) out.set(extra, at);
      else extra.copy(errBody as Buffer, 0);
      got = extra.byteLength;
      if (got === bodyLen) onBodyDone();
    };
    const socket = connect({
      host: target.hostname.replace(/^\[|\]$/g, ''),
      port: Number(target.port || 80),
      onread: {
        buffer: () => {
          if (bodyLen < 0) return head.subarray(headLen);
          if (status === 200) return out.subarray(at + got, at + bodyLen);
          return (errBody as Buffer).subarray(got);
        },
        callback: (n: number) => {
          if (done) return false;
          if (bodyLen < 0) {
            headLen += n;
            onHead();
          } else {
            got += n;
            if (got === bodyLen) onBodyDone();
          }
          return !done;
        },
      },
    } satisfies NetConnectOpts);
    socket.on('error', (err) => fault(`worker ${w.id} at ${w.url} unreachable: ${err.message}`));
    socket.on('close', () => {
      if (bodyLen < 0) fault(`worker ${w.id} at ${w.url} closed the connection before answering for ${url}`);
      else fault(`worker ${w.id} broke off the body of ${url}: sent ${got} of ${bodyLen} bytes`);
    });
    const timer = setTimeout(() => fault(`worker ${w.id} took over ${r.timeoutMs} ms`), r.timeoutMs);
    timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.write(req);
  });
}

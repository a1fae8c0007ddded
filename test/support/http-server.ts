/**
 * A static file server on loopback for HTTP-store tests: Range, ETag, If-Match (412),
 * HEAD and nginx-like autoindex pages, with switches that make it behave like the
 * servers found in the wild (ignores Range like `python -m http.server`, no ETag, no
 * If-Match support, required Authorization). Counts what it sends per request.
 *
 * @example
 * const server = await startHttpServer({ root: dir });
 * const ufs = new HttpUfs();
 * await ufs.read(`${server.url}data/a.bin`, 0, 10);
 * server.options.ignoreRange = true;   // switch behaviour live
 * await server.close();
 */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve, sep } from 'node:path';

export interface HttpServerOptions {
  /** Directory to serve. */
  root: string;
  /** @default '127.0.0.1' */
  host?: string;
  /** Answer every GET with 200 and the whole file, whatever `Range` says. @default false */
  ignoreRange?: boolean;
  /** Serve HTML directory indexes for paths ending in '/'. @default true */
  autoindex?: boolean;
  /** Send `ETag` (strong: size, mtime and inode). @default true */
  etag?: boolean;
  /** Send `Last-Modified`. @default true */
  lastModified?: boolean;
  /** Ignore `If-Match` instead of answering 412 on a mismatch. @default false */
  ignoreIfMatch?: boolean;
  /** When set, every request must carry exactly this `Authorization` header, or gets 401. */
  auth?: string;
}

/** One request as the server saw it. */
export interface ServedRequest {
  method: string;
  /** The raw request path (still percent-encoded). */
  path: string;
  range: string | undefined;
  ifMatch: string | undefined;
  status: number;
  /** Body bytes handed to the socket. */
  bytesSent: number;
  /** Body bytes the response was meant to carry. */
  bodyBytes: number;
  /** `true` when the whole response went out, `false` when the client went away first; `undefined` while in flight. */
  completed: boolean | undefined;
}

export interface TestHttpServer {
  /** `http://127.0.0.1:port/`, ending in '/'. */
  readonly url: string;
  readonly port: number;
  /** The live options: change a switch and the next request sees it. */
  readonly options: Required<Omit<HttpServerOptions, 'auth'>> & { auth: string | undefined };
  /** Every request so far, in arrival order. Clear with `requests.length = 0`. */
  readonly requests: ServedRequest[];
  /** When set and it returns true, it has answered the request itself (fault injection: 503s, hangs). */
  intercept: ((req: http.IncomingMessage, res: http.ServerResponse) => boolean) | undefined;
  /** Resolves when no request is in flight. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function parseRange(header: string, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined;
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

export async function startHttpServer(opts: HttpServerOptions): Promise<TestHttpServer> {
  const root = resolve(opts.root);
  const options = {
    root,
    host: opts.host ?? '127.0.0.1',
    ignoreRange: opts.ignoreRange ?? false,
    autoindex: opts.autoindex ?? true,
    etag: opts.etag ?? true,
    lastModified: opts.lastModified ?? true,
    ignoreIfMatch: opts.ignoreIfMatch ?? false,
    auth: opts.auth,
  };
  const requests: ServedRequest[] = [];
  let inFlight = 0;
  let idleWaiters: (() => void)[] = [];

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse, rec: ServedRequest): Promise<void> => {
    const send = (status: number, body = '', headers: Record<string, string> = {}): void => {
      rec.status = status;
      rec.bodyBytes = Buffer.byteLength(body);
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(rec.bodyBytes), ...headers });
      if (req.method === 'HEAD') res.end();
      else {
        rec.bytesSent = rec.bodyBytes;
        res.end(body);
      }
    };
    if (options.auth !== undefined && req.headers.authorization !== options.auth) {
      return send(401, 'unauthorized\n', { 'WWW-Authenticate': 'Bearer' });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n', { Allow: 'GET, HEAD' });
    const rawPath = (req.url ?? '/').split(/[?#]/, 1)[0] ?? '/';
    let segments: string[];
    try {
      segments = rawPath.split('/').map((s) => decodeURIComponent(s));
    } catch {
      return send(400, 'bad path encoding\n');
    }
    if (segments.some((s) => s === '..' || s.includes('/') || s.includes('\0'))) return send(400, 'bad path\n');
    const path = join(root, ...segments);
    if (path !== root && !path.startsWith(root + sep)) return send(403, 'outside root\n');
    let st;
    try {
      st = await stat(path, { bigint: true });
    } catch {
      return send(404, 'not found\n');
    }
    if (st.isDirectory()) {
      if (!rawPath.endsWith('/')) return send(301, '', { Location: `${rawPath}/` });
      if (!options.autoindex) return send(403, 'directory listing disabled\n');
      const entries = (await readdir(path, { withFileTypes: true })).filter((e) => e.isDirectory() || e.isFile());
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      const title = escapeHtml(decodeURIComponent(rawPath));
      const rows = entries.map((e) => {
        const name = e.isDirectory() ? `${e.name}/` : e.name;
        const href = encodeURIComponent(e.name) + (e.isDirectory() ? '/' : '');
        return `<a href="${escapeHtml(href)}">${escapeHtml(name)}</a>`;
      });
      // Like nginx and Apache: a parent link, sort links with queries, and an off-site link, which clients must skip.
      const html =
        `<!DOCTYPE html>\n<html><head><title>Index of ${title}</title></head><body>\n<h1>Index of ${title}</h1>\n` +
        `<p><a href="?C=N;O=D">Name</a> <a href='?C=M;O=A'>Last modified</a> <a href="http://example.invalid/">elsewhere</a> <a href="/">home</a></p>\n` +
        `<hr><pre><a href="../">../</a>\n${rows.join('\n')}\n</pre><hr></body></html>\n`;
      return send(200, html, { 'Content-Type': 'text/html; charset=utf-8' });
    }
    if (!st.isFile()) return send(403, 'not a regular file\n');
    const size = Number(st.size);
    const etag = `"${st.size.toString(16)}-${st.mtimeNs.toString(16)}-${st.ino.toString(16)}"`;
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
    if (options.etag) headers.ETag = etag;
    if (options.lastModified) headers['Last-Modified'] = new Date(Number(st.mtimeMs)).toUTCString();
    if (!options.ignoreRange) headers['Accept-Ranges'] = 'bytes';
    const ifMatch = req.headers['if-match'];
    if (ifMatch !== undefined && !options.ignoreIfMatch) {
      const tags = ifMatch.split(',').map((t) => t.trim());
      if (!tags.includes('*') && !(options.etag && tags.includes(etag))) return send(412, 'precondition failed\n', headers);
    }
    let start = 0;
    let end = size - 1;
    let status = 200;
    const rangeHeader = req.headers.range;
    if (rangeHeader !== undefined && !options.ignoreRange && !rangeHeader.includes(',')) {
      const r = parseRange(rangeHeader, size);
      if (r === 'unsatisfiable') return send(416, 'range not satisfiable\n', { ...headers, 'Content-Range': `bytes */${size}` });
      if (r) {
        ({ start, end } = r);
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
      }
    }
    const length = Math.max(0, end - start + 1);
    rec.status = status;
    rec.bodyBytes = length;
    res.writeHead(status, { ...headers, 'Content-Length': String(length) });
    if (req.method === 'HEAD' || length === 0) {
      res.end();
      return;
    }
    await new Promise<void>((done) => {
      const file = createReadStream(path, { start, end });
      file.on('data', (chunk: string | Buffer) => {
        const n = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.byteLength;
        rec.bytesSent += n;
        if (!res.write(chunk)) file.pause();
      });
      res.on('drain', () => file.resume());
      file.on('end', () => {
        res.end();
        done();
      });
      file.on('error', () => {
        res.destroy();
        done();
      });
      res.on('close', () => {
        file.destroy();
        done();
      });
    });
  };

  const server = http.createServer((req, res) => {
    const rec: ServedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      range: req.headers.range,
      ifMatch: req.headers['if-match'],
      status: 0,
      bytesSent: 0,
      bodyBytes: 0,
      completed: undefined,
    };
    requests.push(rec);
    inFlight++;
    res.on('close', () => {
      rec.completed = res.writableFinished;
      if (res.headersSent) rec.status = res.statusCode;
      if (--inFlight === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const w of waiters) w();
      }
    });
    req.resume();
    if (handle_.intercept?.(req, res)) {
      rec.status = res.statusCode;
      return;
    }
    handle(req, res, rec).catch(() => res.destroy());
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, options.host, resolve));
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;

  const handle_: TestHttpServer = {
    url: `http://${options.host}:${port}/`,
    port,
    options,
    requests,
    intercept: undefined,
    idle: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve))),
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
  return handle_;
}

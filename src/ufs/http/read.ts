/**
 * Stat and read against an HTTP store. Every body is read to its end where that is
 * cheap, so its connection goes back to the keep-alive pool; only a server that ignores
 * `Range` and would send much more than asked gets its transfer cut.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { CorruptDataError, RangeNotSatisfiableError, UnavailableError, VersionChangedError } from '../../errors.js';
import type { FileInfo, ReadOptions } from '../types.js';
import type { HttpContext } from './context.js';
import { canonicalHttpUrl, etagOf, header, isStrongServerEtag, parseContentRange, parseLength, versionMatches } from './headers.js';

/** Past the wanted bytes, a body of a server that ignores `Range` is read on (keeping the connection) up to this many bytes. */
const DRAIN_LIMIT = 64 * 1024;

export async function httpStat(ctx: HttpContext, u: URL, url: string, signal: AbortSignal | undefined): Promise<FileInfo> {
  return ctx.withRetry('stat', url, signal, async (s) => {
    const res = await ctx.send(u, 'HEAD', s);
    await res.body.dump().catch(() => {});
    let size = parseLength(header(res.headers, 'content-length'));
    let headers = res.headers;
    if (res.statusCode === 405 || res.statusCode === 501 || (res.statusCode === 200 && size === undefined)) {
      // No HEAD here (or no length in it): one byte of a GET carries the size in Content-Range.
      ctx.counter.count('stat');
      const g = await ctx.send(u, 'GET', s, { range: 'bytes=0-0' });
      const body = await g.body.arrayBuffer();
      ctx.counter.read(body.byteLength);
      if (g.statusCode === 206) size = parseContentRange(header(g.headers, 'content-range'))?.total;
      else if (g.statusCode === 200) size = parseLength(header(g.headers, 'content-length')) ?? body.byteLength;
      else if (g.statusCode === 416) size = 0;
      else ctx.throwForStatus(g.statusCode, url, 'stat');
      headers = g.headers;
    } else if (res.statusCode !== 200) {
      ctx.throwForStatus(res.statusCode, url, 'stat');
    }
    if (size === undefined) throw new CorruptDataError(`HTTP store sent no size for ${url} (no Content-Length or Content-Range)`, { url });
    const lm = header(headers, 'last-modified');
    const mtimeMs = lm === undefined ? Number.NaN : Date.parse(lm);
    return { url: canonicalHttpUrl(u), size, etag: etagOf(headers, size), mtimeMs: Number.isFinite(mtimeMs) ? mtimeMs : undefined };
  });
}

/**
 * Throws when the response is not of the version (or size) the caller expects; the
 * attempt's transfer is cut first, so an unread body does not hold its connection.
 */
function checkVersion(url: string, options: ReadOptions, headers: IncomingHttpHeaders, total: number | undefined, abortAttempt: () => void): void {
  try {
    versionCheck(url, options, headers, total);
  } catch (err) {
    abortAttempt();
    throw err;
  }
}

function versionCheck(url: string, options: ReadOptions, headers: IncomingHttpHeaders, total: number | undefined): void {
  if (options.size !== undefined && total !== undefined && total !== options.size) {
    throw new VersionChangedError(`Object ${url} changed: expected size ${options.size}, store has ${total} bytes`, { url });
  }
  const expected = options.etag;
  if (expected !== undefined && !versionMatches(expected, headers, total)) {
    throw new VersionChangedError(`Object ${url} changed: expected version ${expected}, store sent ${etagOf(headers, total)}`, { url });
  }
}

function conditional(options: ReadOptions): Record<string, string> {
  const expected = options.etag;
  return expected !== undefined && isStrongServerEtag(expected) ? { 'if-match': `"${expected}"` } : {};
}

async function refuse(ctx: HttpContext, res: { statusCode: number; body: { dump(): Promise<void> } }, url: string, what: string, expected: string | undefined): Promise<void> {
  if (res.statusCode === 200 || res.statusCode === 206) return;
  await res.body.dump().catch(() => {});
  if (res.statusCode === 412) {
    throw new VersionChangedError(`Object ${url} changed: expected version ${expected ?? '?'}, the store refused If-Match (412)`, { url });
  }
  if (res.statusCode === 416) throw new RangeNotSatisfiableError(`${what} is past the end of ${url}`, { url });
  ctx.throwForStatus(res.statusCode, url, 'read');
}

/** The whole object in one GET without `Range`: its size from Content-Length, or from the body itself. */
export async function httpReadWhole(ctx: HttpContext, u: URL, url: string, options: ReadOptions): Promise<Uint8Array> {
  return ctx.withRetry('get', url, options.signal, async (s, abortAttempt) => {
    const res = await ctx.send(u, 'GET', s, conditional(options));
    await refuse(ctx, res, url, 'The whole object', options.etag);
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => {});
      throw new CorruptDataError(`HTTP store answered a GET of the whole of ${url} with ${res.statusCode}`, { url });
    }
    const total = parseLength(header(res.headers, 'content-length'));
    checkVersion(url, options, res.headers, total, abortAttempt);
    const chunks: Buffer[] = [];
    let received = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      received += chunk.byteLength;
    }
    ctx.counter.read(received);
    if (total !== undefined && received !== total) {
      throw new UnavailableError(`HTTP transfer of ${url} ended early: got ${received} of ${total} bytes`, { url });
    }
    versionCheck(url, options, res.headers, received);
    const out = new Uint8Array(received);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out;
  });
}

/** `length` bytes (> 0) at `offset`, with one ranged GET; a server that ignores `Range` is streamed past `offset`. */
export async function httpReadRange(ctx: HttpContext, u: URL, url: string, offset: number, length: number, options: ReadOptions): Promise<Uint8Array> {
  const end = offset + length - 1;
  const what = `Range ${offset}+${length} (to ${offset + length})`;
  return ctx.withRetry('get', url, options.signal, async (s, abortAttempt) => {
    const res = await ctx.send(u, 'GET', s, { range: `bytes=${offset}-${end}`, ...conditional(options) });
    if (res.statusCode === 416) {
      await res.body.dump().catch(() => {});
      const total = parseContentRange(header(res.headers, 'content-range'))?.total;
      if (options.size !== undefined && total !== undefined && total !== options.size) checkVersion(url, options, res.headers, total, abortAttempt);
      throw new RangeNotSatisfiableError(`${what} is past the end of ${url}${total === undefined ? '' : ` (size ${total})`}`, { url });
    }
    await refuse(ctx, res, url, what, options.etag);
    let skip: number;
    let total: number | undefined;
    if (res.statusCode === 206) {
      ctx.rangeIgnoring.delete(u.origin);
      const cr = parseContentRange(header(res.headers, 'content-range'));
      if (!cr || cr.start !== offset) {
        await res.body.dump().catch(() => {});
        throw new CorruptDataError(`HTTP store answered range ${offset}-${end} of ${url} with Content-Range \`${header(res.headers, 'content-range') ?? '(none)'}\``, {
          url,
        });
      }
      total = cr.total;
      checkVersion(url, options, res.headers, total, abortAttempt);
      if ((total !== undefined && offset + length > total) || cr.end < end) {
        abortAttempt();
        throw new RangeNotSatisfiableError(`${what} is past the end of ${url} (size ${total ?? `>= ${cr.end + 1}`})`, { url });
      }
      skip = 0;
    } else {
      // The server ignored Range and sends the whole object: stream it, skip to the
      // offset, keep `length` bytes and cut the transfer when much more would follow.
      ctx.rangeIgnoring.add(u.origin);
      ctx.stats.rangeIgnoredResponses++;
      total = parseLength(header(res.headers, 'content-length'));
      checkVersion(url, options, res.headers, total, abortAttempt);
      if (total !== undefined && offset + length > total) {
        abortAttempt();
        throw new RangeNotSatisfiableError(`${what} is past the end of ${url} (size ${total})`, { url });
      }
      skip = offset;
    }
    const out = new Uint8Array(length);
    let filled = 0;
    let received = 0;
    let cut = false;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        received += chunk.byteLength;
        let c: Uint8Array = chunk;
        if (skip > 0) {
          const n = Math.min(skip, c.byteLength);
          skip -= n;
          ctx.stats.bytesDiscarded += n;
          c = c.subarray(n);
        }
        const take = Math.min(c.byteLength, length - filled);
        if (take > 0) out.set(c.subarray(0, take), filled);
        filled += take;
        // A 206 ends at the range: read it to its end and the connection is reused.
        if (filled === length && res.statusCode === 200 && (total === undefined || total - received > DRAIN_LIMIT)) {
          cut = true;
          break;
        }
      }
    } finally {
      ctx.counter.read(received);
      if (cut && !res.body.readableEnded) abortAttempt();
    }
    if (filled < length) {
      if (res.statusCode === 200 && total === undefined) {
        throw new RangeNotSatisfiableError(`${what} is past the end of ${url} (size ${received})`, { url });
      }
      throw new UnavailableError(`HTTP transfer of ${url} ended early: got ${filled} of ${length} bytes from offset ${offset}`, { url });
    }
    return out;
  });
}

/**
 * Counting store requests by kind from the bytes a client sends: a small HTTP/1.1
 * request-head parser for the fault proxy's client -> server stream. It reads each
 * request line and its headers, then skips the body (Content-Length bytes, or chunked
 * encoding) so a PUT's payload is never mistaken for the next request.
 */

/** Store requests seen by the fault proxy, by kind. */
export interface StoreRequestCounts {
  /** GET of a whole object (no Range header). */
  get: number;
  /** GET with a Range header. */
  rangedGet: number;
  head: number;
  /** A bucket-level GET: ListObjects(V2) (`list-type=` in the query) or a GET of the bucket itself. */
  list: number;
  put: number;
  /** Anything else: POST, DELETE, a head the parser could not read. */
  other: number;
}

export function emptyRequestCounts(): StoreRequestCounts {
  return { get: 0, rangedGet: 0, head: 0, list: 0, put: 0, other: 0 };
}

/** Request heads larger than this are counted as `other` and the stream is no longer parsed. */
const MAX_HEAD = 64 * 1024;

type State = { kind: 'head' } | { kind: 'body'; left: number } | { kind: 'chunk-size' } | { kind: 'chunk-data'; left: number } | { kind: 'chunk-crlf' } | { kind: 'trailer' } | { kind: 'lost' };

/** Classify one request from its method, target and headers (lower-cased names). */
export function classifyRequest(method: string, target: string, headers: ReadonlyMap<string, string>): keyof StoreRequestCounts {
  const m = method.toUpperCase();
  if (m === 'HEAD') return 'head';
  if (m === 'PUT') return 'put';
  if (m !== 'GET') return 'other';
  const q = target.indexOf('?');
  const path = (q < 0 ? target : target.slice(0, q)).replace(/^[a-z]+:\/\/[^/]+/i, '');
  const query = q < 0 ? '' : target.slice(q + 1);
  if (/(^|&)list-type=/.test(query)) return 'list';
  // Path-style `/bucket` or `/bucket/`, virtual-hosted `/`: a GET of the bucket itself is a listing.
  if (/^\/[^/]*\/?$/.test(path)) return 'list';
  return headers.has('range') ? 'rangedGet' : 'get';
}

/** One connection's client -> server stream: feed it every chunk, in order. */
export class HttpRequestCounter {
  #state: State = { kind: 'head' };
  #buf: Buffer = Buffer.alloc(0);

  constructor(private readonly counts: StoreRequestCounts) {}

  push(chunk: Buffer): void {
    let data = this.#buf.byteLength > 0 ? Buffer.concat([this.#buf, chunk]) : chunk;
    this.#buf = Buffer.alloc(0);
    while (data.byteLength > 0) {
      const s = this.#state;
      if (s.kind === 'lost') return;
      if (s.kind === 'body' || s.kind === 'chunk-data') {
        const n = Math.min(s.left, data.byteLength);
        s.left -= n;
        data = data.subarray(n);
        if (s.left === 0) this.#state = s.kind === 'body' ? { kind: 'head' } : { kind: 'chunk-crlf' };
        continue;
      }
      const eol = s.kind === 'head' ? data.indexOf('\r\n\r\n') : data.indexOf('\r\n');
      if (eol < 0) {
        if (data.byteLength > MAX_HEAD) {
          this.counts.other++;
          this.#state = { kind: 'lost' };
          return;
        }
        this.#buf = Buffer.from(data);
        return;
      }
      const text = data.subarray(0, eol).toString('latin1');
      data = data.subarray(eol + (s.kind === 'head' ? 4 : 2));
      if (s.kind === 'head') this.#head(text);
      else if (s.kind === 'chunk-size') {
        const size = Number.parseInt(text.split(';')[0] ?? '', 16);
        if (!Number.isFinite(size)) this.#state = { kind: 'lost' };
        else this.#state = size === 0 ? { kind: 'trailer' } : { kind: 'chunk-data', left: size };
      } else if (s.kind === 'chunk-crlf') this.#state = { kind: 'chunk-size' };
      else if (s.kind === 'trailer' && text === '') this.#state = { kind: 'head' };
    }
  }

  #head(text: string): void {
    // Stray CRLFs between requests are allowed before a request line.
    const lines = text.replace(/^(\r\n)+/, '').split('\r\n');
    const [method, target] = (lines[0] ?? '').split(' ');
    if (method === undefined || target === undefined || method === '') {
      this.counts.other++;
      this.#state = { kind: 'lost' };
      return;
    }
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const c = line.indexOf(':');
      if (c > 0) headers.set(line.slice(0, c).trim().toLowerCase(), line.slice(c + 1).trim());
    }
    this.counts[classifyRequest(method, target, headers)]++;
    if (/\bchunked\b/i.test(headers.get('transfer-encoding') ?? '')) this.#state = { kind: 'chunk-size' };
    else {
      const len = Number(headers.get('content-length') ?? '0');
      this.#state = Number.isFinite(len) && len > 0 ? { kind: 'body', left: len } : { kind: 'head' };
    }
  }
}

/** Reading an HTTP store's response headers: versions (ETag or derived), sizes, ranges; canonical URLs. */
import type { IncomingHttpHeaders } from 'node:http';

export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The canonical form of an HTTP store URL: each path segment percent-decoded and
 * re-encoded with `encodeURIComponent`, so one file has one URL however a server's
 * index or a user spelled it (`a b`, `a%20b`; `+` and `%2B`). No fragment.
 */
export function canonicalHttpUrl(url: string | URL): string {
  const u = new URL(url);
  u.hash = '';
  u.pathname = u.pathname
    .split('/')
    .map((seg) => {
      try {
        return encodeURIComponent(decodeURIComponent(seg));
      } catch {
        return seg;
      }
    })
    .join('/');
  return u.href;
}

/** Version tags from a server's ETag; without one, derived from size and Last-Modified (always containing a space). */
function normalizeEtag(raw: string): string {
  const t = raw.trim();
  const weak = t.startsWith('W/');
  const body = weak ? t.slice(2) : t;
  const unq = body.length >= 2 && body.startsWith('"') && body.endsWith('"') ? body.slice(1, -1) : body;
  return weak ? `W/${unq}` : unq;
}

function derivedEtag(size: number | undefined, lastModified: string | undefined): string {
  return `${size ?? '?'}-${lastModified ?? '(no Last-Modified)'}`;
}

export function etagOf(headers: IncomingHttpHeaders, size: number | undefined): string {
  const e = header(headers, 'etag');
  return e !== undefined && e.trim() !== '' ? normalizeEtag(e) : derivedEtag(size, header(headers, 'last-modified'));
}

/** Whether an etag is a server's strong ETag, which `If-Match` can check. Derived tags contain a space; ETags cannot. */
export function isStrongServerEtag(etag: string): boolean {
  return !etag.startsWith('W/') && !etag.includes(' ') && etag.length > 0;
}

/** Whether a response is of the version `expected`, as far as its headers tell. */
export function versionMatches(expected: string, headers: IncomingHttpHeaders, size: number | undefined): boolean {
  const e = header(headers, 'etag');
  if (e !== undefined && e.trim() !== '') return normalizeEtag(e) === expected;
  // A strong tag from an earlier response, none on this one: If-Match was sent; nothing more to compare.
  if (isStrongServerEtag(expected)) return true;
  return derivedEtag(size, header(headers, 'last-modified')) === expected;
}

export function parseContentRange(v: string | undefined): { start: number; end: number; total: number | undefined } | undefined {
  const m = v === undefined ? null : /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(v.trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

export function parseLength(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
  return Number(v);
}

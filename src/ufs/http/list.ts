/**
 * Listing an HTTP store from HTML directory indexes (nginx, Apache, `python -m
 * http.server`): direct children only, directories descended in URL byte order, each
 * file's size and version from a HEAD (`listConcurrency` in flight).
 */
import { AccessDeniedError, CorruptDataError, ErrorCodes, GranaryError, throwIfAborted } from '../../errors.js';
import { compareBytes } from '../memory.js';
import type { FileInfo } from '../types.js';
import type { HttpContext } from './context.js';
import { canonicalHttpUrl } from './headers.js';

/** Largest directory index page the lister reads. */
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') {
      const cp = e[1] === 'x' || e[1] === 'X' ? Number.parseInt(e.slice(2), 16) : Number.parseInt(e.slice(1), 10);
      return Number.isFinite(cp) && cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

/** Every `href` of every `<a>` in an HTML page, entity-decoded. */
export function parseHrefs(html: string): string[] {
  const out: string[] = [];
  const re = /<a\s[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))/gi;
  for (let m = re.exec(html); m !== null; m = re.exec(html)) out.push(decodeEntities(m[1] ?? m[2] ?? m[3] ?? ''));
  return out;
}

async function fetchIndex(ctx: HttpContext, dir: URL, prefixUrl: string, signal: AbortSignal | undefined): Promise<string | undefined> {
  return ctx.withRetry('list', prefixUrl, signal, async (s) => {
    const res = await ctx.send(dir, 'GET', s, { accept: 'text/html' });
    if (res.statusCode === 404 || res.statusCode === 410) {
      await res.body.dump().catch(() => {});
      return undefined;
    }
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => {});
      if (res.statusCode === 403) {
        throw new AccessDeniedError(`Cannot list ${dir.href} (listing ${prefixUrl}): the server refused its directory index (403)`, {
          url: prefixUrl,
        });
      }
      ctx.throwForStatus(res.statusCode, prefixUrl, 'list');
    }
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res.body as AsyncIterable<Buffer>) {
      n += c.byteLength;
      if (n > MAX_INDEX_BYTES) {
        throw new CorruptDataError(`Directory index ${dir.href} is larger than ${MAX_INDEX_BYTES} bytes (listing ${prefixUrl})`, { url: prefixUrl });
      }
      chunks.push(c);
    }
    ctx.counter.read(n);
    return Buffer.concat(chunks).toString('utf8');
  });
}

/** Every file under `dir` whose canonical URL starts with `filter`, in URL byte order. */
export async function* walk(ctx: HttpContext, dir: URL, filter: string, prefixUrl: string, signal: AbortSignal | undefined): AsyncGenerator<FileInfo> {
  throwIfAborted(signal);
  ctx.checkOpen(prefixUrl);
  const dirUrl = canonicalHttpUrl(dir);
  const html = await fetchIndex(ctx, dir, prefixUrl, signal);
  // A missing directory lists nothing, as an empty S3 prefix does.
  if (html === undefined) return;
  type Item = { url: string; target: URL; dir: boolean };
  const seen = new Set<string>();
  const items: Item[] = [];
  for (const href of parseHrefs(html)) {
    let abs: URL;
    try {
      abs = new URL(href, dir);
    } catch {
      continue;
    }
    // Only direct children: parent links, sort links (`?C=N;O=D`), off-site links and deeper links are skipped.
    if (abs.origin !== dir.origin || abs.search !== '') continue;
    abs.hash = '';
    const url = canonicalHttpUrl(abs);
    if (!url.startsWith(dirUrl) || url.length === dirUrl.length) continue;
    const rest = url.slice(dirUrl.length);
    const isDir = rest.endsWith('/');
    if ((isDir ? rest.slice(0, -1) : rest).includes('/')) continue;
    if (!url.startsWith(filter) && !(isDir && filter.startsWith(url))) continue;
    if (seen.has(url)) continue;
    seen.add(url);
    items.push({ url, target: abs, dir: isDir });
  }
  // Sorted per directory, with directories' trailing '/', descending in order: the whole tree comes out in URL byte order.
  items.sort((a, b) => compareBytes(a.url, b.url));
  for (let i = 0; i < items.length; ) {
    const item = items[i] as Item;
    if (item.dir) {
      yield* walk(ctx, item.target, filter, prefixUrl, signal);
      i++;
      continue;
    }
    const files: Item[] = [];
    while (i < items.length && !(items[i] as Item).dir) files.push(items[i++] as Item);
    yield* mapOrdered(files, ctx.listConcurrency, (f) =>
      ctx.stat(f.target, f.url, signal).catch((err: unknown) => {
        // Gone between the index and the HEAD: not part of the listing.
        if (err instanceof GranaryError && err.code === ErrorCodes.NOT_FOUND) return undefined;
        throw err;
      }),
    );
  }
}

/** `fn` over `items` with at most `window` calls in flight, yielding results in input order (skipping `undefined`). */
async function* mapOrdered<T, R>(items: readonly T[], window: number, fn: (item: T) => Promise<R | undefined>): AsyncGenerator<R> {
  const pending: Promise<R | undefined>[] = [];
  let next = 0;
  const fill = (): void => {
    while (next < items.length && pending.length < window) {
      const p = fn(items[next++] as T);
      // Rejections are seen when awaited; one left behind by an early exit must not go unhandled.
      p.catch(() => {});
      pending.push(p);
    }
  };
  fill();
  for (let p = pending.shift(); p !== undefined; p = pending.shift()) {
    const v = await p;
    fill();
    if (v !== undefined) yield v;
  }
}

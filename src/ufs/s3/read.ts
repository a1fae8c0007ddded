/**
 * The S3 read path: exact `bytes=a-b` ranges (never suffix ranges, which some S3 clones
 * get wrong), the length and ETag of every response checked, large reads split into
 * parallel ranged GETs pinned to one version with `If-Match`, and whole-object reads
 * that cost one GET when the object fits in one part. Every body is read to its end,
 * so its connection goes back to the keep-alive pool.
 */
import { setMaxListeners } from 'node:events';
import { RangeNotSatisfiableError, UnavailableError, VersionChangedError } from '../../errors.js';
import type { RequestCounter } from '../counters.js';
import type { FileInfo } from '../types.js';
import type { S3Location } from '../url.js';
import { normalizeEtag, parseContentRange } from './errors.js';
import type { S3Transport } from './transport.js';

export interface ReadContext {
  readonly transport: S3Transport;
  readonly counter: RequestCounter;
  readonly partSize: number;
  readonly parallelism: number;
  /** One request with the adapter's deadline, retries and error mapping. */
  retry<T>(url: string, op: string, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T>;
  stat(url: string, signal: AbortSignal | undefined): Promise<FileInfo>;
}

/** What one read asks for: the object, and the version and size the caller expects (if any). */
export interface ReadTarget {
  url: string;
  loc: S3Location;
  etag: string | undefined;
  size: number | undefined;
  signal: AbortSignal | undefined;
}

/** Where a part's bytes go: a given slice, or one allocated once the response tells the object's size. */
type Sink = Uint8Array | ((total: number) => Uint8Array);

/**
 * Abort `child` when `parent` aborts; returns the unlink function. Used instead of
 * `AbortSignal.any`, which on Node 20 keeps every combined signal reachable from a
 * long-lived parent (a loader's signal passed to thousands of reads).
 */
export function linkAbort(parent: AbortSignal | undefined, child: AbortController): () => void {
  if (!parent) return () => undefined;
  if (parent.aborted) {
    child.abort(parent.reason);
    return () => undefined;
  }
  const onAbort = (): void => child.abort(parent.reason);
  parent.addEventListener('abort', onAbort, { once: true });
  return () => parent.removeEventListener('abort', onAbort);
}

/**
 * A buffer not from Buffer's shared pool, so the result owns its ArrayBuffer (cheap to
 * transfer to a worker thread); every byte is overwritten by the read.
 */
function allocate(length: number): Uint8Array {
  const buf = Buffer.allocUnsafeSlow(length);
  return new Uint8Array(buf.buffer, buf.byteOffset, length);
}

function sizeChanged(t: ReadTarget, total: number): Error {
  return new VersionChangedError(`Object ${t.url} changed: expected size ${String(t.size)}, store has ${total} bytes`, { url: t.url });
}

/** `length` bytes at `offset` (length > 0), as one GET or parallel ranged GETs. */
export async function readRange(ctx: ReadContext, t: ReadTarget, offset: number, length: number): Promise<Uint8Array> {
  const out = allocate(length);
  try {
    if (length <= ctx.partSize) await readPart(ctx, t, offset, out);
    else await readParallel(ctx, t, offset, out);
  } catch (err) {
    // A range inside the size the caller expects, refused (416): the object is shorter now.
    if (err instanceof RangeNotSatisfiableError && t.size !== undefined && offset + length <= t.size) {
      throw new VersionChangedError(`Object ${t.url} changed: expected size ${t.size}, the store refused range ${offset}+${length}`, { url: t.url, cause: err });
    }
    throw err;
  }
  return out;
}

/**
 * The whole object. With a known size, a ranged read of exactly it (one GET up to
 * `partSize`); without, a GET of the first `partSize` bytes tells the size (S3 clamps
 * the range to the object) and the rest follows in parallel, pinned to that version.
 */
export async function readWhole(ctx: ReadContext, t: ReadTarget): Promise<Uint8Array> {
  if (t.size === 0) return readEmpty(ctx, t);
  if (t.size !== undefined) return readRange(ctx, t, 0, t.size);
  let whole: Uint8Array | undefined;
  let version: string;
  try {
    version = await readPart(ctx, t, 0, (total) => {
      whole = allocate(total);
      return whole.subarray(0, Math.min(total, ctx.partSize));
    });
  } catch (err) {
    // S3 answers 416 to any range of an empty object.
    if (!(err instanceof RangeNotSatisfiableError) || whole !== undefined) throw err;
    const info = await ctx.stat(t.url, t.signal);
    if (t.etag !== undefined && info.etag !== normalizeEtag(t.etag)) {
      throw new VersionChangedError(`Object ${t.url} changed: expected version ${t.etag}, store has ${info.etag}`, { url: t.url });
    }
    return info.size === 0 ? new Uint8Array(0) : readWhole(ctx, { ...t, etag: info.etag, size: info.size });
  }
  const out = whole as Uint8Array;
  // The rest pinned to the version the first part had (a store without ETags: unpinned, size-checked).
  if (out.byteLength > ctx.partSize) await readParallel(ctx, { ...t, etag: version || undefined, size: out.byteLength }, ctx.partSize, out.subarray(ctx.partSize));
  return out;
}

/** An object the caller knows to be empty: a GET without a range, which S3 answers with 200 and no body. */
async function readEmpty(ctx: ReadContext, t: ReadTarget): Promise<Uint8Array> {
  const pinned = t.etag === undefined ? undefined : normalizeEtag(t.etag);
  await ctx.retry(t.url, 'read', t.signal, async (signal) => {
    const res = await ctx.transport.get(t.loc, undefined, pinned, signal);
    let n = 0;
    for await (const chunk of res.body ?? []) n += chunk.byteLength;
    const got = normalizeEtag(res.etag);
    if (pinned !== undefined && got !== undefined && got !== pinned) {
      throw new VersionChangedError(`Object ${t.url} changed: expected version ${pinned}, store returned ${got}`, { url: t.url });
    }
    const total = res.contentLength ?? n;
    if (total !== 0) throw sizeChanged(t, total);
  });
  return new Uint8Array(0);
}

/**
 * Read one part at `offset` into `sink` with one ranged GET (retried; a retry asks only
 * for the bytes still missing). Resolves with the version read. `onHeaders` fires once,
 * when the first response's headers are in.
 */
async function readPart(ctx: ReadContext, t: ReadTarget, offset: number, sink: Sink, onHeaders?: (etag: string, total: number | undefined) => void): Promise<string> {
  let out = typeof sink === 'function' ? undefined : sink;
  let filled = 0;
  let version = t.etag === undefined ? undefined : normalizeEtag(t.etag);
  let headersSeen = false;
  await ctx.retry(t.url, 'read', t.signal, async (signal) => {
    const start = offset + filled;
    const end = offset + (out ? out.byteLength : ctx.partSize) - 1;
    const pinned = version;
    const res = await ctx.transport.get(t.loc, `bytes=${start}-${end}`, pinned, signal);
    const body = res.body;
    const fail = (e: Error): never => {
      body?.destroy();
      throw e;
    };
    const got = normalizeEtag(res.etag);
    // Checked even with If-Match sent: not every S3 clone honours it (s3rver does not).
    if (pinned !== undefined && got !== undefined && got !== pinned) {
      fail(new VersionChangedError(`Object ${t.url} changed: expected version ${pinned}, store returned ${got}`, { url: t.url }));
    }
    const cr = parseContentRange(res.contentRange);
    const total = cr ? cr.total : res.contentLength;
    if (t.size !== undefined && total !== undefined && total !== t.size) fail(sizeChanged(t, total));
    if (!out) {
      if (total === undefined) fail(new UnavailableError(`S3 told no object size reading ${t.url} (no Content-Range total or Content-Length)`, { url: t.url }));
      out = (sink as (total: number) => Uint8Array)(total as number);
    }
    const stop = offset + out.byteLength;
    if (total !== undefined && stop > total) {
      fail(new RangeNotSatisfiableError(`Range ${offset}+${out.byteLength} is past the end of ${t.url} (size ${total})`, { url: t.url }));
    }
    // A 200 without Content-Range is the whole object from byte 0: skip to `start`.
    const bodyStart = cr ? cr.start : 0;
    if (bodyStart > start || (cr && cr.end < stop - 1 && (total === undefined || cr.end + 1 < total))) {
      fail(new UnavailableError(`S3 returned bytes ${res.contentRange ?? 'of the whole object'} for range ${start}-${stop - 1} of ${t.url}`, { url: t.url }));
    }
    if (version === undefined && got !== undefined) version = got;
    if (!headersSeen) {
      headersSeen = true;
      onHeaders?.(got ?? '', total);
    }
    if (out.byteLength === 0) {
      // An empty object answered with a range (s3rver: 206 `bytes 0-0/0` and a body it never sends).
      body?.destroy();
      return;
    }
    if (!body) return fail(new UnavailableError(`S3 returned no body for range ${start}-${stop - 1} of ${t.url}`, { url: t.url }));
    const onAbort = (): void => body.destroy(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
    signal.addEventListener('abort', onAbort, { once: true });
    let pos = bodyStart;
    const dest = out;
    try {
      // Read to the end of the body, even past `stop` (only a server ignoring the range
      // sends more): leaving it early would destroy the connection instead of reusing it.
      for await (const chunk of body) {
        const from = Math.max(pos, offset + filled);
        const to = Math.min(pos + chunk.byteLength, stop);
        if (to > from) {
          dest.set(chunk.subarray(from - pos, to - pos), from - offset);
          filled += to - from;
          ctx.counter.read(to - from);
        }
        pos += chunk.byteLength;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    if (signal.aborted) throw signal.reason;
    if (filled < dest.byteLength) {
      throw new UnavailableError(`S3 body for ${t.url} ended early: got ${filled} of ${dest.byteLength} bytes from offset ${offset}`, { url: t.url });
    }
  });
  return version ?? '';
}

/**
 * Split a large read into `partSize` ranges. The first GET fixes the version (its
 * ETag, or the caller's) and reveals the object size; the rest follow with
 * `If-Match`, `parallelism` at a time, each writing straight into its slice of `out`.
 */
async function readParallel(ctx: ReadContext, t: ReadTarget, offset: number, out: Uint8Array): Promise<void> {
  const parts: Array<[number, number]> = [];
  for (let at = 0; at < out.byteLength; at += ctx.partSize) parts.push([at, Math.min(ctx.partSize, out.byteLength - at)]);
  const stopAll = new AbortController();
  // Every part in flight listens on this one signal: `parallelism` listeners are expected.
  setMaxListeners(0, stopAll.signal);
  const unlink = linkAbort(t.signal, stopAll);
  const part: ReadTarget = { ...t, signal: stopAll.signal };
  let firstError: unknown;
  const failed = (err: unknown): void => {
    if (firstError === undefined) firstError = err;
    stopAll.abort(err);
  };
  const [first] = parts;
  if (!first) return;
  let onHeaders!: (total: number | undefined) => void;
  const headers = new Promise<number | undefined>((resolve) => {
    onHeaders = resolve;
  });
  const queue = parts.slice(1);
  const run = async (): Promise<void> => {
    for (let p = queue.shift(); p !== undefined && firstError === undefined; p = queue.shift()) {
      const [at, len] = p;
      try {
        await readPart(ctx, part, offset + at, out.subarray(at, at + len));
      } catch (err) {
        failed(err);
      }
    }
  };
  const firstPart = readPart(ctx, part, offset, out.subarray(0, first[1]), (e, total) => {
    if (part.etag === undefined && e.length > 0) part.etag = e;
    onHeaders(total);
  }).then(
    () => onHeaders(undefined),
    (err: unknown) => {
      failed(err);
      onHeaders(undefined);
    },
  );
  const workers: Array<Promise<void>> = [firstPart.then(run)];
  const total = await headers;
  if (total !== undefined && offset + out.byteLength > total) {
    failed(new RangeNotSatisfiableError(`Range ${offset}+${out.byteLength} is past the end of ${t.url} (size ${total})`, { url: t.url }));
  }
  for (let i = 1; i < ctx.parallelism && firstError === undefined; i++) workers.push(run());
  await Promise.allSettled(workers);
  unlink();
  if (t.signal?.aborted) throw t.signal.reason;
  if (firstError !== undefined) throw firstError;
}

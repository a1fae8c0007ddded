/**
 * The worker's read-through core: object versions from the store's metadata (cached
 * for the metadata TTL), pages from the page store, and one store request per run of
 * missing pages, shared by every reader waiting on those pages.
 */
import { channel } from 'node:diagnostics_channel';
import { crc32 } from '../util/crc32.js';
import { ErrorCodes, RangeNotSatisfiableError, VersionChangedError, isGranaryError } from '../errors.js';
import type { FileInfo, UnderFileSystem } from '../ufs/types.js';
import type { WorkerHints } from './hints.js';
import { MetadataCache } from './metadata-cache.js';
import { pieceCrc, rememberPageCrc } from './page-checksum.js';
import { pageKey, pagesForRange, type PageKey } from './page-key.js';
import type { PageStore } from './page-store.js';
import { SingleFlight } from './single-flight.js';
import type { WorkerMetrics } from './worker-metrics.js';

const diag = {
  read: channel('granary:worker:read'),
  fetch: channel('granary:worker:fetch'),
};

/** What the core needs of a store. */
export type StoreReader = Pick<UnderFileSystem, 'stat' | 'list' | 'read'>;

export interface ReadThroughOptions {
  workerId: string;
  pageSize: number;
  fetchRunPages: number;
  metadataTtlMs: number;
  store: PageStore;
  /** The store client that serves a URL. */
  storeFor: (url: string) => StoreReader;
  metrics: WorkerMetrics;
  hints: WorkerHints | undefined;
  /** Aborts every store call in flight when the worker stops. */
  signal: AbortSignal;
  /** Whether the worker is closing: prefetches stop starting. */
  closing: () => boolean;
}

export interface ReadThroughCounters {
  hits: number;
  misses: number;
  storeRequests: number;
  bytesServed: number;
  bytesFromStore: number;
}

export class ReadThrough {
  readonly counters: ReadThroughCounters = { hits: 0, misses: 0, storeRequests: 0, bytesServed: 0, bytesFromStore: 0 };
  readonly #o: ReadThroughOptions;
  readonly #meta: MetadataCache;
  readonly #flight = new SingleFlight<PageKey, Uint8Array>();

  constructor(o: ReadThroughOptions) {
    this.#o = o;
    this.#meta = new MetadataCache({
      ttlMs: o.metadataTtlMs,
      source: {
        stat: async (url) => {
          this.#countStore('stat');
          const value = await o.storeFor(url).stat(url, { signal: o.signal });
          return { value, fetchedAt: Date.now() };
        },
        list: async (prefix) => {
          this.#countStore('list');
          const value: FileInfo[] = [];
          for await (const f of o.storeFor(prefix).list(prefix, { signal: o.signal })) value.push(f);
          return { value, fetchedAt: Date.now() };
        },
      },
    });
  }

  #countStore(kind: 'stat' | 'list' | 'get'): void {
    this.counters.storeRequests++;
    this.#o.metrics.storeRequests.inc({ kind });
  }

  /** Bytes sent to clients, for the counters. */
  served(bytes: number): void {
    this.counters.bytesServed += bytes;
    this.#o.metrics.bytesServed.inc(bytes);
  }

  /** A URL's metadata no older than `maxAgeMs` (and the TTL); 0 asks the store now. */
  async stat(url: string, maxAgeMs?: number): Promise<{ info: FileInfo; fetchedAt: number }> {
    const e = await this.#meta.stat(url, maxAgeMs);
    return { info: e.value, fetchedAt: e.fetchedAt };
  }

  async list(prefix: string, maxAgeMs: number | undefined): Promise<{ value: FileInfo[]; fetchedAt: number }> {
    return this.#meta.list(prefix, maxAgeMs);
  }

  /** Drop pages of one version that a client found corrupt; resolves with how many were held. */
  async dropPages(url: string, etag: string, pages: readonly number[]): Promise<number> {
    let n = 0;
    for (const i of pages) if (await this.#o.store.delete(pageKey(url, etag, i))) n++;
    return n;
  }

  async invalidate(url: string): Promise<void> {
    this.#meta.invalidate(url);
    await this.#o.store.deleteFile(url);
  }

  /**
   * The object version to serve. A client that names the version and its size (from its
   * own metadata, at most one TTL old) is trusted: cached pages of that version are
   * served with no store request, and a miss reads the store with `If-Match`, which
   * answers 412 if the version is gone. Without a size, the version is checked against
   * the worker's metadata.
   */
  async version(url: string, etag: string | undefined, size?: number): Promise<FileInfo> {
    if (etag !== undefined && size !== undefined) return { url, size, etag };
    let { info } = await this.stat(url);
    if (etag !== undefined && info.etag !== etag) {
      ({ info } = await this.stat(url, 0));
      if (info.etag !== etag) {
        throw new VersionChangedError(`Object ${url} changed: asked for version ${etag}, the store has ${info.etag}`, { url });
      }
    }
    return info;
  }

  /**
   * The bytes `[offset, offset + length)` of one object version. Pages in the store
   * are used as they are; runs of missing pages are read through from the store,
   * one request per run, with `If-Match` on the version, and concurrent requests
   * for a page wait on that one read.
   */
  async readRange(url: string, offset: number, length: number, etag?: string, size?: number): Promise<{ bytes: Uint8Array; info: FileInfo; hit: string }> {
    const { pieces, info, hit } = await this.readPieces(url, offset, length, etag, size);
    if (pieces.length === 0) return { bytes: new Uint8Array(0), info, hit };
    if (pieces.length === 1) return { bytes: pieces[0] as Uint8Array, info, hit };
    const out = Buffer.allocUnsafe(length);
    let pos = 0;
    for (const p of pieces) {
      out.set(p, pos);
      pos += p.byteLength;
    }
    return { bytes: out, info, hit };
  }

  /**
   * `readRange` as the slices of pages that make up the range, in order (views, not
   * copies), and with `withCrcs` the CRC-32 of each slice: a whole page's is the one
   * computed when it came from the store, a partial page's is computed now.
   */
  async readPieces(
    url: string,
    offset: number,
    length: number,
    etag?: string,
    size?: number,
    withCrcs = false,
  ): Promise<{ pieces: Uint8Array[]; info: FileInfo; hit: string; crcs?: number[] }> {
    const info = await this.version(url, etag, size);
    if (offset + length > info.size) {
      throw new RangeNotSatisfiableError(`Range ${offset}+${length} is past the end of ${url} (size ${info.size})`, { url });
    }
    const ps = this.#o.pageSize;
    const { first, count } = pagesForRange(offset, length, ps);
    const pages: (Uint8Array | Promise<Uint8Array>)[] = new Array<Uint8Array | Promise<Uint8Array>>(count);
    const missing: number[] = [];
    for (let i = 0; i < count; i++) {
      const got = await this.#o.store.get(pageKey(url, info.etag, first + i));
      if (got) pages[i] = got;
      else missing.push(i);
    }
    this.counters.hits += count - missing.length;
    this.counters.misses += missing.length;
    this.#o.metrics.hits.inc(count - missing.length);
    this.#o.metrics.misses.inc(missing.length);
    // Group missing pages into runs of consecutive indices, each fetched once.
    for (let s = 0; s < missing.length; ) {
      let e = s;
      while (e + 1 < missing.length && missing[e + 1] === (missing[e] ?? 0) + 1 && e - s + 1 < this.#o.fetchRunPages) e++;
      const runFirst = first + (missing[s] ?? 0);
      const runCount = e - s + 1;
      const fetched = this.fetchRun(url, info, runFirst, runCount);
      for (let k = 0; k < runCount; k++) pages[(missing[s] ?? 0) + k] = fetched[k] as Promise<Uint8Array>;
      s = e + 1;
    }
    const resolved = missing.length === 0 ? (pages as Uint8Array[]) : await Promise.all(pages.map((p) => Promise.resolve(p)));
    diag.read.publish({ worker: this.#o.workerId, url, offset, length, pages: count, missing: missing.length });
    const hit = missing.length === 0 ? 'hit' : missing.length === count ? 'miss' : 'partial';
    const crcs: number[] | undefined = withCrcs ? [] : undefined;
    if (count === 0) return { pieces: [], info, hit, ...(crcs && { crcs }) };
    const start = offset - first * ps;
    const pieces: Uint8Array[] = [];
    let pos = 0;
    for (let i = 0; i < count; i++) {
      const p = resolved[i] as Uint8Array;
      const from = i === 0 ? start : 0;
      const take = Math.min(p.byteLength - from, length - pos);
      pieces.push(p.subarray(from, from + take));
      crcs?.push(pieceCrc(p, from, take));
      pos += take;
    }
    return { pieces, info, hit, ...(crcs && { crcs }) };
  }

  /** Fetch pages [first, first+count) of one version; one promise per page, shared with concurrent readers. */
  fetchRun(url: string, info: FileInfo, first: number, count: number): Promise<Uint8Array>[] {
    const ps = this.#o.pageSize;
    const keys = Array.from({ length: count }, (_, k) => pageKey(url, info.etag, first + k));
    let run: Promise<Uint8Array[]> | undefined;
    const getRun = (): Promise<Uint8Array[]> => {
      run ??= (async () => {
        const start = first * ps;
        const end = Math.min(info.size, (first + count) * ps);
        this.#countStore('get');
        diag.fetch.publish({ worker: this.#o.workerId, url, offset: start, length: end - start });
        let bytes: Uint8Array;
        try {
          bytes = await this.#o.storeFor(url).read(url, start, end - start, { etag: info.etag, size: info.size, signal: this.#o.signal });
        } catch (err) {
          // The version is gone from the store: whatever this worker believed of the URL expires now.
          if (isGranaryError(err) && err.code === ErrorCodes.VERSION_CHANGED) this.#meta.expire(url);
          throw err;
        }
        if (bytes.byteLength !== end - start) {
          this.#meta.expire(url);
          throw new VersionChangedError(`Object ${url} changed: version ${info.etag} should hold ${end - start} bytes at ${start}, the store sent ${bytes.byteLength}`, { url });
        }
        this.counters.bytesFromStore += bytes.byteLength;
        this.#o.metrics.bytesFromStore.inc(bytes.byteLength);
        const out: Uint8Array[] = [];
        for (let k = 0; k < count; k++) {
          const page = bytes.subarray(k * ps, Math.min(bytes.byteLength, (k + 1) * ps));
          // The page's checksum, from the store's bytes: it travels with the page from here on.
          rememberPageCrc(page, crc32(page));
          out.push(page);
          // Belady's bypass: a page needed later than everything resident is served, not kept.
          if (this.#o.hints?.admitsKey(keys[k] as PageKey) ?? true) await this.#o.store.put(keys[k] as PageKey, page);
        }
        return out;
      })();
      return run;
    };
    return keys.map((key, k) => this.#flight.run(key, async () => ((await getRun())[k] as Uint8Array)));
  }

  /** Pages a client read straight from the tier (short-circuit): their recency, and hits. */
  touch(keys: readonly PageKey[]): { touched: number } {
    let touched = 0;
    for (const k of keys) if (this.#o.store.touch(k)) touched++;
    this.counters.hits += touched;
    this.#o.metrics.hits.inc(touched);
    return { touched };
  }

  /** A prefetch of hinted pages: the same read-through (and single flight) as a read. */
  async prefetch(url: string, etag: string, first: number, count: number): Promise<void> {
    if (this.#o.closing()) return;
    const info = await this.version(url, etag);
    const last = Math.min(first + count, Math.ceil(info.size / this.#o.pageSize));
    if (last <= first) return;
    await Promise.all(this.fetchRun(url, info, first, last - first));
  }
}

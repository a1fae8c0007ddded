/**
 * A page cache in this process in front of any `UnderFileSystem`, the way hyparquet's
 * `cachedAsyncBuffer` wraps an `AsyncBuffer`: reads are served in whole pages of one
 * object version, kept in a `PageStore` (memory, and disk when given a directory), and
 * only the missing pages are read from the inner store.
 */
import { ClosedError, throwIfAborted } from '../errors.js';
import type { FileInfo, OpOptions, ReadOptions, UnderFileSystem, WriteData } from '../ufs/types.js';
import { readRange } from '../ufs/url.js';
import { pageKey, pagesForRange } from './page-key.js';
import { PageStore } from './page-store.js';

const MiB = 1024 * 1024;

export interface LocalPageTierOptions {
  /** Bytes of pages kept in memory. */
  memoryBytes: number;
  /** A directory for a disk tier of its own (no other store may use it). */
  diskDir?: string | undefined;
  /** Bytes of pages kept on disk; with `diskDir` only. */
  diskBytes?: number | undefined;
  /** Bytes per page. @default 1 MiB */
  pageSize?: number | undefined;
}

export class LocalPageTier implements UnderFileSystem {
  readonly #inner: UnderFileSystem;
  readonly #options: LocalPageTierOptions;
  /** Opened on first use: a client that never reads takes no directory. */
  #store: Promise<PageStore> | undefined;
  #closing: Promise<void> | undefined;
  readonly #counts = { hits: 0, bytesFromCache: 0 };

  /** `inner` stays the caller's: `close()` closes the page store only. */
  constructor(inner: UnderFileSystem, options: LocalPageTierOptions) {
    this.#inner = inner;
    this.#options = options;
  }

  /** Pages served from this tier, and their bytes. */
  stats(): { hits: number; bytesFromCache: number } {
    return { ...this.#counts };
  }

  async stat(url: string, options?: OpOptions): Promise<FileInfo> {
    this.#checkOpen(url);
    return this.#inner.stat(url, options);
  }

  async *list(prefixUrl: string, options?: OpOptions): AsyncIterable<FileInfo> {
    this.#checkOpen(prefixUrl);
    yield* this.#inner.list(prefixUrl, options);
  }

  async read(url: string, offset?: number, length?: number, options: ReadOptions = {}): Promise<Uint8Array> {
    this.#checkOpen(url);
    const range = readRange(url, offset, length);
    if (range === undefined) {
      const info = await this.#inner.stat(url, options);
      return this.read(url, 0, info.size, { ...options, etag: options.etag ?? info.etag });
    }
    ({ offset, length } = range);
    const { signal } = options;
    throwIfAborted(signal);
    if (length === 0) return this.#inner.read(url, offset, length, options);
    let info: FileInfo | undefined;
    const etag = options.etag ?? (info = await this.#inner.stat(url, { signal })).etag;
    const store = await this.#open();
    const ps = store.pageSize;
    const { first, count } = pagesForRange(offset, length, ps);
    const pages: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      const key = pageKey(url, etag, first + i);
      let page = await store.get(key, { signal });
      if (page) {
        this.#counts.hits++;
        this.#counts.bytesFromCache += page.byteLength;
      } else {
        info ??= await this.#inner.stat(url, { signal });
        const start = (first + i) * ps;
        const len = Math.min(ps, info.size - start);
        // Only a page of the version the size belongs to can be cut right; a range past
        // the end gets the inner store's own answer.
        if (info.etag !== etag || len <= 0) return this.#inner.read(url, offset, length, { etag, signal });
        page = await this.#inner.read(url, start, len, { etag, size: info.size, signal });
        await store.put(key, page, { signal });
      }
      pages.push(page);
    }
    const out = new Uint8Array(length);
    let pos = 0;
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i] as Uint8Array;
      const from = i === 0 ? offset - first * ps : 0;
      const take = Math.min(p.byteLength - from, length - pos);
      if (take < 0) break;
      out.set(p.subarray(from, from + take), pos);
      pos += take;
    }
    if (pos !== length) return this.#inner.read(url, offset, length, { etag, signal });
    return out;
  }

  async write(url: string, data: WriteData, options?: OpOptions): Promise<FileInfo> {
    this.#checkOpen(url);
    const info = await this.#inner.write(url, data, options);
    await this.forget(url, options);
    return info;
  }

  async delete(url: string, options?: OpOptions): Promise<void> {
    this.#checkOpen(url);
    await this.#inner.delete(url, options);
    await this.forget(url, options);
  }

  /** Drop every page of every version of `url`. */
  async forget(url: string, options: OpOptions = {}): Promise<void> {
    if (this.#store) await (await this.#store).deleteFile(url, options);
  }

  /** Close the page store (and release its directory). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const store = await this.#store?.catch(() => undefined);
      await store?.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): Promise<PageStore> {
    this.#checkOpen('a page read');
    const o = this.#options;
    this.#store ??= PageStore.open({ pageSize: o.pageSize ?? MiB, memoryBytes: o.memoryBytes, diskDir: o.diskDir, diskBytes: o.diskBytes });
    return this.#store;
  }

  #checkOpen(url: string): void {
    if (this.#closing) throw new ClosedError(`Local page tier is closed (used for ${url})`, { url });
  }
}

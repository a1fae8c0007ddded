/**
 * The client's own requests to the store, counted by kind (`CacheClient.stats().ufs`);
 * the workers' read-throughs are theirs to count.
 */
import { RequestCounter } from '../ufs/counters.js';
import type { FileInfo, ReadOptions, RequestCounts, UnderFileSystem, WriteData } from '../ufs/types.js';

export class CountedStore {
  readonly inner: UnderFileSystem;
  readonly #counter = new RequestCounter();

  constructor(inner: UnderFileSystem) {
    this.inner = inner;
  }

  counts(): RequestCounts {
    return this.#counter.snapshot();
  }

  stat(url: string, signal: AbortSignal | undefined): Promise<FileInfo> {
    this.#counter.count('stat');
    return this.inner.stat(url, { signal });
  }

  /** The whole listing, as one request in the counts however many pages it took. */
  async list(prefixUrl: string, signal: AbortSignal | undefined): Promise<FileInfo[]> {
    this.#counter.count('list');
    const files: FileInfo[] = [];
    for await (const f of this.inner.list(prefixUrl, { signal })) files.push(f);
    return files;
  }

  async read(url: string, offset: number, length: number, options: ReadOptions): Promise<Uint8Array> {
    this.#counter.count('get');
    const bytes = await this.inner.read(url, offset, length, options);
    this.#counter.read(bytes.byteLength);
    return bytes;
  }

  write(url: string, data: WriteData, signal: AbortSignal | undefined): Promise<FileInfo> {
    this.#counter.count('put');
    return this.inner.write(url, data, { signal });
  }

  delete(url: string, signal: AbortSignal | undefined): Promise<void> {
    this.#counter.count('delete');
    return this.inner.delete(url, { signal });
  }
}

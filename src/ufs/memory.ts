import { createHash } from 'node:crypto';
import { ClosedError, NotFoundError, RangeNotSatisfiableError, VersionChangedError, throwIfAborted } from '../errors.js';
import { RequestCounter } from './counters.js';
import { checkRange, readRange, schemeOf } from './url.js';
import type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, WriteData } from './types.js';

interface Entry {
  bytes: Uint8Array;
  info: FileInfo;
}

/**
 * An in-memory store for fast unit tests: objects keyed by their full URL, any
 * supported scheme. Behaves like the real adapters (versions, ranges, sorted
 * recursive listing, request counts); integration tests use the real stores.
 */
export class MemoryUfs implements StoreAdapter {
  readonly schemes: readonly string[];
  readonly #objects = new Map<string, Entry>();
  readonly #counter = new RequestCounter();
  #closed = false;
  #clock = 0;

  constructor(options: { schemes?: readonly string[] } = {}) {
    this.schemes = options.schemes ?? ['s3', 'file', 'http', 'https'];
  }

  requestCounts(): RequestCounts {
    return this.#counter.snapshot();
  }

  async stat(url: string, options: OpOptions = {}): Promise<FileInfo> {
    this.#check(url, options);
    this.#counter.count('stat');
    return { ...this.#get(url).info };
  }

  async *list(prefixUrl: string, options: OpOptions = {}): AsyncIterable<FileInfo> {
    this.#check(prefixUrl, options);
    this.#counter.count('list');
    const keys = [...this.#objects.keys()].filter((k) => k.startsWith(prefixUrl)).sort(compareBytes);
    for (const k of keys) {
      const e = this.#objects.get(k);
      if (e) yield { ...e.info };
    }
  }

  async read(url: string, offset?: number, length?: number, options: ReadOptions = {}): Promise<Uint8Array> {
    this.#check(url, options);
    const range = readRange(url, offset, length);
    this.#counter.count('get');
    const e = this.#get(url);
    if (options.etag !== undefined && options.etag !== e.info.etag) {
      throw new VersionChangedError(`Object ${url} changed: expected version ${options.etag}, store has ${e.info.etag}`, { url });
    }
    if (options.size !== undefined) {
      checkRange(url, 0, options.size);
      if (options.size !== e.info.size) throw new VersionChangedError(`Object ${url} changed: expected size ${options.size}, store has ${e.info.size} bytes`, { url });
    }
    if (range === undefined) {
      this.#counter.read(e.info.size);
      return e.bytes.slice(0);
    }
    ({ offset, length } = range);
    if (offset + length > e.info.size) {
      throw new RangeNotSatisfiableError(`Range ${offset}+${length} is past the end of ${url} (size ${e.info.size})`, { url });
    }
    this.#counter.read(length);
    return e.bytes.slice(offset, offset + length);
  }

  async write(url: string, data: WriteData, options: OpOptions = {}): Promise<FileInfo> {
    this.#check(url, options);
    let bytes: Uint8Array;
    if (data instanceof Uint8Array) bytes = data.slice();
    else {
      const chunks: Uint8Array[] = [];
      for await (const c of data) chunks.push(c);
      bytes = new Uint8Array(Buffer.concat(chunks));
    }
    this.#counter.count('put');
    this.#counter.written(bytes.byteLength);
    const etag = createHash('md5').update(bytes).digest('hex');
    const info: FileInfo = { url, size: bytes.byteLength, etag, mtimeMs: Date.now() + ++this.#clock };
    this.#objects.set(url, { bytes, info });
    return { ...info };
  }

  async delete(url: string, options: OpOptions = {}): Promise<void> {
    this.#check(url, options);
    this.#counter.count('delete');
    this.#objects.delete(url);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #check(url: string, options: OpOptions): void {
    if (this.#closed) throw new ClosedError(`MemoryUfs is closed (used for ${url})`, { url });
    throwIfAborted(options.signal);
    schemeOf(url);
  }

  #get(url: string): Entry {
    const e = this.#objects.get(url);
    if (!e) throw new NotFoundError(`No such object: ${url}`, { url });
    return e;
  }
}

/** Order URLs by their UTF-8 bytes, as S3 lists keys. */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

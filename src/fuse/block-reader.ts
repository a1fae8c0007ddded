/**
 * Reads for the mount: the kernel's READ requests (up to 1 MiB) are served from 1 MiB
 * blocks read through the cache client at the file's listed version. A file read
 * sequentially gets its next blocks fetched ahead; blocks live in a small LRU bounded
 * in bytes, so the serving process's memory does not grow with the data read.
 */
import type { UnderFileSystem } from '../ufs/types.js';
import type { FileNode } from './tree.js';

export const BLOCK_BYTES = 1024 * 1024;

export interface BlockReaderOptions {
  /** Blocks fetched ahead of a sequential reader. @default 4 */
  readaheadBlocks?: number;
  /** Bytes of blocks kept (read and prefetched). @default 64 MiB */
  maxBytes?: number;
}

export class BlockReader {
  readonly #fs: UnderFileSystem;
  readonly #ahead: number;
  readonly #maxBytes: number;
  /** Map order is LRU order: a hit is moved to the end. */
  readonly #blocks = new Map<string, Promise<Uint8Array>>();
  readonly #sizes = new Map<string, number>();
  #bytes = 0;
  /** Per file id: where its last read ended (sequential detection). */
  readonly #lastEnd = new Map<bigint, number>();

  constructor(fs: UnderFileSystem, options: BlockReaderOptions = {}) {
    this.#fs = fs;
    this.#ahead = options.readaheadBlocks ?? 4;
    this.#maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
  }

  /** Bytes `[offset, offset + size)` of the file, clipped at its end. */
  async read(file: FileNode, offset: number, size: number): Promise<Buffer> {
    const end = Math.min(file.size, offset + size);
    if (offset >= end) return Buffer.alloc(0);
    const first = Math.floor(offset / BLOCK_BYTES);
    const last = Math.floor((end - 1) / BLOCK_BYTES);
    const sequential = this.#lastEnd.get(file.id) === offset || offset === 0;
    this.#lastEnd.set(file.id, end);
    if (this.#lastEnd.size > 4096) this.#lastEnd.delete(this.#lastEnd.keys().next().value as bigint);
    const parts: Promise<Uint8Array>[] = [];
    for (let b = first; b <= last; b++) parts.push(this.#block(file, b));
    if (sequential) {
      const lastBlock = Math.floor((file.size - 1) / BLOCK_BYTES);
      for (let b = last + 1; b <= Math.min(lastBlock, last + this.#ahead); b++) this.#block(file, b).catch(() => undefined);
    }
    const blocks = await Promise.all(parts);
    if (blocks.length === 1) {
      // One block covers the request (every aligned 1 MiB read, every small file): reply from it without a copy.
      const bytes = blocks[0] as Uint8Array;
      const from = offset - first * BLOCK_BYTES;
      return Buffer.from(bytes.buffer, bytes.byteOffset + Math.min(from, bytes.byteLength), Math.max(0, Math.min(end - offset, bytes.byteLength - from)));
    }
    const out = Buffer.allocUnsafe(end - offset);
    let at = 0;
    blocks.forEach((bytes, i) => {
      const blockStart = (first + i) * BLOCK_BYTES;
      const from = Math.max(offset, blockStart) - blockStart;
      const to = Math.min(end, blockStart + bytes.byteLength) - blockStart;
      out.set(bytes.subarray(from, to), at);
      at += to - from;
    });
    return out;
  }

  #block(file: FileNode, index: number): Promise<Uint8Array> {
    const key = `${file.id}:${index}`;
    const hit = this.#blocks.get(key);
    if (hit) {
      this.#blocks.delete(key);
      this.#blocks.set(key, hit);
      return hit;
    }
    const start = index * BLOCK_BYTES;
    const length = Math.min(BLOCK_BYTES, file.size - start);
    // A file of one block is read whole: the cache's one-request path for small files.
    const p = file.size <= BLOCK_BYTES ? this.#fs.read(file.url, undefined, undefined, { etag: file.etag }) : this.#fs.read(file.url, start, length, { etag: file.etag });
    this.#blocks.set(key, p);
    this.#sizes.set(key, length);
    this.#bytes += length;
    // A failed block is dropped, so the next request asks again.
    p.catch(() => {
      if (this.#blocks.get(key) === p) this.#drop(key);
    });
    while (this.#bytes > this.#maxBytes && this.#blocks.size > 1) this.#drop(this.#blocks.keys().next().value as string);
    return p;
  }

  #drop(key: string): void {
    this.#blocks.delete(key);
    this.#bytes -= this.#sizes.get(key) ?? 0;
    this.#sizes.delete(key);
  }
}

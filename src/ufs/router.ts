import { ClosedError, throwIfAborted } from '../errors.js';
import { addCounts, emptyCounts } from './counters.js';
import { HttpUfs, portableHttpOptions, type HttpUfsOptions } from './http.js';
import { LocalUfs, type LocalUfsOptions } from './local.js';
import { S3Ufs, portableS3Options, type S3UfsOptions } from './s3.js';
import { schemeOf, type Scheme } from './url.js';
import type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, UnderFileSystem, WriteData } from './types.js';
import { toPortable, type PortableSpec } from './portable.js';

export interface UfsOptions {
  /** Options for `s3://` URLs. Credentials and region otherwise come from the standard AWS chain. */
  s3?: S3UfsOptions | undefined;
  /** Options for `file://` URLs. */
  file?: LocalUfsOptions | undefined;
  /** Options for `http://` and `https://` URLs. */
  http?: HttpUfsOptions | undefined;
  /**
   * Adapters to use instead of the built-in ones, for the schemes they declare
   * (a test's in-memory store, a custom backend).
   */
  adapters?: readonly StoreAdapter[] | undefined;
}

/**
 * A plain copy of router options that another thread can rebuild the router from, or
 * undefined when they hold live objects: custom `adapters`, an HTTP `dispatcher`, an S3
 * credentials function.
 */
export function portableUfsOptions(options: UfsOptions): UfsOptions | undefined {
  const { s3, file, http, adapters } = options;
  if (adapters !== undefined && adapters.length > 0) return undefined;
  const out: UfsOptions = {};
  if (s3 !== undefined) {
    const o = portableS3Options(s3);
    if (!o) return undefined;
    out.s3 = o;
  }
  if (http !== undefined) {
    const o = portableHttpOptions(http);
    if (!o) return undefined;
    out.http = o;
  }
  if (file !== undefined) out.file = { ...file };
  return out;
}

/**
 * Routes each URL to the adapter for its scheme. Adapters are created on first
 * use, so a process that never touches S3 never loads credentials for it.
 */
export class UfsRouter implements UnderFileSystem {
  readonly #options: UfsOptions;
  readonly #adapters = new Map<Scheme, StoreAdapter>();
  #closed = false;

  constructor(options: UfsOptions = {}) {
    this.#options = options;
    for (const a of options.adapters ?? []) {
      for (const s of a.schemes) this.#adapters.set(schemeOf(`${s}:`), a);
    }
  }

  /** The adapter that serves a URL (created on first use). */
  adapterFor(url: string): StoreAdapter {
    if (this.#closed) throw new ClosedError(`UFS router is closed (used for ${url})`, { url });
    const scheme = schemeOf(url);
    let a = this.#adapters.get(scheme);
    if (!a) {
      if (scheme === 's3') a = new S3Ufs(this.#options.s3 ?? {});
      else if (scheme === 'file') a = new LocalUfs(this.#options.file ?? {});
      else a = new HttpUfs(this.#options.http ?? {});
      for (const s of a.schemes) if (!this.#adapters.has(schemeOf(`${s}:`))) this.#adapters.set(schemeOf(`${s}:`), a);
      this.#adapters.set(scheme, a);
    }
    return a;
  }

  /**
   * The options this router was built with, as plain data for rebuilding it in another
   * thread (`src/loader/portable-fs.ts`); undefined when it was given `adapters` or
   * per-scheme options that are not data (an HTTP `dispatcher`, an S3 credentials function).
   */
  /** `portableSpec()` for the rebuild protocol (src/ufs/portable.ts). */
  [toPortable](): PortableSpec | undefined {
    return this.portableSpec();
  }

  portableSpec(): { kind: 'router'; options: UfsOptions } | undefined {
    const options = portableUfsOptions(this.#options);
    return options && { kind: 'router', options };
  }

  /** Requests made so far, summed over every adapter. */
  requestCounts(): RequestCounts {
    let total = emptyCounts();
    for (const a of new Set(this.#adapters.values())) total = addCounts(total, a.requestCounts());
    return total;
  }

  // Every method is async so that a bad URL rejects rather than throws.

  async stat(url: string, options?: OpOptions): Promise<FileInfo> {
    return this.adapterFor(url).stat(url, options);
  }

  async *list(prefixUrl: string, options?: OpOptions): AsyncIterable<FileInfo> {
    yield* this.adapterFor(prefixUrl).list(prefixUrl, options);
  }

  async read(url: string, offset?: number, length?: number, options?: ReadOptions): Promise<Uint8Array> {
    return this.adapterFor(url).read(url, offset, length, options);
  }

  async write(url: string, data: WriteData, options?: OpOptions): Promise<FileInfo> {
    throwIfAborted(options?.signal);
    return this.adapterFor(url).write(url, data, options);
  }

  async delete(url: string, options?: OpOptions): Promise<void> {
    return this.adapterFor(url).delete(url, options);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const adapters = [...new Set(this.#adapters.values())];
    this.#adapters.clear();
    await Promise.all(adapters.map((a) => a.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** A store client that routes `s3://`, `file://` and `http(s)://` URLs to their adapters. */
export function createUfs(options: UfsOptions = {}): UfsRouter {
  return new UfsRouter(options);
}

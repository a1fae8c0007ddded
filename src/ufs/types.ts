/**
 * The under-storage ("UFS") contract. Every store adapter, and the cache client,
 * implements `UnderFileSystem`; the loader sees nothing else.
 */

/** What a store knows about one object version. */
export interface FileInfo {
  /** The object's URL, in the canonical form the adapter lists it (`s3://bucket/key`, `file:///abs/path`). */
  url: string;
  /** Size in bytes. */
  size: number;
  /**
   * The version identity: the store's ETag without quotes, or for stores without one
   * (local files, HTTP without ETag) a tag derived from size and modification time.
   * Cache keys include it; reads given it refuse to return bytes of any other version.
   */
  etag: string;
  /** Last modification time in ms since the epoch, when the store reports one. */
  mtimeMs?: number | undefined;
}

export interface OpOptions {
  /** Abort the call: it rejects with `signal.reason` and releases what it holds. */
  signal?: AbortSignal | undefined;
}

export interface ReadOptions extends OpOptions {
  /**
   * The version the caller expects. When set, a read of any other version fails with
   * `GRANARY_ERR_VERSION_CHANGED` (S3 sends `If-Match`; local files compare size and mtime).
   */
  etag?: string | undefined;
  /**
   * The object's size as the caller knows it (with `etag`, from a listing). Adapters that
   * learn the size from the response check it: another size is `GRANARY_ERR_VERSION_CHANGED`.
   */
  size?: number | undefined;
}

/** Bytes to write: a buffer, or a stream of chunks (written as a multipart upload on S3). */
export type WriteData = Uint8Array | AsyncIterable<Uint8Array>;

export interface UnderFileSystem {
  /** Metadata of one object. Missing object: `GRANARY_ERR_NOT_FOUND`. */
  stat(url: string, options?: OpOptions): Promise<FileInfo>;
  /**
   * Every object under a prefix URL, recursively, sorted by URL (byte order of the
   * key), paginating underneath. A prefix ending in `/` lists a "directory"; any other
   * prefix lists keys that start with it.
   */
  list(prefixUrl: string, options?: OpOptions): AsyncIterable<FileInfo>;
  /**
   * Exactly `length` bytes from `offset`. A range that is not wholly inside the object
   * fails with `GRANARY_ERR_RANGE`; `length` 0 at `offset <= size` returns an empty array.
   *
   * With `offset` and `length` both omitted, the whole object: its current version, or
   * the one `options.etag` names (any other is `GRANARY_ERR_VERSION_CHANGED`). Giving
   * one of the two without the other is `GRANARY_ERR_INVALID_ARGUMENT`.
   *
   * @example
   * const bytes = await fs.read('s3://bucket/train/0001.jpg');
   * const head = await fs.read('s3://bucket/train/0001.parquet', 0, 4);
   */
  read(url: string, offset?: number, length?: number, options?: ReadOptions): Promise<Uint8Array>;
  /** Create or replace an object; resolves with the new version's metadata. */
  write(url: string, data: WriteData, options?: OpOptions): Promise<FileInfo>;
  /** Remove an object. Removing a missing object is not an error. */
  delete(url: string, options?: OpOptions): Promise<void>;
  /** Release connections and handles. Idempotent; later calls fail with `GRANARY_ERR_CLOSED`. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Request counts by kind, plus bytes moved. Every adapter keeps one. */
export interface RequestCounts {
  list: number;
  stat: number;
  get: number;
  put: number;
  delete: number;
  bytesRead: number;
  bytesWritten: number;
}

/** An adapter that talks to a real store, and counts what it asks of it. */
export interface StoreAdapter extends UnderFileSystem {
  /** The URL schemes it serves, without the colon (`s3`, `file`, `http`, `https`). */
  readonly schemes: readonly string[];
  /** A snapshot of the requests made so far. */
  requestCounts(): RequestCounts;
}

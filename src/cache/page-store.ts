import { channel } from 'node:diagnostics_channel';
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, readFile, readdir, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ClosedError, InvalidArgumentError, throwIfAborted } from '../errors.js';
import { optionalInt } from '../util/validate.js';
import type { AccessHint, EvictionPolicy, EvictionPolicyFactory, EvictionPolicyName } from './eviction.js';
import { createEvictionPolicy } from './eviction.js';
import { DEFAULT_LOCK_HEARTBEAT_MS, DirLock } from './page-store-lock.js';
import {
  MAX_KEY_BYTES,
  PAGE_HEADER_BYTES,
  decodePageFile,
  encodePageHeader,
  headerCrcMatches,
  pageFileBytes,
  parsePageHeader,
} from './page-file.js';
import { inheritPageCrc } from './page-checksum.js';
import type { PageKey } from './page-key.js';
import { DEFAULT_PAGE_SIZE, checkPageSize, pageFileName, parsePageKey, tryParsePageKey } from './page-key.js';

/** Published when a page file fails its checks: `{ key, file, reason }`. */
const corruptChannel = channel('granary:cache:page-corrupt');
/** Published when reading or writing a page file fails: `{ key, file, op, error }`. */
const diskErrorChannel = channel('granary:cache:disk-error');

export interface PageStoreOptions {
  /**
   * Bytes per page. Every page but the last of a file is exactly this long. Part of
   * each disk page's identity: reopening a directory with another size discards it.
   * @default 1048576 (1 MiB)
   */
  pageSize?: number | undefined;
  /**
   * Memory tier budget in bytes of page data. `0` keeps pages on disk only.
   * @example 2 * 1024 ** 3
   */
  memoryBytes: number;
  /** Directory of the disk tier; omitted means memory only. Created if missing. */
  diskDir?: string | undefined;
  /** Disk tier budget in bytes of page files (header included). Required with `diskDir`. */
  diskBytes?: number | undefined;
  /**
   * Eviction policy of both tiers: `'lru'`, the scan-resistant `'s3fifo'`, or a factory.
   * @default 'lru'
   */
  policy?: EvictionPolicyName | EvictionPolicyFactory | undefined;
  /**
   * Recover the pages already in `diskDir` (warm restart). `false` empties it instead.
   * @default true
   */
  recover?: boolean | undefined;
  /**
   * How often the directory's lock is refreshed, in ms. Another store takes the lock
   * over once it was not refreshed for 4 heartbeats (a holder that crashed).
   * @default 5000
   */
  lockHeartbeatMs?: number | undefined;
  /** Abort opening (the directory scan). */
  signal?: AbortSignal | undefined;
  /**
   * Permission bits of the directories the store creates under `diskDir` (the umask
   * still applies). A short-circuit tier uses 0o700, or 0o750 with a shared group.
   * @default 0o777 (the umask decides)
   */
  dirMode?: number | undefined;
  /**
   * Permission bits of the page files (the umask still applies).
   * @default 0o666 (the umask decides)
   */
  fileMode?: number | undefined;
}

export interface PageStoreStats {
  pageSize: number;
  /** Bytes of page data in memory, and the budget. */
  memoryBytes: number;
  memoryBudget: number;
  memoryPages: number;
  /** Bytes of page files on disk (headers included), and the budget. */
  diskBytes: number;
  diskBudget: number;
  diskPages: number;
  /** `get` calls answered, from either tier, and split by tier. */
  hits: number;
  memoryHits: number;
  diskHits: number;
  /** `get` calls answered `undefined` (absent, corrupt, or vanished). */
  misses: number;
  /** Pages evicted for room, from either tier, and split by tier. */
  evictions: number;
  memoryEvictions: number;
  diskEvictions: number;
  /** Pages written to disk on leaving memory, and read from disk back into memory. */
  demotions: number;
  promotions: number;
  /** Page files that failed their checks (on read or at recovery) and were dropped. */
  corruptPages: number;
  /** Page files found valid at open (warm restart). */
  recoveredPages: number;
  /** Failed reads or writes of page files (besides corruption); those pages were dropped. */
  diskErrors: number;
}

export interface PageOpOptions {
  signal?: AbortSignal | undefined;
  /** Passed to the eviction policy; see `AccessHint`. */
  hint?: AccessHint | undefined;
}

interface DiskEntry {
  name: string;
  fileBytes: number;
  /** The bytes until the file is written, so reads never wait on a write. */
  pending: Uint8Array | undefined;
}

type Counter = Exclude<keyof PageStoreStats, 'pageSize' | 'memoryBytes' | 'memoryBudget' | 'memoryPages' | 'diskBytes' | 'diskBudget' | 'diskPages'>;

const RECOVERY_CONCURRENCY = 16;

/**
 * Fixed-size pages of object versions, in a memory tier and an optional disk tier.
 *
 * - Keys are `pageKey(url, etag, pageIndex)`: a new object version is a new key, so
 *   the store never serves one version's bytes for another.
 * - Each tier has a byte budget and its own eviction policy instance; the store evicts
 *   before it inserts, so a tier never holds more than its budget.
 * - The disk tier is written through: `put` stores a page in memory and on disk, so a
 *   restart recovers the hot set too. A page evicted from memory that is not on disk
 *   (the disk evicted it earlier) is demoted to disk; a disk hit is promoted to memory.
 * - Disk pages carry CRCs checked on every read. A bad page is deleted, counted in
 *   `stats().corruptPages`, and reported as a miss so the caller refetches it.
 * - Disk I/O errors never fail `get` or `put`: a cache that cannot write still serves.
 *
 * Pages returned by `get` are shared with the store: do not modify them.
 *
 * @example
 * const store = await PageStore.open({ memoryBytes: 256 * MiB, diskDir: '/var/cache/granary', diskBytes: 20 * GiB, policy: 's3fifo' });
 * const key = pageKey(info.url, info.etag, 0);
 * const page = (await store.get(key)) ?? (await fetchAndPut(key));
 */
export class PageStore implements AsyncDisposable {
  readonly pageSize: number;
  readonly #memoryBudget: number;
  readonly #diskBudget: number;
  readonly #diskDir: string | undefined;
  readonly #mem = new Map<PageKey, Uint8Array>();
  readonly #memPolicy: EvictionPolicy;
  #memBytes = 0;
  readonly #disk = new Map<PageKey, DiskEntry>();
  readonly #diskPolicy: EvictionPolicy | undefined;
  #diskBytes = 0;
  /** Keys in either tier by URL, for `deleteFile`. */
  readonly #byUrl = new Map<string, Set<PageKey>>();
  /** File operations per key, chained so that the last one issued is the last one done. */
  readonly #fileOps = new Map<PageKey, Promise<void>>();
  readonly #madeDirs = new Set<string>();
  readonly #counters: Record<Counter, number> = {
    hits: 0,
    memoryHits: 0,
    diskHits: 0,
    misses: 0,
    evictions: 0,
    memoryEvictions: 0,
    diskEvictions: 0,
    demotions: 0,
    promotions: 0,
    corruptPages: 0,
    recoveredPages: 0,
    diskErrors: 0,
  };
  #tmpSeq = 0;
  #dirMode = 0o777;
  #fileMode = 0o666;
  #lock: DirLock | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(pageSize: number, memoryBudget: number, policy: EvictionPolicyName | EvictionPolicyFactory, diskDir: string | undefined, diskBudget: number) {
    this.pageSize = pageSize;
    this.#memoryBudget = memoryBudget;
    this.#diskBudget = diskBudget;
    this.#diskDir = diskDir;
    this.#memPolicy = createEvictionPolicy(policy, memoryBudget);
    this.#diskPolicy = diskDir === undefined ? undefined : createEvictionPolicy(policy, diskBudget);
  }

  /**
   * Open a store. With `diskDir`, takes the directory (a second store on it, in this
   * process or a live other one, is refused with `GRANARY_ERR_CONFIG`), deletes
   * leftover temp files, and indexes the valid page files already there.
   */
  static async open(options: PageStoreOptions): Promise<PageStore> {
    if (options === null || typeof options !== 'object') {
      throw new InvalidArgumentError(`Expected page store options to be an object, got \`${String(options)}\` (${typeof options})`);
    }
    const pageSize = checkPageSize(options.pageSize ?? DEFAULT_PAGE_SIZE);
    const memoryBytes = checkBytes(options.memoryBytes, 'memoryBytes');
    const policy = options.policy ?? 'lru';
    let diskBytes = 0;
    if (options.diskDir !== undefined) {
      if (typeof options.diskDir !== 'string' || options.diskDir.length === 0) {
        throw new InvalidArgumentError(`Expected \`diskDir\` to be a non-empty path, got \`${String(options.diskDir)}\` (${typeof options.diskDir})`);
      }
      diskBytes = checkBytes(options.diskBytes, 'diskBytes');
    } else if (options.diskBytes !== undefined) {
      throw new InvalidArgumentError(`\`diskBytes\` (${String(options.diskBytes)}) was given without \`diskDir\``);
    }
    const store = new PageStore(pageSize, memoryBytes, policy, options.diskDir, diskBytes);
    store.#dirMode = optionalInt('dirMode', options.dirMode, 0o777, 0, 0o7777);
    store.#fileMode = optionalInt('fileMode', options.fileMode, 0o666, 0, 0o7777);
    const heartbeatMs = optionalInt('lockHeartbeatMs', options.lockHeartbeatMs, DEFAULT_LOCK_HEARTBEAT_MS, 1);
    if (options.diskDir !== undefined) await store.#openDisk(options.diskDir, options.recover ?? true, heartbeatMs, options.signal);
    return store;
  }

  /**
   * The page, or `undefined` on a miss (absent, or a disk copy that failed its checks
   * and was dropped). A disk hit is copied into memory.
   */
  async get(key: PageKey, options: PageOpOptions = {}): Promise<Uint8Array | undefined> {
    this.#checkOpen('get');
    throwIfAborted(options.signal);
    const inMemory = this.#mem.get(key);
    if (inMemory !== undefined) {
      this.#memPolicy.touch(key, options.hint);
      this.#counters.hits++;
      this.#counters.memoryHits++;
      return inMemory;
    }
    const entry = this.#disk.get(key);
    if (entry === undefined) {
      this.#counters.misses++;
      return undefined;
    }
    const bytes = entry.pending ?? (await this.#readDiskPage(key, entry, options.signal));
    if (bytes === undefined) {
      this.#counters.misses++;
      return undefined;
    }
    this.#counters.hits++;
    this.#counters.diskHits++;
    // While the read ran the page may have been evicted, deleted or the store closed:
    // the bytes are still right for this key, but must not re-enter the index.
    if (!this.#closed && this.#disk.get(key) === entry) {
      this.#diskPolicy?.touch(key, options.hint);
      if (!this.#mem.has(key) && this.#memInsert(key, bytes, options.hint)) this.#counters.promotions++;
    }
    return bytes;
  }

  /**
   * Store a page (copied). `bytes` may be shorter than `pageSize` only for the last
   * page of a file; longer is refused. Resolves once the page is in memory and, with a
   * disk tier, its file is written (or the write failed, which is counted, not thrown).
   */
  async put(key: PageKey, bytes: Uint8Array, options: PageOpOptions = {}): Promise<void> {
    this.#checkOpen('put');
    throwIfAborted(options.signal);
    const { url } = parsePageKey(key);
    if (!(bytes instanceof Uint8Array)) {
      throw new InvalidArgumentError(`Expected page bytes of ${url} to be a Uint8Array, got ${typeof bytes}`, { url });
    }
    if (bytes.byteLength > this.pageSize) {
      throw new InvalidArgumentError(`Page of ${url} is ${bytes.byteLength} bytes, more than the page size ${this.pageSize}`, { url });
    }
    if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) {
      throw new InvalidArgumentError(`Page key of ${url.slice(0, 200)} is longer than ${MAX_KEY_BYTES} bytes`, { url });
    }
    // A copy: the caller's array may be a view into a much larger buffer (a socket
    // chunk, a whole-range read), which would pin that buffer and defeat the budget.
    const page = new Uint8Array(bytes);
    inheritPageCrc(bytes, page);
    this.#memInsert(key, page, options.hint);
    if (this.#diskPolicy !== undefined && !this.#disk.has(key)) await this.#diskInsert(key, page, options.hint);
  }

  /**
   * Tell the eviction policies that a page was read elsewhere (a client read its file
   * directly). True when either tier holds it; nothing is read or counted.
   */
  touch(key: PageKey, options: { hint?: AccessHint | undefined } = {}): boolean {
    this.#checkOpen('touch');
    const inMemory = this.#mem.has(key);
    if (inMemory) this.#memPolicy.touch(key, options.hint);
    const onDisk = this.#disk.has(key);
    if (onDisk) this.#diskPolicy?.touch(key, options.hint);
    return inMemory || onDisk;
  }

  /** Whether either tier holds the key (a disk page is checked only when read). */
  has(key: PageKey): boolean {
    this.#checkOpen('has');
    return this.#mem.has(key) || this.#disk.has(key);
  }

  /**
   * Drop one page from both tiers (a page a client found corrupt). Resolves with
   * whether either tier held it, once its file is gone.
   */
  async delete(key: PageKey): Promise<boolean> {
    this.#checkOpen('delete');
    const held = this.#mem.has(key) || this.#disk.has(key);
    await this.#drop(key);
    return held;
  }

  /**
   * Drop every page of every version of `url` from both tiers, for invalidation after
   * a write or delete. Resolves with the number of pages dropped, once their files are gone.
   */
  async deleteFile(url: string, options: { signal?: AbortSignal | undefined } = {}): Promise<number> {
    this.#checkOpen('deleteFile');
    throwIfAborted(options.signal);
    const keys = this.#byUrl.get(url);
    if (keys === undefined) return 0;
    const removals: Promise<void>[] = [];
    let n = 0;
    for (const key of [...keys]) {
      n++;
      const removal = this.#drop(key);
      if (removal !== undefined) removals.push(removal);
    }
    await Promise.all(removals);
    return n;
  }

  /** Counters and usage. Allowed after `close()`, for final metrics. */
  stats(): PageStoreStats {
    return {
      pageSize: this.pageSize,
      memoryBytes: this.#memBytes,
      memoryBudget: this.#memoryBudget,
      memoryPages: this.#mem.size,
      diskBytes: this.#diskBytes,
      diskBudget: this.#diskBudget,
      diskPages: this.#disk.size,
      ...this.#counters,
    };
  }

  /**
   * Finish pending disk writes and deletes, release the directory, drop the memory
   * tier. Idempotent; other calls afterwards throw `GRANARY_ERR_CLOSED`.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    this.#closed = true;
    while (this.#fileOps.size > 0) await Promise.all([...this.#fileOps.values()]);
    this.#mem.clear();
    this.#memBytes = 0;
    await this.#lock?.release();
  }

  #checkOpen(op: string): void {
    if (this.#closed) throw new ClosedError(`Page store${this.#diskDir === undefined ? '' : ` on ${this.#diskDir}`} is closed (${op})`);
  }

  // ---- memory tier

  /** Insert or replace; evicts first. False when the page cannot fit at all. */
  #memInsert(key: PageKey, bytes: Uint8Array, hint: AccessHint | undefined): boolean {
    const old = this.#mem.get(key);
    if (old !== undefined) {
      this.#mem.delete(key);
      this.#memBytes -= old.byteLength;
      this.#memPolicy.remove(key);
    }
    if (bytes.byteLength > this.#memoryBudget) {
      if (old !== undefined) this.#unindexIfGone(key);
      return false;
    }
    while (this.#memBytes + bytes.byteLength > this.#memoryBudget) {
      const victim = this.#memPolicy.evict() as PageKey | undefined;
      if (victim === undefined) break;
      this.#memEvict(victim);
    }
    this.#mem.set(key, bytes);
    this.#memBytes += bytes.byteLength;
    this.#memPolicy.insert(key, bytes.byteLength, hint);
    this.#index(key);
    return true;
  }

  #memEvict(key: PageKey): void {
    const bytes = this.#mem.get(key);
    if (bytes === undefined) return;
    this.#mem.delete(key);
    this.#memBytes -= bytes.byteLength;
    this.#counters.evictions++;
    this.#counters.memoryEvictions++;
    if (this.#diskPolicy !== undefined && !this.#disk.has(key)) {
      // Demotion runs in the background; #fileOps tracks it for close().
      if (this.#diskInsert(key, bytes, undefined) !== undefined) this.#counters.demotions++;
    }
    this.#unindexIfGone(key);
  }

  // ---- disk tier

  /** Index the page on disk and queue its write; `undefined` when it cannot fit. */
  #diskInsert(key: PageKey, bytes: Uint8Array, hint: AccessHint | undefined): Promise<void> | undefined {
    const policy = this.#diskPolicy;
    const dir = this.#diskDir;
    if (policy === undefined || dir === undefined) return undefined;
    const fileBytes = pageFileBytes(key, bytes.byteLength);
    if (fileBytes > this.#diskBudget) return undefined;
    while (this.#diskBytes + fileBytes > this.#diskBudget) {
      const victim = policy.evict() as PageKey | undefined;
      if (victim === undefined) break;
      this.#diskEvict(victim);
    }
    const entry: DiskEntry = { name: pageFileName(key), fileBytes, pending: bytes };
    this.#disk.set(key, entry);
    this.#diskBytes += fileBytes;
    policy.insert(key, fileBytes, hint);
    this.#index(key);
    return this.#chain(key, async () => {
      try {
        // Evicted or dropped before its turn: its removal is queued after us, skip.
        if (this.#disk.get(key) !== entry) return;
        await this.#writePageFile(dir, key, entry.name, bytes);
      } catch (error) {
        this.#counters.diskErrors++;
        if (diskErrorChannel.hasSubscribers) diskErrorChannel.publish({ key, file: this.#pagePath(entry.name), op: 'write', error });
        if (this.#disk.get(key) === entry) this.#diskRemove(key, entry);
      } finally {
        entry.pending = undefined;
      }
    });
  }

  #diskEvict(key: PageKey): void {
    const entry = this.#disk.get(key);
    if (entry === undefined) return;
    this.#counters.evictions++;
    this.#counters.diskEvictions++;
    this.#diskRemove(key, entry);
    void this.#queueUnlink(key, entry.name);
    this.#unindexIfGone(key);
  }

  #diskRemove(key: PageKey, entry: DiskEntry): void {
    this.#disk.delete(key);
    this.#diskBytes -= entry.fileBytes;
  }

  /** Remove a key from both tiers (not an eviction); resolves when its file is gone. */
  #drop(key: PageKey): Promise<void> | undefined {
    const bytes = this.#mem.get(key);
    if (bytes !== undefined) {
      this.#mem.delete(key);
      this.#memBytes -= bytes.byteLength;
      this.#memPolicy.remove(key);
    }
    const entry = this.#disk.get(key);
    let removal: Promise<void> | undefined;
    if (entry !== undefined) {
      this.#diskRemove(key, entry);
      this.#diskPolicy?.remove(key);
      removal = this.#queueUnlink(key, entry.name);
    }
    this.#unindexIfGone(key);
    return removal;
  }

  #queueUnlink(key: PageKey, name: string): Promise<void> {
    return this.#chain(key, async () => {
      try {
        await unlink(this.#pagePath(name));
      } catch (error) {
        if (errnoOf(error) !== 'ENOENT') {
          this.#counters.diskErrors++;
          if (diskErrorChannel.hasSubscribers) diskErrorChannel.publish({ key, file: this.#pagePath(name), op: 'unlink', error });
        }
      }
    });
  }

  /**
   * Read and verify a page file; `undefined` when it is bad or gone, and then the page is
   * dropped and its file removed before this resolves: a caller that saw the miss never
   * finds the bad file still there.
   */
  async #readDiskPage(key: PageKey, entry: DiskEntry, signal: AbortSignal | undefined): Promise<Uint8Array | undefined> {
    const file = this.#pagePath(entry.name);
    let buf: Buffer;
    try {
      buf = await readFile(file, { signal });
    } catch (error) {
      if (signal?.aborted === true) throw signal.reason;
      // ENOENT after an eviction raced this read is expected; anything else is counted.
      if (errnoOf(error) !== 'ENOENT' || this.#disk.get(key) === entry) {
        this.#counters.diskErrors++;
        if (diskErrorChannel.hasSubscribers) diskErrorChannel.publish({ key, file, op: 'read', error });
      }
      if (this.#disk.get(key) === entry) await this.#drop(key);
      return undefined;
    }
    const data = decodePageFile(buf, key, this.pageSize);
    if (typeof data === 'string') {
      // Concurrent reads of one bad file all see it bad; the first drops and counts it.
      if (this.#disk.get(key) === entry) {
        this.#counters.corruptPages++;
        if (corruptChannel.hasSubscribers) corruptChannel.publish({ key, file, reason: data });
        await this.#drop(key);
      }
      return undefined;
    }
    return data;
  }

  async #writePageFile(dir: string, key: PageKey, name: string, data: Uint8Array): Promise<void> {
    const sub = join(dir, 'pages', name.slice(0, 2));
    if (!this.#madeDirs.has(sub)) {
      await mkdir(sub, { recursive: true, mode: this.#dirMode });
      this.#madeDirs.add(sub);
    }
    const { header, keyBytes } = encodePageHeader(key, data, this.pageSize);
    const tmp = join(dir, 'tmp', `${name}.${process.pid}.${++this.#tmpSeq}.tmp`);
    let handle: FileHandle | undefined;
    try {
      handle = await open(tmp, 'w', this.#fileMode);
      await handle.writev([header, keyBytes, data]);
      await handle.close();
      handle = undefined;
      await rename(tmp, join(sub, name));
    } catch (error) {
      await handle?.close().catch(() => undefined);
      await rm(tmp, { force: true }).catch(() => undefined);
      throw error;
    }
  }

  #pagePath(name: string): string {
    return join(this.#diskDir ?? '', 'pages', name.slice(0, 2), name);
  }

  #chain(key: PageKey, op: () => Promise<void>): Promise<void> {
    const prev = this.#fileOps.get(key);
    // Ops catch their own errors, so the chain never rejects.
    const next = prev === undefined ? op() : prev.then(op);
    this.#fileOps.set(key, next);
    void next.then(() => {
      if (this.#fileOps.get(key) === next) this.#fileOps.delete(key);
    });
    return next;
  }

  // ---- URL index

  #index(key: PageKey): void {
    const { url } = parsePageKey(key);
    let keys = this.#byUrl.get(url);
    if (keys === undefined) this.#byUrl.set(url, (keys = new Set()));
    keys.add(key);
  }

  #unindexIfGone(key: PageKey): void {
    if (this.#mem.has(key) || this.#disk.has(key)) return;
    const { url } = parsePageKey(key);
    const keys = this.#byUrl.get(url);
    if (keys === undefined) return;
    keys.delete(key);
    if (keys.size === 0) this.#byUrl.delete(url);
  }

  // ---- open and recovery

  async #openDisk(dir: string, recover: boolean, heartbeatMs: number, signal: AbortSignal | undefined): Promise<void> {
    const mode = this.#dirMode;
    await mkdir(join(dir, 'pages'), { recursive: true, mode });
    this.#lock = await DirLock.acquire(dir, heartbeatMs);
    try {
      await rm(join(dir, 'tmp'), { recursive: true, force: true });
      await mkdir(join(dir, 'tmp'), { recursive: true, mode });
      if (!recover) {
        await rm(join(dir, 'pages'), { recursive: true, force: true });
        await mkdir(join(dir, 'pages'), { recursive: true, mode });
        return;
      }
      await this.#recover(dir, signal);
    } catch (error) {
      this.#closed = true;
      await this.#lock.release();
      throw error;
    }
  }

  /**
   * Index the page files in `dir`. Headers (and the key they name) are verified
   * here; the data CRC is verified when a page is read, so opening a large cache
   * reads kilobytes per page, not the pages. Oldest files enter the policy first, so
   * LRU evicts them first.
   */
  async #recover(dir: string, signal: AbortSignal | undefined): Promise<void> {
    const pagesDir = join(dir, 'pages');
    const files: { sub: string; name: string }[] = [];
    for (const sub of await readdir(pagesDir)) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue;
      this.#madeDirs.add(join(pagesDir, sub));
      let names: string[];
      try {
        names = await readdir(join(pagesDir, sub));
      } catch {
        continue;
      }
      for (const name of names) files.push({ sub, name });
    }
    const found: { key: PageKey; name: string; fileBytes: number; mtimeMs: number }[] = [];
    let next = 0;
    const work = async (): Promise<void> => {
      while (next < files.length) {
        throwIfAborted(signal);
        const f = files[next++];
        if (f === undefined) break;
        const path = join(pagesDir, f.sub, f.name);
        const result = await this.#inspect(path, f.sub, f.name);
        if (result === undefined) continue;
        if (typeof result === 'string') {
          this.#counters.corruptPages++;
          if (corruptChannel.hasSubscribers) corruptChannel.publish({ key: undefined, file: path, reason: result });
          await rm(path, { force: true });
          continue;
        }
        if (result.pageSize !== this.pageSize) {
          // Valid, but its page index means another range: not corrupt, just useless.
          await rm(path, { force: true });
          continue;
        }
        found.push({ key: result.key, name: f.name, fileBytes: result.fileBytes, mtimeMs: result.mtimeMs });
      }
    };
    await Promise.all(Array.from({ length: Math.min(RECOVERY_CONCURRENCY, files.length) }, work));
    found.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.name < b.name ? -1 : 1));
    const policy = this.#diskPolicy;
    if (policy === undefined) return;
    for (const f of found) {
      if (f.fileBytes > this.#diskBudget) {
        void this.#queueUnlink(f.key, f.name);
        continue;
      }
      while (this.#diskBytes + f.fileBytes > this.#diskBudget) {
        const victim = policy.evict() as PageKey | undefined;
        if (victim === undefined) break;
        this.#diskEvict(victim);
      }
      this.#disk.set(f.key, { name: f.name, fileBytes: f.fileBytes, pending: undefined });
      this.#diskBytes += f.fileBytes;
      policy.insert(f.key, f.fileBytes);
      this.#index(f.key);
      this.#counters.recoveredPages++;
    }
    while (this.#fileOps.size > 0) await Promise.all([...this.#fileOps.values()]);
  }

  /**
   * Check one file's header and name. `undefined`: not ours to judge (vanished, or not a
   * page file name); a string: why it is corrupt.
   */
  async #inspect(
    path: string,
    sub: string,
    name: string,
  ): Promise<{ key: PageKey; pageSize: number; fileBytes: number; mtimeMs: number } | string | undefined> {
    // Leave files that are not ours alone.
    if (!/^[0-9a-f]{32}\.page$/.test(name)) return undefined;
    let handle: FileHandle | undefined;
    try {
      handle = await open(path, 'r');
      const st = await handle.stat();
      const fixed = Buffer.alloc(PAGE_HEADER_BYTES);
      const { bytesRead } = await handle.read(fixed, 0, PAGE_HEADER_BYTES, 0);
      const h = parsePageHeader(fixed.subarray(0, bytesRead));
      if (typeof h === 'string') return h;
      const total = PAGE_HEADER_BYTES + h.keyLength + h.dataLength;
      if (st.size !== total) return `file is ${st.size} bytes, header says ${total}`;
      const keyBytes = Buffer.alloc(h.keyLength);
      const k = await handle.read(keyBytes, 0, h.keyLength, PAGE_HEADER_BYTES);
      if (k.bytesRead !== h.keyLength || !headerCrcMatches(fixed, keyBytes, h.headerCrc)) return 'header checksum mismatch';
      const key = keyBytes.toString('utf8');
      if (tryParsePageKey(key) === undefined) return 'header holds no page key';
      if (pageFileName(key as PageKey) !== name || name.slice(0, 2) !== sub) return 'file name does not match its key';
      if (h.dataLength > h.pageSize) return `data length ${h.dataLength} exceeds page size ${h.pageSize}`;
      return { key: key as PageKey, pageSize: h.pageSize, fileBytes: st.size, mtimeMs: st.mtimeMs };
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') return undefined;
      return `unreadable: ${(error as Error).message}`;
    } finally {
      await handle?.close().catch(() => undefined);
    }
  }
}

function checkBytes(v: unknown, option: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new InvalidArgumentError(`Expected \`${option}\` to be an integer number of bytes from 0 and up, got \`${String(v)}\` (${typeof v})`);
  }
  return v;
}

function errnoOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

import { randomBytes } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { lstat, mkdir, open, readdir, realpath, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  AccessDeniedError,
  ClosedError,
  GranaryError,
  InternalError,
  InvalidArgumentError,
  InvalidUrlError,
  NotFoundError,
  PathEscapeError,
  RangeNotSatisfiableError,
  UnavailableError,
  UnsupportedSchemeError,
  VersionChangedError,
  throwIfAborted,
} from '../errors.js';
import { checkString, show } from '../util/validate.js';
import { RequestCounter } from './counters.js';
import { compareBytes } from './memory.js';
import { checkRange, readRange, schemeOf } from './url.js';
import type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, WriteData } from './types.js';
import { toPortable, type PortableSpec } from './portable.js';

export interface LocalUfsOptions {
  /**
   * The directory every `file://` URL must stay inside: a path that leaves it through
   * `..`, a symlink or plainly fails with `GRANARY_ERR_PATH_ESCAPE`.
   * @default '/'
   * @example new LocalUfs({ root: '/data/datasets' })
   */
  root?: string | undefined;
  /**
   * Flush written files to disk (`fsync`) before they are renamed into place, so a
   * crash never leaves a truncated object under the final name.
   * @default true
   */
  fsync?: boolean | undefined;
}

/** Reads are issued in pieces of this size, checking the abort signal between them. */
const READ_PIECE = 8 * 1024 * 1024;
/** Files of at most this many are stat'ed at once while listing. */
const LIST_STAT_BATCH = 64;
/** Temporary files of in-flight writes: hidden from listings. */
const TEMP_RE = /^\..*\.granary-tmp-[0-9a-f]{12}$/;

function isInside(p: string, base: string): boolean {
  return p === base || p.startsWith(base.endsWith('/') ? base : `${base}/`);
}

function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** The version tag of a local file: size, modification time (ns) and inode, so an atomic replace always changes it. */
export function localEtag(st: BigIntStats): string {
  return `${st.size.toString(16)}-${st.mtimeNs.toString(16)}-${st.ino.toString(16)}`;
}

/**
 * The local-file store (`file://` URLs, absolute paths, percent-decoded as WHATWG
 * file URLs are). Canonical URLs are `pathToFileURL(path).href`; listings and stats
 * return them. Writes are atomic (a temp file in the same directory, then rename), so
 * readers see the old or the new version, never a mix; a read given an etag checks it
 * on the very file descriptor it then reads from.
 */
export class LocalUfs implements StoreAdapter {
  readonly schemes: readonly string[] = ['file'];
  /** The jail, as given (resolved to an absolute path). */
  readonly root: string;
  readonly #fsync: boolean;
  readonly #counter = new RequestCounter();
  #rootReal: string | undefined;
  #closed = false;

  constructor(options: LocalUfsOptions = {}) {
    if (options === null || typeof options !== 'object') {
      throw new InvalidArgumentError(`Expected LocalUfs options to be an object, got \`${String(options)}\` (${typeof options})`);
    }
    const { root = '/', fsync = true } = options;
    if (checkString('root', root).includes('\0')) {
      throw new InvalidArgumentError(`Expected \`root\` to be a path without NUL characters, got \`${show(root)}\``);
    }
    if (typeof fsync !== 'boolean') {
      throw new InvalidArgumentError(`Expected \`fsync\` to be a boolean, got \`${String(fsync)}\` (${typeof fsync})`);
    }
    this.root = resolve(root);
    this.#fsync = fsync;
  }

  requestCounts(): RequestCounts {
    return this.#counter.snapshot();
  }

  /**
   * Plain options that build an equivalent adapter elsewhere (another thread): the
   * resolved `root` and `fsync`. `src/loader/portable-fs.ts` turns this into a `UfsSpec`.
   */
  /** `portableSpec()` for the rebuild protocol (src/ufs/portable.ts). */
  [toPortable](): PortableSpec | undefined {
    return this.portableSpec();
  }

  portableSpec(): { kind: 'local'; options: LocalUfsOptions } {
    return { kind: 'local', options: { root: this.root, fsync: this.#fsync } };
  }

  /** The canonical URL of an absolute path (no jail check). */
  static urlOf(path: string): string {
    return pathToFileURL(path).href;
  }

  async stat(url: string, options: OpOptions = {}): Promise<FileInfo> {
    const p = this.#pathOf(url, options);
    this.#counter.count('stat');
    try {
      const real = await this.#realInside(p, url);
      const st = await stat(real, { bigint: true });
      throwIfAborted(options.signal);
      if (!st.isFile()) throw new NotFoundError(`No such file: ${url} is not a regular file`, { url });
      return this.#info(p, st);
    } catch (err) {
      throw this.#mapError(err, url, 'stat', options);
    }
  }

  async read(url: string, offset?: number, length?: number, options: ReadOptions = {}): Promise<Uint8Array> {
    const p = this.#pathOf(url, options);
    const range = readRange(url, offset, length);
    if (options.size !== undefined) checkRange(url, 0, options.size);
    this.#counter.count('get');
    let fh: FileHandle | undefined;
    try {
      const real = await this.#realInside(p, url);
      fh = await open(real, 'r');
      // Version, size and bytes all come from this one descriptor: a file replaced
      // (renamed over) meanwhile cannot leak into this read.
      const st = await fh.stat({ bigint: true });
      if (!st.isFile()) throw new NotFoundError(`No such file: ${url} is not a regular file`, { url });
      const etag = localEtag(st);
      if (options.etag !== undefined && options.etag !== etag) {
        throw new VersionChangedError(`File ${url} changed: expected version ${options.etag}, found ${etag} (size ${st.size})`, { url });
      }
      const size = Number(st.size);
      if (options.size !== undefined && options.size !== size) {
        throw new VersionChangedError(`File ${url} changed: expected size ${options.size}, found ${size} bytes`, { url });
      }
      // The whole file: its size as this descriptor sees it.
      const { offset, length } = range ?? { offset: 0, length: size };
      if (offset + length > size) {
        throw new RangeNotSatisfiableError(`Range ${offset}+${length} (to ${offset + length}) is past the end of ${url} (size ${size})`, {
          url,
        });
      }
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        throwIfAborted(options.signal);
        const want = Math.min(READ_PIECE, length - done);
        const { bytesRead } = await fh.read(out, done, want, offset + done);
        if (bytesRead === 0) {
          throw new VersionChangedError(`File ${url} shrank while being read: got ${offset + done} of ${offset + length} bytes (size was ${size})`, {
            url,
          });
        }
        done += bytesRead;
      }
      throwIfAborted(options.signal);
      this.#counter.read(length);
      return out;
    } catch (err) {
      throw this.#mapError(err, url, 'read', options);
    } finally {
      await fh?.close().catch(() => {});
    }
  }

  async *list(prefixUrl: string, options: OpOptions = {}): AsyncIterable<FileInfo> {
    const p = this.#pathOf(prefixUrl, options);
    const asDir = new URL(prefixUrl).pathname.endsWith('/') || p === this.root;
    const dir = asDir ? p : dirname(p);
    if (!isInside(dir, this.root)) {
      throw new PathEscapeError(`Listing ${prefixUrl} would leave the root ${this.root}`, { url: prefixUrl });
    }
    const dirHref = LocalUfs.urlOf(dir);
    const dirUrl = dirHref.endsWith('/') ? dirHref : `${dirHref}/`;
    const filter = asDir ? dirUrl : LocalUfs.urlOf(p);
    try {
      let real: string;
      try {
        real = await this.#realInside(dir, prefixUrl);
      } catch (err) {
        // A prefix with nothing under it lists nothing, as on S3.
        if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return;
        throw err;
      }
      const st = await stat(real);
      if (!st.isDirectory()) return;
      yield* this.#walk(dir, dirUrl, filter, prefixUrl, options);
    } catch (err) {
      throw this.#mapError(err, prefixUrl, 'list', options);
    }
  }

  async *#walk(dir: string, dirUrl: string, filter: string, prefixUrl: string, options: OpOptions): AsyncGenerator<FileInfo> {
    throwIfAborted(options.signal);
    if (this.#closed) throw new ClosedError(`LocalUfs is closed (listing ${prefixUrl})`, { url: prefixUrl });
    this.#counter.count('list');
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw err;
    }
    const rootReal = await this.#getRootReal();
    type Item = { path: string; url: string; dir: boolean };
    const items: Item[] = [];
    for (const e of entries) {
      if (TEMP_RE.test(e.name)) continue;
      const path = join(dir, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        // Follow links to files inside the root; skip links out of it, and links to
        // directories (their targets inside the root are listed under their own path,
        // and following them could loop).
        try {
          const target = await realpath(path);
          if (!isInside(target, rootReal)) continue;
          const st = await stat(target);
          isFile = st.isFile();
          isDir = false;
        } catch {
          continue;
        }
      }
      if (!isDir && !isFile) continue;
      const href = LocalUfs.urlOf(path);
      const url = isDir ? `${href}/` : href;
      if (!url.startsWith(filter) && !(isDir && filter.startsWith(url))) continue;
      items.push({ path, url, dir: isDir });
    }
    // Sorting each directory by its children's URLs (directories with their trailing
    // '/') and descending in that order yields the whole tree in URL byte order.
    items.sort((a, b) => compareBytes(a.url, b.url));
    for (let i = 0; i < items.length; ) {
      const item = items[i] as Item;
      if (item.dir) {
        yield* this.#walk(item.path, item.url, filter, prefixUrl, options);
        i++;
        continue;
      }
      const batch: Item[] = [];
      while (i < items.length && batch.length < LIST_STAT_BATCH && !(items[i] as Item).dir) batch.push(items[i++] as Item);
      const infos = await Promise.all(
        batch.map(async (f) => {
          try {
            const st = await stat(f.path, { bigint: true });
            return st.isFile() ? this.#info(f.path, st) : undefined;
          } catch (err) {
            // Deleted between readdir and stat: not part of the listing.
            if (errnoOf(err) === 'ENOENT') return undefined;
            throw err;
          }
        }),
      );
      throwIfAborted(options.signal);
      for (const info of infos) if (info) yield info;
    }
  }

  async write(url: string, data: WriteData, options: OpOptions = {}): Promise<FileInfo> {
    const p = this.#pathOf(url, options);
    if (new URL(url).pathname.endsWith('/') || p === this.root) {
      throw new InvalidUrlError(`Cannot write ${url}: it names a directory, not a file`, { url });
    }
    const isBytes = data instanceof Uint8Array;
    if (!isBytes && (data === null || typeof data !== 'object' || typeof (data as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function')) {
      throw new InvalidArgumentError(`Expected data for ${url} to be a Uint8Array or an AsyncIterable<Uint8Array>, got ${typeof data}`, { url });
    }
    this.#counter.count('put');
    const dir = dirname(p);
    const tmp = join(dir, `.${basename(p)}.granary-tmp-${randomBytes(6).toString('hex')}`);
    let fh: FileHandle | undefined;
    let created = false;
    try {
      await this.#ensureDir(dir, url);
      throwIfAborted(options.signal);
      fh = await open(tmp, 'wx');
      created = true;
      let written = 0;
      if (isBytes) {
        await writeAll(fh, data);
        written = data.byteLength;
      } else {
        for await (const chunk of data) {
          throwIfAborted(options.signal);
          if (!(chunk instanceof Uint8Array)) {
            throw new InvalidArgumentError(`Expected every chunk written to ${url} to be a Uint8Array, got ${typeof chunk}`, { url });
          }
          await writeAll(fh, chunk);
          written += chunk.byteLength;
        }
      }
      if (this.#fsync) await fh.sync();
      const st = await fh.stat({ bigint: true });
      await fh.close();
      fh = undefined;
      throwIfAborted(options.signal);
      try {
        await rename(tmp, p);
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST') {
          throw new InvalidUrlError(`Cannot write ${url}: a directory exists at ${p}`, { url, cause: err });
        }
        throw err;
      }
      created = false;
      this.#counter.written(written);
      return this.#info(p, st);
    } catch (err) {
      throw this.#mapError(err, url, 'write', options);
    } finally {
      await fh?.close().catch(() => {});
      if (created) await unlink(tmp).catch(() => {});
    }
  }

  async delete(url: string, options: OpOptions = {}): Promise<void> {
    const p = this.#pathOf(url, options);
    if (p === this.root) throw new InvalidUrlError(`Cannot delete ${url}: it is the root directory`, { url });
    this.#counter.count('delete');
    try {
      try {
        await this.#realInside(dirname(p), url);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return;
        throw err;
      }
      const st = await lstat(p).catch((err: unknown) => {
        if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return undefined;
        throw err;
      });
      if (!st) return;
      if (st.isDirectory()) throw new InvalidUrlError(`Cannot delete ${url}: it is a directory, not a file`, { url });
      await unlink(p).catch((err: unknown) => {
        if (errnoOf(err) !== 'ENOENT') throw err;
      });
    } catch (err) {
      throw this.#mapError(err, url, 'delete', options);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Validate a URL and return its absolute path inside the root (lexically; symlinks are checked later). */
  #pathOf(url: string, options: OpOptions): string {
    if (this.#closed) throw new ClosedError(`LocalUfs is closed (used for ${String(url)})`, { url: String(url) });
    throwIfAborted(options.signal);
    const scheme = schemeOf(url);
    if (scheme !== 'file') throw new UnsupportedSchemeError(`LocalUfs serves only file:// URLs, got \`${url}\``, { url });
    let u: URL;
    try {
      u = new URL(url);
    } catch (err) {
      throw new InvalidUrlError(`Invalid file URL \`${url}\``, { url, cause: err });
    }
    if (u.search !== '' || u.hash !== '') {
      throw new InvalidUrlError(`File URL \`${url}\` has a query or fragment; encode '?' as %3F and '#' as %23 in file names`, { url });
    }
    if (u.host !== '' && u.host !== 'localhost') {
      throw new InvalidUrlError(`File URL \`${url}\` names host \`${u.host}\`; only local files (file:///path) are supported`, { url });
    }
    // `new URL` resolves `..` away before we see the path, so look at the raw text:
    // any `..` segment, however encoded, is refused rather than interpreted.
    const raw = url.slice(url.indexOf(':') + 1).split(/[?#]/, 1)[0] ?? '';
    for (const seg of raw.split(/[/\\]/)) {
      if (seg.replace(/%2e/gi, '.') === '..') {
        throw new PathEscapeError(`File URL \`${url}\` contains a \`..\` segment; paths must stay inside the root ${this.root}`, { url });
      }
    }
    let p: string;
    try {
      p = fileURLToPath(u);
    } catch (err) {
      throw new InvalidUrlError(`Invalid file URL \`${url}\`: ${(err as Error).message}`, { url, cause: err });
    }
    if (p.includes('\0')) throw new InvalidUrlError(`File URL \`${url}\` contains a NUL byte`, { url });
    const abs = resolve(p);
    if (!isInside(abs, this.root)) {
      throw new PathEscapeError(`File ${url} (${abs}) is outside the root ${this.root}`, { url });
    }
    return abs;
  }

  async #getRootReal(): Promise<string> {
    if (this.#rootReal !== undefined) return this.#rootReal;
    try {
      this.#rootReal = await realpath(this.root);
      return this.#rootReal;
    } catch {
      // Not created yet: compare against the path as given (and look again next time).
      return this.root;
    }
  }

  /** The real path of `p`, after checking that no symlink leads it out of the root. */
  async #realInside(p: string, url: string): Promise<string> {
    const real = await realpath(p);
    const rootReal = await this.#getRootReal();
    if (!isInside(real, rootReal)) {
      throw new PathEscapeError(`File ${url} resolves through a symlink to ${real}, outside the root ${rootReal}`, { url });
    }
    return real;
  }

  /** `mkdir -p dir`, refusing when an existing ancestor inside the root is a symlink leading out of it. */
  async #ensureDir(dir: string, url: string): Promise<void> {
    let existing: string | undefined = dir;
    while (existing !== undefined) {
      try {
        const st = await stat(existing);
        if (!st.isDirectory()) throw new InvalidUrlError(`Cannot write ${url}: ${existing} is not a directory`, { url });
        break;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') throw err;
        // Walk up to the nearest existing ancestor, but never above the root.
        existing = existing === this.root ? undefined : dirname(existing);
      }
    }
    if (existing !== undefined) await this.#realInside(existing, url);
    await mkdir(dir, { recursive: true });
    await this.#realInside(dir, url);
  }

  #info(p: string, st: BigIntStats): FileInfo {
    return { url: LocalUfs.urlOf(p), size: Number(st.size), etag: localEtag(st), mtimeMs: Number(st.mtimeNs) / 1e6 };
  }

  #mapError(err: unknown, url: string, op: string, options: OpOptions): unknown {
    if (options.signal?.aborted && !(err instanceof GranaryError)) return options.signal.reason ?? err;
    if (err instanceof GranaryError) return err;
    const code = errnoOf(err);
    const detail = `${(err as Error).message}`;
    switch (code) {
      case undefined:
        return err;
      case 'ENOENT':
      case 'ENOTDIR':
        return new NotFoundError(`No such file: ${url} (${op})`, { url, cause: err });
      case 'EISDIR':
        return new NotFoundError(`No such file: ${url} is a directory (${op})`, { url, cause: err });
      case 'ELOOP':
        return new NotFoundError(`Cannot resolve ${url}: too many levels of symbolic links (${op})`, { url, cause: err });
      case 'EACCES':
      case 'EPERM':
        return new AccessDeniedError(`Access denied to ${url} (${op}): ${detail}`, { url, cause: err });
      case 'ENAMETOOLONG':
        return new InvalidUrlError(`File name too long: ${url}`, { url, cause: err });
      case 'EMFILE':
      case 'ENFILE':
      case 'EIO':
      case 'EAGAIN':
      case 'EBUSY':
        return new UnavailableError(`File system unavailable for ${url} (${op}): ${detail}`, { url, cause: err });
      default:
        return new InternalError(`${op} ${url} failed: ${detail}`, { url, cause: err });
    }
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.byteLength) {
    const { bytesWritten } = await fh.write(bytes, off, bytes.byteLength - off);
    off += bytesWritten;
  }
}

/**
 * The serving side of a FUSE connection: requests read from the `/dev/fuse` fd (several
 * blocking reads at once, each on a libuv pool thread, so many requests are in flight),
 * answered from the metadata tree and the block reader. Nothing here is kept that a
 * successor process could not rebuild: ids and handles come from the tree.
 */
import { read as fsRead, writev as fsWritev, writevSync } from 'node:fs';
import { isGranaryError } from '../errors.js';
import type { BlockReader } from './block-reader.js';
import type { MountMetadata } from './metadata.js';
import {
  DT_DIR,
  DT_REG,
  ENTRY_OUT_SIZE,
  Errno,
  FOPEN_CACHE_DIR,
  FOPEN_KEEP_CACHE,
  FUSE_KERNEL_MINOR_VERSION,
  IN_HEADER_SIZE,
  InitFlags,
  InitFlags2,
  Notify,
  Op,
  OUT_HEADER_SIZE,
  WRITE_OPS,
  attrOut,
  direntSize,
  entryOut,
  initOut,
  notification,
  openOut,
  outHeader,
  parseInHeader,
  parseInitIn,
  statfsOut,
  writeDirent,
  writeEntryOut,
  type Attr,
  type InHeader,
} from './protocol.js';
import type { DirNode, FsNode } from './tree.js';

/** Request buffer: max_write is 4096 (nothing is written), so requests are small. */
const REQUEST_BUFFER = 64 * 1024;
const MAX_PAGES = 256;

export interface SessionOptions {
  fd: number;
  metadata: MountMetadata;
  reader: BlockReader;
  /** Blocking reads on the device at once (each holds a libuv pool thread). @default 8 */
  readers?: number;
  log: (line: string) => void;
}

export interface SessionStats {
  requests: number;
  inFlight: number;
  errors: number;
}

function attrOf(node: FsNode): Attr {
  return node.kind === 'file' ? { ino: node.id, size: node.size, mtimeMs: node.mtimeMs, dir: false } : { ino: node.id, size: 4096, mtimeMs: node.mtimeMs, dir: true };
}

/** Each directory's children as an array, so READDIR at an offset does not walk the map. */
const childArrays = new WeakMap<DirNode, FsNode[]>();
function childrenOf(dir: DirNode): FsNode[] {
  let list = childArrays.get(dir);
  if (!list) {
    list = [...dir.children.values()];
    childArrays.set(dir, list);
  }
  return list;
}

class Reply {
  constructor(
    readonly error: number,
    readonly body: Buffer[] = [],
  ) {}
}
const NO_REPLY = Symbol('no reply');

export class FuseSession {
  readonly #o: SessionOptions;
  #stopped = false;
  #ended: ((reason: string) => void) | undefined;
  readonly stats: SessionStats = { requests: 0, inFlight: 0, errors: 0 };

  constructor(options: SessionOptions) {
    this.#o = options;
  }

  /** Serve until the connection goes away (unmounted: ENODEV); resolves with why it ended. */
  run(): Promise<string> {
    return new Promise((resolve) => {
      this.#ended = resolve;
      for (let i = 0; i < (this.#o.readers ?? 8); i++) this.#readLoop();
    });
  }

  /** Ask the kernel to send again the requests a dead predecessor had taken (kernel >= 6.9). */
  resend(): void {
    this.#write([notification(Notify.RESEND, Buffer.alloc(0))], (err) => {
      if (err) this.#o.log(`FUSE_NOTIFY_RESEND refused (${err.code ?? String(err)}): requests the previous serving process held are lost; their readers wait`);
    });
  }

  /** Write a notification without blocking the event loop (the kernel may wait on page locks). */
  notify(message: Buffer): void {
    this.#write([message], () => undefined);
  }

  #write(parts: Buffer[], done: (err: NodeJS.ErrnoException | null) => void): void {
    fsWritev(this.#o.fd, parts, (err) => done(err));
  }

  #end(reason: string): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#ended?.(reason);
  }

  /**
   * One blocking read on the device at a time per loop, into the loop's own buffer: every
   * request is parsed synchronously in #handle, so the buffer is free again when it returns
   * (a fresh 64 KiB buffer per request made the collector the serving process's top cost).
   */
  #readLoop(buf: Buffer = Buffer.allocUnsafe(REQUEST_BUFFER)): void {
    if (this.#stopped) return;
    fsRead(this.#o.fd, buf, 0, buf.length, null, (err, n) => {
      if (err) {
        if (err.code === 'ENODEV') return this.#end('unmounted');
        if (err.code === 'EINTR' || err.code === 'EAGAIN' || err.code === 'ENOENT') return this.#readLoop(buf);
        this.#o.log(`reading the FUSE device failed: ${err.code ?? err.message}`);
        return this.#end(`device read failed: ${err.code ?? err.message}`);
      }
      try {
        if (n >= IN_HEADER_SIZE) this.#handle(buf.subarray(0, n));
      } finally {
        this.#readLoop(buf);
      }
    });
  }

  #handle(req: Buffer): void {
    const h = parseInHeader(req);
    const body = req.subarray(IN_HEADER_SIZE, h.len);
    this.stats.requests++;
    this.stats.inFlight++;
    let result: Reply | typeof NO_REPLY | Promise<Reply>;
    try {
      result = this.#dispatch(h, body);
    } catch (err) {
      result = this.#failure(h, err);
    }
    if (result === NO_REPLY) {
      this.stats.inFlight--;
      return;
    }
    if (result instanceof Reply) return this.#send(h, result);
    result.then(
      (r) => this.#send(h, r),
      (err: unknown) => this.#send(h, this.#failure(h, err)),
    );
  }

  #failure(h: InHeader, err: unknown): Reply {
    this.stats.errors++;
    const code = isGranaryError(err) ? err.code : String(err);
    this.#o.log(`opcode ${h.opcode} on node ${h.nodeid} failed: ${code}: ${err instanceof Error ? err.message : ''}`);
    return new Reply(-Errno.EIO);
  }

  #send(h: InHeader, r: Reply): void {
    this.stats.inFlight--;
    const len = OUT_HEADER_SIZE + r.body.reduce((n, b) => n + b.length, 0);
    try {
      // The reply only copies into the request's pages: it does not block.
      writevSync(this.#o.fd, [outHeader(len, r.error, h.unique), ...r.body]);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the request was interrupted and is gone; ENODEV: unmounted.
      if (code === 'ENODEV') this.#end('unmounted');
      else if (code !== 'ENOENT') this.#o.log(`reply to opcode ${h.opcode} failed: ${code ?? String(err)}`);
    }
  }

  #dispatch(h: InHeader, body: Buffer): Reply | typeof NO_REPLY | Promise<Reply> {
    const md = this.#o.metadata;
    switch (h.opcode) {
      case Op.INIT:
        return this.#init(body);
      case Op.FORGET:
      case Op.BATCH_FORGET:
      case Op.INTERRUPT:
        // Ids are not reference-counted here; interrupts of reads that finish quickly are moot.
        return NO_REPLY;
      case Op.DESTROY:
        this.#end('destroyed');
        return new Reply(0);
      case Op.LOOKUP: {
        const parent = md.node(h.nodeid);
        if (parent?.kind !== 'dir') return new Reply(-(parent ? Errno.ENOTDIR : Errno.ESTALE));
        const name = body.subarray(0, body.indexOf(0)).toString();
        const child = parent.children.get(name);
        // A name not in the listing: a negative entry the kernel keeps for the TTL.
        return new Reply(0, [entryOut(child ? attrOf(child) : undefined, md.validMs())]);
      }
      case Op.GETATTR: {
        const node = md.node(h.nodeid);
        return node ? new Reply(0, [attrOut(attrOf(node), md.validMs())]) : new Reply(-Errno.ESTALE);
      }
      case Op.OPEN: {
        const node = md.node(h.nodeid);
        if (!node) return new Reply(-Errno.ESTALE);
        if (node.kind === 'dir') return new Reply(-Errno.EISDIR);
        const flags = body.readUInt32LE(0);
        if ((flags & 3) !== 0 || (flags & 0o1000) !== 0) return new Reply(-Errno.EROFS);
        // The handle is the node id (path, version): the page cache stays valid while the version does.
        return new Reply(0, [openOut(node.id, FOPEN_KEEP_CACHE)]);
      }
      case Op.OPENDIR: {
        const node = md.node(h.nodeid);
        if (!node) return new Reply(-Errno.ESTALE);
        if (node.kind !== 'dir') return new Reply(-Errno.ENOTDIR);
        return new Reply(0, [openOut(node.id, FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR)]);
      }
      case Op.READ: {
        const fh = body.readBigUInt64LE(0);
        const offset = Number(body.readBigUInt64LE(8));
        const size = body.readUInt32LE(16);
        const node = md.node(fh) ?? md.node(h.nodeid);
        if (!node) return new Reply(-Errno.ESTALE);
        if (node.kind !== 'file') return new Reply(-Errno.EISDIR);
        return this.#o.reader.read(node, offset, size).then((bytes) => new Reply(0, [bytes]));
      }
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.#readdir(h, body, h.opcode === Op.READDIRPLUS);
      case Op.STATFS: {
        const t = md.tree();
        return new Reply(0, [statfsOut(t.bytes, t.files)]);
      }
      case Op.ACCESS:
        return new Reply((body.readUInt32LE(0) & 2) !== 0 ? -Errno.EROFS : 0);
      case Op.FLUSH:
        // ENOSYS: the kernel stops sending FLUSH on close (nothing is written): one round trip less per file.
        return new Reply(-Errno.ENOSYS);
      case Op.RELEASE:
      case Op.RELEASEDIR:
        return new Reply(0);
      case Op.GETXATTR:
      case Op.LISTXATTR:
        // ENOSYS: the kernel stops asking, and callers see EOPNOTSUPP (no extended attributes).
        return new Reply(-Errno.ENOSYS);
      default:
        return new Reply(WRITE_OPS.has(h.opcode) ? -Errno.EROFS : -Errno.ENOSYS);
    }
  }

  #init(body: Buffer): Reply {
    const k = parseInitIn(body);
    const want = InitFlags.ASYNC_READ | InitFlags.DO_READDIRPLUS | InitFlags.PARALLEL_DIROPS | InitFlags.MAX_PAGES | InitFlags.INIT_EXT;
    const flags = k.flags & want;
    const flags2 = (k.flags & InitFlags.INIT_EXT) !== 0 ? k.flags2 & InitFlags2.HAS_RESEND : 0;
    this.#o.log(`FUSE protocol ${k.major}.${k.minor}, resend ${(flags2 & InitFlags2.HAS_RESEND) !== 0 ? 'supported' : 'not supported'}`);
    return new Reply(0, [initOut({ minor: Math.min(k.minor, FUSE_KERNEL_MINOR_VERSION), maxReadahead: k.maxReadahead, flags, flags2, maxPages: MAX_PAGES })]);
  }

  #readdir(h: InHeader, body: Buffer, plus: boolean): Reply {
    const md = this.#o.metadata;
    const dir = md.node(body.readBigUInt64LE(0)) ?? md.node(h.nodeid);
    if (!dir) return new Reply(-Errno.ESTALE);
    if (dir.kind !== 'dir') return new Reply(-Errno.ENOTDIR);
    const offset = Number(body.readBigUInt64LE(8));
    const size = body.readUInt32LE(16);
    const validMs = md.validMs();
    // Offsets are positions in the listing: . is 1, .. is 2, then the children in order.
    const entries: { name: Buffer; node: FsNode | undefined; ino: bigint; type: number }[] = [
      { name: Buffer.from('.'), node: undefined, ino: dir.id, type: DT_DIR },
      { name: Buffer.from('..'), node: undefined, ino: dir.parent, type: DT_DIR },
    ];
    const out = Buffer.alloc(size);
    let at = 0;
    let index = 0;
    const emit = (e: { name: Buffer; node: FsNode | undefined; ino: bigint; type: number }): boolean => {
      index++;
      if (index <= offset) return true;
      const need = direntSize(e.name.length, plus);
      if (at + need > size) return false;
      if (plus) {
        writeEntryOut(out, at, e.node ? attrOf(e.node) : undefined, validMs);
        writeDirent(out, at + ENTRY_OUT_SIZE, e.ino, index, e.name, e.type);
      } else writeDirent(out, at, e.ino, index, e.name, e.type);
      at += need;
      return true;
    };
    for (const e of entries) if (!emit(e)) return new Reply(0, [out.subarray(0, at)]);
    const children = childrenOf(dir);
    index = Math.max(index, Math.min(offset, entries.length + children.length));
    for (let i = Math.max(0, offset - entries.length); i < children.length; i++) {
      const child = children[i] as FsNode;
      if (!emit({ name: child.name, node: child, ino: child.id, type: child.kind === 'dir' ? DT_DIR : DT_REG })) break;
    }
    return new Reply(0, [out.subarray(0, at)]);
  }
}

/**
 * The kernel FUSE protocol (include/uapi/linux/fuse.h), as much of it as a read-only
 * file system needs: opcodes, INIT flags, errno values, and the byte layouts of the
 * requests it parses and the replies it writes. Every integer is little-endian
 * (x86-64 and arm64 are; the kernel writes host order).
 */

export const FUSE_KERNEL_VERSION = 7;
/** The newest minor this server speaks; the kernel uses the smaller of its own and this. */
export const FUSE_KERNEL_MINOR_VERSION = 45;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  COPY_FILE_RANGE: 47,
  TMPFILE: 51,
} as const;

/** Operations that would change the file system: all answered EROFS. */
export const WRITE_OPS: ReadonlySet<number> = new Set([
  Op.SETATTR,
  Op.SYMLINK,
  Op.MKNOD,
  Op.MKDIR,
  Op.UNLINK,
  Op.RMDIR,
  Op.RENAME,
  Op.LINK,
  Op.WRITE,
  Op.SETXATTR,
  Op.REMOVEXATTR,
  Op.CREATE,
  Op.FALLOCATE,
  Op.RENAME2,
  Op.COPY_FILE_RANGE,
  Op.TMPFILE,
]);

/** Notification codes (written with unique 0, the code in the error field). */
export const Notify = { INVAL_INODE: 2, INVAL_ENTRY: 3, RESEND: 7 } as const;

/** INIT flags (the low 32 bits) this server asks for, when the kernel offers them. */
export const InitFlags = {
  ASYNC_READ: 1 << 0,
  DO_READDIRPLUS: 1 << 13,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  INIT_EXT: 1 << 30,
} as const;
/** flags2 (bits 32..63): FUSE_HAS_RESEND (bit 39), the kernel re-sends requests on FUSE_NOTIFY_RESEND. */
export const InitFlags2 = { HAS_RESEND: 1 << (39 - 32) } as const;

export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_CACHE_DIR = 1 << 3;

export const Errno = {
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EROFS: 30,
  ENOSYS: 38,
  ENODATA: 61,
  ESTALE: 116,
} as const;

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const DT_DIR = 4;
export const DT_REG = 8;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const DIRENT_HEADER_SIZE = 24;

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
}

export function parseInHeader(buf: Buffer): InHeader {
  return { len: buf.readUInt32LE(0), opcode: buf.readUInt32LE(4), unique: buf.readBigUInt64LE(8), nodeid: buf.readBigUInt64LE(16) };
}

export function outHeader(len: number, error: number, unique: bigint): Buffer {
  const b = Buffer.alloc(OUT_HEADER_SIZE);
  b.writeUInt32LE(len, 0);
  b.writeInt32LE(error, 4);
  b.writeBigUInt64LE(unique, 8);
  return b;
}

/** What the attributes of one node say; times in ms since the epoch. */
export interface Attr {
  ino: bigint;
  size: number;
  mtimeMs: number;
  dir: boolean;
}

const OWNER = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };

export function writeAttr(b: Buffer, at: number, a: Attr): void {
  const sec = BigInt(Math.floor(a.mtimeMs / 1000));
  const nsec = Math.floor((a.mtimeMs % 1000) * 1e6);
  b.writeBigUInt64LE(a.ino, at);
  b.writeBigUInt64LE(BigInt(a.size), at + 8);
  b.writeBigUInt64LE(BigInt(Math.ceil(a.size / 512)), at + 16);
  for (const off of [24, 32, 40]) b.writeBigUInt64LE(sec, at + off);
  for (const off of [48, 52, 56]) b.writeUInt32LE(nsec, at + off);
  b.writeUInt32LE(a.dir ? S_IFDIR | 0o555 : S_IFREG | 0o444, at + 60);
  b.writeUInt32LE(a.dir ? 2 : 1, at + 64); // nlink
  // The serving process's user, as the mount's user_id/group_id say (root, or the user fusermount3 mounted for).
  b.writeUInt32LE(OWNER.uid, at + 68);
  b.writeUInt32LE(OWNER.gid, at + 72);
  b.writeUInt32LE(128 * 1024, at + 80); // blksize: what `cp` and stdio size their buffers by
}

/** Seconds and nanoseconds of a timeout in ms. */
function splitTimeout(ms: number): { sec: bigint; nsec: number } {
  return { sec: BigInt(Math.floor(ms / 1000)), nsec: Math.floor((ms % 1000) * 1e6) };
}

/** fuse_entry_out; `attr` undefined is a negative entry (nodeid 0), cached for `validMs`. */
export function writeEntryOut(b: Buffer, at: number, attr: Attr | undefined, validMs: number): void {
  const t = splitTimeout(validMs);
  b.writeBigUInt64LE(attr?.ino ?? 0n, at);
  b.writeBigUInt64LE(0n, at + 8); // generation
  b.writeBigUInt64LE(t.sec, at + 16);
  b.writeBigUInt64LE(t.sec, at + 24);
  b.writeUInt32LE(t.nsec, at + 32);
  b.writeUInt32LE(t.nsec, at + 36);
  if (attr) writeAttr(b, at + 40, attr);
  else b.fill(0, at + 40, at + ENTRY_OUT_SIZE);
}

export function entryOut(attr: Attr | undefined, validMs: number): Buffer {
  const b = Buffer.alloc(ENTRY_OUT_SIZE);
  writeEntryOut(b, 0, attr, validMs);
  return b;
}

/** fuse_attr_out. */
export function attrOut(attr: Attr, validMs: number): Buffer {
  const b = Buffer.alloc(16 + ATTR_SIZE);
  const t = splitTimeout(validMs);
  b.writeBigUInt64LE(t.sec, 0);
  b.writeUInt32LE(t.nsec, 8);
  writeAttr(b, 16, attr);
  return b;
}

/** fuse_open_out. */
export function openOut(fh: bigint, openFlags: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(fh, 0);
  b.writeUInt32LE(openFlags, 8);
  return b;
}

/** fuse_kstatfs (fuse_statfs_out). */
export function statfsOut(totalBytes: number, files: number): Buffer {
  const b = Buffer.alloc(80);
  const blocks = BigInt(Math.ceil(totalBytes / 4096));
  b.writeBigUInt64LE(blocks, 0);
  b.writeBigUInt64LE(BigInt(files), 24);
  b.writeUInt32LE(4096, 40); // bsize
  b.writeUInt32LE(255, 44); // namelen
  b.writeUInt32LE(4096, 48); // frsize
  return b;
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
}

export function parseInitIn(body: Buffer): InitIn {
  return {
    major: body.readUInt32LE(0),
    minor: body.readUInt32LE(4),
    maxReadahead: body.readUInt32LE(8),
    flags: body.readUInt32LE(12),
    flags2: body.length >= 20 ? body.readUInt32LE(16) : 0,
  };
}

/** fuse_init_out (64 bytes, the size since 7.23). */
export function initOut(o: { minor: number; maxReadahead: number; flags: number; flags2: number; maxPages: number }): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  b.writeUInt32LE(o.minor, 4);
  b.writeUInt32LE(o.maxReadahead, 8);
  b.writeUInt32LE(o.flags >>> 0, 12);
  b.writeUInt16LE(64, 16); // max_background
  b.writeUInt16LE(48, 18); // congestion_threshold
  b.writeUInt32LE(4096, 20); // max_write: nothing is written; the smallest the kernel takes keeps read buffers small
  b.writeUInt32LE(1, 24); // time_gran (ns)
  b.writeUInt16LE(o.maxPages, 28);
  b.writeUInt32LE(o.flags2 >>> 0, 32);
  return b;
}

/** One fuse_dirent (READDIR) or fuse_direntplus (READDIRPLUS) record, padded to 8 bytes. */
export function direntSize(nameBytes: number, plus: boolean): number {
  return (plus ? ENTRY_OUT_SIZE : 0) + ((DIRENT_HEADER_SIZE + nameBytes + 7) & ~7);
}

export function writeDirent(b: Buffer, at: number, ino: bigint, off: number, name: Buffer, type: number): void {
  b.writeBigUInt64LE(ino, at);
  b.writeBigUInt64LE(BigInt(off), at + 8);
  b.writeUInt32LE(name.length, at + 16);
  b.writeUInt32LE(type, at + 20);
  name.copy(b, at + DIRENT_HEADER_SIZE);
}

/** A notification: fuse_out_header with unique 0 and the code in `error`, then its body. */
export function notification(code: number, body: Buffer): Buffer {
  return Buffer.concat([outHeader(OUT_HEADER_SIZE + body.length, code, 0n), body]);
}

export function invalInode(ino: bigint): Buffer {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(ino, 0);
  // off 0, len 0: every cached page, and the attributes
  return notification(Notify.INVAL_INODE, b);
}

export function invalEntry(parent: bigint, name: Buffer): Buffer {
  const b = Buffer.alloc(16 + name.length + 1);
  b.writeBigUInt64LE(parent, 0);
  b.writeUInt32LE(name.length, 8);
  name.copy(b, 16);
  return notification(Notify.INVAL_ENTRY, b);
}

/**
 * The mount's directory tree, built from one listing of the store prefix. Node ids
 * (the kernel's inode numbers, and the file handles) are a hash of (path, version):
 * a new serving process that builds the tree from the same listing gives every file
 * the id its predecessor gave it, so it can answer requests the kernel re-sends.
 */
import { createHash } from 'node:crypto';
import type { FileInfo } from '../ufs/types.js';

export const ROOT_ID = 1n;

export interface FileNode {
  kind: 'file';
  id: bigint;
  /** Path below the mount, without a leading slash (`train/a.bin`). */
  path: string;
  name: Buffer;
  parent: bigint;
  url: string;
  size: number;
  etag: string;
  mtimeMs: number;
}

export interface DirNode {
  kind: 'dir';
  id: bigint;
  path: string;
  name: Buffer;
  parent: bigint;
  mtimeMs: number;
  /** Children by name, in listing order (sorted). */
  children: Map<string, FsNode>;
}

export type FsNode = FileNode | DirNode;

/** 63 bits of sha256(kind, path, version), never 0 or the root's 1. */
export function nodeId(kind: 'file' | 'dir', path: string, version: string): bigint {
  if (kind === 'dir' && path === '') return ROOT_ID;
  const h = createHash('sha256').update(`${kind}\0${path}\0${version}`).digest();
  const id = h.readBigUInt64LE(0) & 0x7fff_ffff_ffff_ffffn;
  return id < 2n ? id + 2n : id;
}

export interface Tree {
  root: DirNode;
  byId: Map<bigint, FsNode>;
  files: number;
  bytes: number;
  /** Keys left out: a name that is not a valid file name, or a file that is also a directory. */
  skipped: string[];
}

function newDir(path: string, name: string, parent: bigint, mtimeMs: number): DirNode {
  return { kind: 'dir', id: nodeId('dir', path, ''), path, name: Buffer.from(name), parent, mtimeMs, children: new Map() };
}

function validName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && Buffer.byteLength(name) <= 255 && !name.includes('\0');
}

/** Build the tree from a listing of `prefix` (a URL ending in `/`). */
export function buildTree(prefix: string, files: Iterable<FileInfo>, now = Date.now()): Tree {
  // A directory's mtime is its newest file's: a function of the listing, so a listing
  // again that finds nothing new changes nothing `tar` or `make` could notice.
  const root = newDir('', '', ROOT_ID, 0);
  const byId = new Map<bigint, FsNode>([[ROOT_ID, root]]);
  const skipped: string[] = [];
  let count = 0;
  let bytes = 0;
  for (const f of files) {
    if (!f.url.startsWith(prefix)) continue;
    const rel = f.url.slice(prefix.length);
    const parts = rel.split('/');
    if (!parts.every(validName)) {
      if (!rel.endsWith('/') || rel.length <= 1) skipped.push(rel); // "dir/" markers are not files
      continue;
    }
    let dir = root;
    let ok = true;
    const ancestors: DirNode[] = [root];
    for (let i = 0; i < parts.length - 1; i++) {
      const name = parts[i] as string;
      const existing = dir.children.get(name);
      if (existing?.kind === 'file') {
        ok = false;
        break;
      }
      if (existing) dir = existing;
      else {
        const d = newDir(parts.slice(0, i + 1).join('/'), name, dir.id, 0);
        dir.children.set(name, d);
        byId.set(d.id, d);
        dir = d;
      }
      ancestors.push(dir);
    }
    const name = parts[parts.length - 1] as string;
    if (!ok || dir.children.has(name)) {
      skipped.push(rel);
      continue;
    }
    const node: FileNode = {
      kind: 'file',
      id: nodeId('file', rel, f.etag),
      path: rel,
      name: Buffer.from(name),
      parent: dir.id,
      url: f.url,
      size: f.size,
      etag: f.etag,
      mtimeMs: f.mtimeMs ?? now,
    };
    dir.children.set(name, node);
    byId.set(node.id, node);
    for (const a of ancestors) a.mtimeMs = Math.max(a.mtimeMs, node.mtimeMs);
    count++;
    bytes += f.size;
  }
  return { root, byId, files: count, bytes, skipped };
}

/** A path's change between two trees, for the kernel notifications it calls for. */
export interface TreeChange {
  /** The parent directory's id and the entry's name. */
  parent: bigint;
  name: Buffer;
  /** The id the kernel may hold for the old version (absent for a new name). */
  oldId: bigint | undefined;
}

/** Entries whose version changed, that vanished, or that appeared (a negative entry to drop). */
export function diffTrees(before: Tree, after: Tree): TreeChange[] {
  const changes: TreeChange[] = [];
  const walk = (a: DirNode | undefined, b: DirNode | undefined, id: bigint): void => {
    const names = new Set([...(a?.children.keys() ?? []), ...(b?.children.keys() ?? [])]);
    for (const name of names) {
      const x = a?.children.get(name);
      const y = b?.children.get(name);
      if (x?.id === y?.id) {
        if (x?.kind === 'dir' && y?.kind === 'dir') walk(x, y, x.id);
        continue;
      }
      changes.push({ parent: id, name: Buffer.from(name), oldId: x?.id });
      if (x?.kind === 'dir' || y?.kind === 'dir') walk(x?.kind === 'dir' ? x : undefined, y?.kind === 'dir' ? y : undefined, (x ?? y)?.id ?? id);
    }
  };
  walk(before.root, after.root, ROOT_ID);
  return changes;
}

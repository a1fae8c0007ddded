/**
 * The mount's metadata: one listing of the prefix, trusted for the metadata TTL, then
 * listed again in the background when a request comes after it. A version change seen
 * on a new listing is pushed to the kernel (FUSE_NOTIFY_INVAL_ENTRY for the name,
 * FUSE_NOTIFY_INVAL_INODE for the old inode's attributes and pages), so the next open
 * finds the new version and never reads a mix of two.
 */
import type { FileInfo, UnderFileSystem } from '../ufs/types.js';
import { invalEntry, invalInode } from './protocol.js';
import { buildTree, diffTrees, type FsNode, type Tree } from './tree.js';

/** Old versions kept answerable for files still open across a listing change. */
const RETIRED_MAX = 65_536;

export interface MountMetadataOptions {
  fs: UnderFileSystem;
  /** Store prefix URL, ending in `/`. */
  prefix: string;
  ttlMs: number;
  /** Writes one notification to the FUSE device (asynchronously: the kernel may wait on pages). */
  notify: (message: Buffer) => void;
  log: (line: string) => void;
}

export class MountMetadata {
  readonly #o: MountMetadataOptions;
  #tree: Tree | undefined;
  #listedAt = 0;
  #refreshing: Promise<void> | undefined;
  readonly #retired = new Map<bigint, FsNode>();

  constructor(options: MountMetadataOptions) {
    this.#o = options;
  }

  /** List the prefix (the first time, or again). */
  async load(): Promise<Tree> {
    const files: FileInfo[] = [];
    for await (const f of this.#o.fs.list(this.#o.prefix)) files.push(f);
    const tree = buildTree(this.#o.prefix, files);
    const before = this.#tree;
    this.#tree = tree;
    this.#listedAt = Date.now();
    if (tree.skipped.length > 0 && before === undefined) {
      this.#o.log(`${tree.skipped.length} keys are not valid paths and are left out (first: ${JSON.stringify(tree.skipped[0])})`);
    }
    if (before) this.#invalidate(before, tree);
    return tree;
  }

  /** The current tree; starts a background listing when it is older than the TTL. */
  tree(): Tree {
    const tree = this.#tree;
    if (tree === undefined) throw new Error('metadata used before load()');
    if (Date.now() - this.#listedAt >= this.#o.ttlMs && this.#refreshing === undefined) {
      this.#refreshing = this.load()
        .then(
          () => undefined,
          (err: unknown) => this.#o.log(`listing ${this.#o.prefix} failed, keeping the last one: ${String(err)}`),
        )
        .finally(() => {
          this.#refreshing = undefined;
        });
    }
    return tree;
  }

  /** A node by id: in the current tree, or an old version a handle may still name. */
  node(id: bigint): FsNode | undefined {
    return this.tree().byId.get(id) ?? this.#retired.get(id);
  }

  /** How long the kernel may trust an entry or attributes: what is left of the TTL. */
  validMs(): number {
    return Math.max(0, this.#o.ttlMs - (Date.now() - this.#listedAt));
  }

  #invalidate(before: Tree, after: Tree): void {
    const parents = new Set<bigint>();
    for (const change of diffTrees(before, after)) {
      parents.add(change.parent);
      this.#o.notify(invalEntry(change.parent, change.name));
      if (change.oldId !== undefined) {
        this.#o.notify(invalInode(change.oldId));
        const old = before.byId.get(change.oldId);
        if (old?.kind === 'file') this.#retired.set(old.id, old);
      }
    }
    // The directories' own attributes and cached listings (FOPEN_CACHE_DIR).
    for (const id of parents) this.#o.notify(invalInode(id));
    while (this.#retired.size > RETIRED_MAX) this.#retired.delete(this.#retired.keys().next().value as bigint);
  }
}

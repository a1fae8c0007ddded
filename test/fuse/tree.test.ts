import { describe, expect, it } from 'vitest';
import { buildTree, diffTrees, nodeId, ROOT_ID } from '../../src/fuse/tree.js';
import type { FileInfo } from '../../src/ufs/types.js';

const P = 's3://b/data/';
const f = (key: string, etag: string, size = 1, mtimeMs = 1000): FileInfo => ({ url: P + key, size, etag, mtimeMs });

describe('the mount tree', () => {
  it('gives a file the same id in every process that lists the same version, and a new id for a new version', () => {
    const a = buildTree(P, [f('x/y.bin', 'e1')]);
    const b = buildTree(P, [f('x/y.bin', 'e1')]);
    const c = buildTree(P, [f('x/y.bin', 'e2')]);
    const id = (t: typeof a) => [...t.byId.values()].find((n) => n.path === 'x/y.bin')?.id;
    expect(id(a)).toBe(id(b));
    expect(id(a)).toBe(nodeId('file', 'x/y.bin', 'e1'));
    expect(id(c)).not.toBe(id(a));
    expect(a.root.id).toBe(ROOT_ID);
  });

  it('builds directories from keys, leaves out keys that are not paths, and dates a directory by its newest file', () => {
    const t = buildTree(P, [f('a/1', 'e', 5, 3000), f('a/b/2', 'e', 7, 9000), f('dir-marker/', ''), f('bad//name', 'e'), f('a', 'e'), f('c/..', 'e')]);
    expect(t.files).toBe(2);
    expect(t.bytes).toBe(12);
    expect(t.skipped.sort()).toEqual(['a', 'bad//name', 'c/..']);
    const a = t.root.children.get('a');
    expect(a?.kind).toBe('dir');
    expect(a?.mtimeMs).toBe(9000);
    expect(t.root.mtimeMs).toBe(9000);
  });

  it('reports changed, new and removed entries between two listings, and nothing when nothing changed', () => {
    const before = buildTree(P, [f('a/1', 'e1'), f('a/2', 'e1'), f('gone/3', 'e1')]);
    expect(diffTrees(before, buildTree(P, [f('a/1', 'e1'), f('a/2', 'e1'), f('gone/3', 'e1')]))).toEqual([]);
    const after = buildTree(P, [f('a/1', 'e2'), f('a/2', 'e1'), f('new', 'e1')]);
    const changes = diffTrees(before, after).map((c) => ({ name: c.name.toString(), old: c.oldId !== undefined }));
    expect(changes).toEqual(expect.arrayContaining([{ name: '1', old: true }, { name: 'gone', old: true }, { name: '3', old: true }, { name: 'new', old: false }]));
    expect(changes.some((c) => c.name === '2')).toBe(false);
  });
});

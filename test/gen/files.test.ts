import { describe, expect, it } from 'vitest';
import { generateFileDataset, objectBytes } from '../../src/gen/files.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { readAll } from './helpers.js';

describe('generateFileDataset', () => {
  it('writes K objects of S bytes named like an image folder', async () => {
    const ufs = new MemoryUfs();
    const summary = await generateFileDataset(ufs, 'file:///data/images', { count: 12, bytes: 1001, seed: 5 });
    expect(summary).toMatchObject({ format: 'files', prefixUrl: 'file:///data/images/', rows: 12, bytes: 12 * 1001 });
    const listed = [];
    for await (const f of ufs.list('file:///data/images/')) listed.push(f);
    expect(listed.map((f) => f.url)).toEqual(Array.from({ length: 12 }, (_, i) => `file:///data/images/img-${String(i).padStart(6, '0')}.bin`));
    expect(listed.every((f) => f.size === 1001)).toBe(true);
    expect(await readAll(ufs, 'file:///data/images/img-000003.bin')).toEqual(objectBytes(5, 3, 1001));
  });

  it('gives every object its own deterministic content', async () => {
    const a = await generateFileDataset(new MemoryUfs(), 's3://bucket/f/', { count: 4, bytes: 64, seed: 9 });
    const b = await generateFileDataset(new MemoryUfs(), 's3://bucket/f/', { count: 4, bytes: 64, seed: 9 });
    expect(b.files.map((f) => f.sha256)).toEqual(a.files.map((f) => f.sha256));
    expect(new Set(a.files.map((f) => f.sha256)).size).toBe(4);
  });

  it('allows empty objects', async () => {
    const s = await generateFileDataset(new MemoryUfs(), 's3://bucket/e/', { count: 2, bytes: 0 });
    expect(s.files.map((f) => f.size)).toEqual([0, 0]);
  });

  it('rejects a count below one with a coded error', async () => {
    await expect(generateFileDataset(new MemoryUfs(), 's3://bucket/e/', { count: 0, bytes: 10 })).rejects.toMatchObject({
      code: 'GRANARY_ERR_INVALID_ARGUMENT',
      message: expect.stringContaining('`count`') as unknown,
    });
  });
});

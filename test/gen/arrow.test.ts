import { tableFromIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { generateArrowDataset } from '../../src/gen/arrow.js';
import { generateParquetDataset } from '../../src/gen/parquet.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { decodeParquet, ids, readAll } from './helpers.js';

describe('generateArrowDataset', () => {
  it('writes Arrow IPC files of record batches with dense ids across files', async () => {
    const ufs = new MemoryUfs();
    const summary = await generateArrowDataset(ufs, 's3://bucket/arrow/', { rows: 500, files: 2, rowGroupRows: 100, embeddingBytes: 8 });
    expect(summary.format).toBe('arrow');
    expect(summary.files.map((f) => f.url)).toEqual(['s3://bucket/arrow/part-00000.arrow', 's3://bucket/arrow/part-00001.arrow']);
    const all: number[] = [];
    for (const f of summary.files) {
      const table = tableFromIPC(await readAll(ufs, f.url));
      expect(table.batches.map((b) => b.numRows)).toEqual([100, 100, 50]);
      expect(f.groups).toBe(3);
      expect(String(table.schema.fields[3]?.type)).toBe('FixedSizeBinary[8]');
      all.push(...ids(table));
    }
    expect(all).toEqual(Array.from({ length: 500 }, (_, i) => i));
  });

  it('holds the same values as the Parquet dataset made with the same options', async () => {
    const ufs = new MemoryUfs();
    const options = { rows: 300, files: 2, rowGroupRows: 64, seed: 3 };
    const a = await generateArrowDataset(ufs, 's3://bucket/a/', options);
    const p = await generateParquetDataset(ufs, 's3://bucket/p/', options);
    for (let i = 0; i < 2; i++) {
      const fromArrow = tableFromIPC(await readAll(ufs, a.files[i]?.url ?? ''));
      const fromParquet = decodeParquet(await readAll(ufs, p.files[i]?.url ?? ''));
      for (const name of ['id', 'label', 'score', 'embedding']) {
        expect([...(fromArrow.getChild(name) ?? [])]).toEqual([...(fromParquet.getChild(name) ?? [])]);
      }
    }
  });

  it('is deterministic from its seed', async () => {
    const a = await generateArrowDataset(new MemoryUfs(), 's3://bucket/x/', { rows: 100, seed: 1 });
    const b = await generateArrowDataset(new MemoryUfs(), 's3://bucket/x/', { rows: 100, seed: 1 });
    expect(b.files[0]?.sha256).toBe(a.files[0]?.sha256);
  });
});

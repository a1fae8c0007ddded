import { describe, expect, it } from 'vitest';
import { generateArrowDataset } from '../../src/gen/arrow.js';
import { generateFileDataset } from '../../src/gen/files.js';
import { generateParquetDataset } from '../../src/gen/parquet.js';
import { parquetLayout, verifyDataset } from '../../src/gen/verify.js';
import { parseFileMetaData } from '../../src/loader/parquet-footer.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { decodeParquet, readAll } from './helpers.js';

describe('parquetLayout', () => {
  it('finds every row group from the footer alone, and the ranges tile the file', async () => {
    const ufs = new MemoryUfs();
    const s = await generateParquetDataset(ufs, 's3://bucket/l/', { rows: 1000, rowGroupRows: 300, codec: 'snappy' });
    const f = s.files[0];
    if (!f) throw new Error('no file');
    const before = ufs.requestCounts().get;
    const layout = await parquetLayout(ufs, f);
    expect(ufs.requestCounts().get - before).toBe(2);
    expect(layout.numRows).toBe(1000);
    expect(layout.ranges.map((r) => r.kind)).toEqual(['magic', 'rowGroup', 'rowGroup', 'rowGroup', 'rowGroup', 'pageIndex', 'footer', 'tail']);
    const last = layout.ranges.at(-1);
    expect((last?.offset ?? 0) + (last?.length ?? 0)).toBe(f.size);
  });

  it('names the columns and row counts of each row group', async () => {
    const ufs = new MemoryUfs();
    const s = await generateParquetDataset(ufs, 's3://bucket/l/', { rows: 250, rowGroupRows: 100 });
    const bytes = await readAll(ufs, s.files[0]?.url ?? '');
    const footerLen = new DataView(bytes.buffer, bytes.byteOffset + bytes.byteLength - 8, 4).getUint32(0, true);
    const footer = parseFileMetaData(bytes.subarray(bytes.byteLength - 8 - footerLen, bytes.byteLength - 8), 'x');
    expect(footer.rowGroups.map((rg) => rg.numRows)).toEqual([100, 100, 50]);
    expect(footer.rowGroups[0]?.columns.map((c) => c.path)).toEqual(['id', 'label', 'score', 'embedding']);
    expect(decodeParquet(bytes).numRows).toBe(250);
  });

  it('rejects a file that does not end with the Parquet magic, naming the file', async () => {
    const ufs = new MemoryUfs();
    const info = await ufs.write('s3://bucket/bad.parquet', new TextEncoder().encode('PAR1 this is not parquet at all'));
    await expect(parquetLayout(ufs, info)).rejects.toMatchObject({ code: 'GRANARY_ERR_CORRUPT', message: expect.stringContaining('s3://bucket/bad.parquet') as unknown });
  });

  it('rejects a malformed footer with a coded error instead of hanging or crashing', async () => {
    const ufs = new MemoryUfs();
    const junk = new Uint8Array([...new TextEncoder().encode('PAR1'), 0x19, 0xff, 0xff, 0x0f, 5, 0, 0, 0, ...new TextEncoder().encode('PAR1')]);
    const info = await ufs.write('s3://bucket/junk.parquet', junk);
    await expect(parquetLayout(ufs, info)).rejects.toMatchObject({ code: 'GRANARY_ERR_CORRUPT' });
  });
});

describe('parseFileMetaData', () => {
  it('rejects collections that claim more elements than there are bytes', () => {
    // struct field 1: a map (type 11) of 2^35 entries of booleans, then nothing.
    const hostile = new Uint8Array([0x1b, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x11]);
    expect(() => parseFileMetaData(hostile, 'evil.parquet')).toThrow(/evil\.parquet.*collection of/);
    // a list (type 9) of 2^20 structs
    expect(() => parseFileMetaData(new Uint8Array([0x19, 0xfc, 0x80, 0x80, 0x40]), 'evil.parquet')).toThrow(/collection of/);
  });
});

describe('verifyDataset', () => {
  it('reads back Parquet, Arrow and raw-file datasets and accounts every byte', async () => {
    const ufs = new MemoryUfs();
    for (const s of [
      await generateParquetDataset(ufs, 's3://bucket/p/', { rows: 2000, files: 3, rowGroupRows: 256 }),
      await generateArrowDataset(ufs, 's3://bucket/a/', { rows: 500, files: 2 }),
      await generateFileDataset(ufs, 's3://bucket/f/', { count: 7, bytes: 3000 }),
    ]) {
      const r = await verifyDataset(ufs, s);
      expect(r.files).toBe(s.files.length);
      expect(r.bytes).toBe(s.bytes);
      if (s.format === 'parquet') expect(r.rowGroups).toBe(s.files.reduce((n, f) => n + f.groups, 0));
    }
  });

  it('detects a file whose bytes changed after writing', async () => {
    const ufs = new MemoryUfs();
    const s = await generateFileDataset(ufs, 's3://bucket/f/', { count: 3, bytes: 100 });
    await ufs.write('s3://bucket/f/img-000001.bin', new Uint8Array(100));
    await expect(verifyDataset(ufs, s)).rejects.toMatchObject({
      code: 'GRANARY_ERR_CORRUPT',
      message: expect.stringContaining('img-000001.bin') as unknown,
    });
  });

  it('detects an extra or missing file in the listing', async () => {
    const ufs = new MemoryUfs();
    const s = await generateFileDataset(ufs, 's3://bucket/f/', { count: 3, bytes: 10 });
    await ufs.write('s3://bucket/f/stray.bin', new Uint8Array(1));
    await expect(verifyDataset(ufs, s)).rejects.toMatchObject({ code: 'GRANARY_ERR_CORRUPT', message: expect.stringContaining('stray.bin') as unknown });
    await ufs.delete('s3://bucket/f/stray.bin');
    await ufs.delete('s3://bucket/f/img-000002.bin');
    await expect(verifyDataset(ufs, s)).rejects.toMatchObject({ code: 'GRANARY_ERR_CORRUPT', message: expect.stringContaining('lacks') as unknown });
  });
});

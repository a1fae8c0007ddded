import { Compression, ParquetFile } from 'parquet-wasm';
import { describe, expect, it } from 'vitest';
import { generateParquetDataset } from '../../src/gen/parquet.js';
import { LABELS } from '../../src/gen/table.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { decodeParquet, ids, readAll } from './helpers.js';

async function metadataOf(bytes: Uint8Array) {
  const file = await ParquetFile.fromFile(new Blob([bytes]));
  try {
    const md = file.metadata();
    return {
      rowGroups: md.numRowGroups(),
      rowGroupRows: md.rowGroups().map((rg) => rg.numRows()),
      codecs: md.rowGroups().flatMap((rg) => rg.columns().map((c) => c.compression())),
    };
  } finally {
    file.free();
  }
}

describe('generateParquetDataset', () => {
  it('writes dense, unique ids across files in file order, with the four columns', async () => {
    const ufs = new MemoryUfs();
    const summary = await generateParquetDataset(ufs, 's3://bucket/ds', { rows: 1000, files: 3, rowGroupRows: 128, embeddingBytes: 16 });
    expect(summary.prefixUrl).toBe('s3://bucket/ds/');
    expect(summary.files.map((f) => f.url)).toEqual([0, 1, 2].map((i) => `s3://bucket/ds/part-0000${i}.parquet`));
    expect(summary.files.map((f) => f.rows)).toEqual([334, 333, 333]);
    expect(summary.files.map((f) => f.firstId)).toEqual([0, 334, 667]);
    expect(summary.rows).toBe(1000);
    expect(summary.bytes).toBe(summary.files.reduce((n, f) => n + f.size, 0));

    const all: number[] = [];
    for (const f of summary.files) {
      const table = decodeParquet(await readAll(ufs, f.url));
      expect(table.numRows).toBe(f.rows);
      expect(table.schema.fields.map((x) => `${x.name}:${String(x.type)}`)).toEqual([
        'id:Int64',
        'label:Utf8',
        'score:Float32',
        'embedding:FixedSizeBinary[16]',
      ]);
      const fileIds = ids(table);
      expect(fileIds[0]).toBe(f.firstId);
      all.push(...fileIds);
      for (const label of table.getChild('label')?.toArray() as string[]) expect(LABELS).toContain(label);
      for (const score of table.getChild('score')?.toArray() as Float32Array) {
        expect(score).toBeGreaterThanOrEqual(0);
        expect(score).toBeLessThan(1);
      }
      expect((table.getChild('embedding')?.get(0) as Uint8Array).byteLength).toBe(16);
    }
    expect(all).toEqual(Array.from({ length: 1000 }, (_, i) => i));
  });

  it('splits each file into row groups of rowGroupRows rows', async () => {
    const ufs = new MemoryUfs();
    const summary = await generateParquetDataset(ufs, 's3://bucket/rg/', { rows: 1000, files: 2, rowGroupRows: 200 });
    for (const f of summary.files) {
      const md = await metadataOf(await readAll(ufs, f.url));
      expect(md.rowGroups).toBe(3);
      expect(md.rowGroupRows).toEqual([200, 200, 100]);
      expect(f.groups).toBe(3);
    }
  });

  it.each([
    ['snappy', Compression.SNAPPY],
    ['zstd', Compression.ZSTD],
    ['none', Compression.UNCOMPRESSED],
  ] as const)('compresses every column chunk with codec %s', async (codec, expected) => {
    const ufs = new MemoryUfs();
    const summary = await generateParquetDataset(ufs, 's3://bucket/c/', { rows: 500, codec, rowGroupRows: 100 });
    const file = summary.files[0];
    if (!file) throw new Error('no file');
    const bytes = await readAll(ufs, file.url);
    const md = await metadataOf(bytes);
    expect(new Set(md.codecs)).toEqual(new Set([expected]));
    expect(ids(decodeParquet(bytes))).toEqual(Array.from({ length: 500 }, (_, i) => i));
  });

  it('is deterministic: the same options give byte-identical files, another seed different ones', async () => {
    const options = { rows: 700, files: 2, rowGroupRows: 64, codec: 'zstd', seed: 7 } as const;
    const a = await generateParquetDataset(new MemoryUfs(), 's3://bucket/a/', options);
    const b = await generateParquetDataset(new MemoryUfs(), 's3://bucket/a/', options);
    const c = await generateParquetDataset(new MemoryUfs(), 's3://bucket/a/', { ...options, seed: 8 });
    expect(b.files.map((f) => f.sha256)).toEqual(a.files.map((f) => f.sha256));
    expect(c.files[0]?.sha256).not.toBe(a.files[0]?.sha256);
  });

  it('records the SHA-256 of exactly the bytes the store holds', async () => {
    const ufs = new MemoryUfs();
    const summary = await generateParquetDataset(ufs, 's3://bucket/h/', { rows: 100 });
    const { createHash } = await import('node:crypto');
    for (const f of summary.files) {
      expect(createHash('sha256').update(await readAll(ufs, f.url)).digest('hex')).toBe(f.sha256);
    }
  });

  it('writes one file at a time and reports each', async () => {
    const ufs = new MemoryUfs();
    const seen: string[] = [];
    await generateParquetDataset(ufs, 's3://bucket/p/', {
      rows: 40,
      files: 4,
      onFile: (f, i, total) => {
        seen.push(`${i}/${total}:${f.url}`);
        expect(ufs.requestCounts().put).toBe(i + 1);
      },
    });
    expect(seen).toEqual([0, 1, 2, 3].map((i) => `${i}/4:s3://bucket/p/part-0000${i}.parquet`));
  });

  it.each([
    [{ rows: 0 }, /`rows`.*got `0`/],
    [{ rows: 1.5 }, /`rows`.*got `1.5`/],
    [{ rows: 10, files: 11 }, /`files` \(11\).*`rows` \(10\)/],
    [{ rows: 10, rowGroupRows: -1 }, /`rowGroupRows`/],
    [{ rows: 10, embeddingBytes: 0 }, /`embeddingBytes`/],
    [{ rows: 10, seed: 2 ** 32 }, /`seed`/],
    [{ rows: 10, codec: 'lz4' as 'none' }, /`codec`.*snappy, zstd, none.*got `lz4`/],
  ])('rejects invalid options %j with a coded error naming the option', async (options, message) => {
    const ufs = new MemoryUfs();
    await expect(generateParquetDataset(ufs, 's3://bucket/x/', options)).rejects.toMatchObject({
      code: 'GRANARY_ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(message) as unknown,
    });
    expect(ufs.requestCounts().put).toBe(0);
  });

  it('rejects a prefix with an unsupported scheme', async () => {
    await expect(generateParquetDataset(new MemoryUfs(), 'ftp://host/x/', { rows: 10 })).rejects.toMatchObject({
      code: 'GRANARY_ERR_UNSUPPORTED_SCHEME',
    });
  });

  it('stops between files when aborted', async () => {
    const ufs = new MemoryUfs();
    const ac = new AbortController();
    const run = generateParquetDataset(ufs, 's3://bucket/ab/', { rows: 30, files: 3, signal: ac.signal, onFile: () => ac.abort(new Error('stop')) });
    await expect(run).rejects.toThrow('stop');
    expect(ufs.requestCounts().put).toBe(1);
  });
});

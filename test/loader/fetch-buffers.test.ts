import { tableFromIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { DecodePool } from '../../src/loader/decode-pool.js';
import { FetchBuffers } from '../../src/loader/fetch-buffers.js';
import { describeParquet, readParquetFooter, rowGroupFooter } from '../../src/loader/parquet-footer.js';
import { ParquetSource } from '../../src/loader/sources.js';
import { parquetDataset } from './helpers.js';

type Resizable = ArrayBuffer & { resizable: boolean; maxByteLength: number };

describe('FetchBuffers', () => {
  it('hands out whole buffers of the exact length and reuses the closest one handed back', () => {
    const pool = new FetchBuffers(1 << 30, 100);
    expect(pool.take(99)).toBeUndefined();
    const a = pool.take(1000) as Uint8Array;
    const b = pool.take(5000) as Uint8Array;
    for (const [x, n] of [[a, 1000], [b, 5000]] as const) {
      expect(x.byteLength).toBe(n);
      expect(x.byteOffset).toBe(0);
      expect(x.buffer.byteLength).toBe(n);
      expect((x.buffer as Resizable).resizable).toBe(true);
    }
    a.fill(7);
    pool.give([a.buffer, b.buffer]);
    expect(pool.stats()).toMatchObject({ free: 2, freeBytes: 6000, reused: 0 });
    // 1100 is closer to 1000 than to 5000, and fits the first buffer's room to grow.
    const c = pool.take(1100) as Uint8Array;
    expect(c.buffer).toBe(a.buffer);
    expect(c.byteLength).toBe(1100);
    expect(c.buffer.byteLength).toBe(1100);
    // 4000 takes the other one, shrunk.
    const d = pool.take(4000) as Uint8Array;
    expect(d.buffer).toBe(b.buffer);
    expect(d.buffer.byteLength).toBe(4000);
    expect(pool.stats()).toMatchObject({ taken: 4, reused: 2, free: 0, freeBytes: 0 });
  });

  it('keeps no more than its cap, and ignores buffers it cannot reuse', () => {
    const pool = new FetchBuffers(2500, 100);
    const xs = [pool.take(1000), pool.take(1000), pool.take(1000)].map((x) => (x as Uint8Array).buffer);
    pool.give(xs);
    // The cap is 2500 bytes, or three of the longest buffer taken (3000): the larger.
    expect(pool.stats()).toMatchObject({ free: 3, freeBytes: 3000 });
    pool.give(xs); // already kept
    expect(pool.stats().free).toBe(3);
    const extra = pool.take(1000) as Uint8Array;
    pool.give([new ArrayBuffer(1000), new SharedArrayBuffer(1000)]); // not resizable
    expect(pool.stats().free).toBe(2);
    structuredClone(extra.buffer, { transfer: [extra.buffer as ArrayBuffer] }); // detached: reads as 0 bytes
    pool.give([extra.buffer]);
    expect(pool.stats().free).toBe(2);
    pool.give([(pool.take(1000) as Uint8Array).buffer, new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer)(1000, { maxByteLength: 2000 })]);
    expect(pool.stats()).toMatchObject({ free: 3, freeBytes: 3000 });
    pool.clear();
    expect(pool.stats()).toMatchObject({ free: 0, freeBytes: 0 });
  });

  it('round-trips through a decode thread: the pieces come back with the decoded row group, and decode the same', async () => {
    const fs = await parquetDataset([3000], 1000);
    const info = await fs.stat('s3://bucket/ds/part-000.parquet');
    const { meta, metaLength } = await readParquetFooter(fs, info);
    const file = describeParquet(info, meta, metaLength, undefined);
    const pool = new DecodePool({ threads: 1 });
    const buffers = new FetchBuffers(1 << 30, 1);
    try {
      for (let round = 0; round < 2; round++) {
        for (let rg = 0; rg < 3; rg++) {
          const g = file.rowGroups[rg] as (typeof file.rowGroups)[number];
          const pieces = await Promise.all(
            g.ranges.map(async (r) => {
              const into = buffers.take(r.length) as Uint8Array;
              return { offset: r.offset, bytes: await fs.read(file.url, r.offset, r.length, { into }) };
            }),
          );
          const sent = pieces.map((p) => p.bytes.buffer as ArrayBuffer);
          let back: ArrayBuffer[] = [];
          const ipc = await pool.decode({ kind: 'parquet', url: file.url, size: file.size, footer: rowGroupFooter(file, rg), pieces, numRows: g.numRows }, sent, undefined, 0, (inputs) => {
            back = inputs;
          });
          const t = tableFromIPC(ipc);
          expect(t.numRows).toBe(1000);
          expect(t.getChild('id')?.get(0)).toBe(rg * 1000);
          expect(t.getChild('id')?.get(999)).toBe(rg * 1000 + 999);
          // Every piece's buffer came back, whole, and is ours to read into again.
          expect(back.map((b) => b.byteLength).sort()).toEqual(g.ranges.map((r) => r.length).sort());
          expect(back.every((b) => (b as Resizable).resizable)).toBe(true);
          buffers.give(back);
        }
      }
      // The second round read into the first round's memory.
      expect(buffers.stats().reused).toBeGreaterThan(0);
    } finally {
      await pool.close();
    }
  });

  it('is what a Parquet source reads its large column chunks into', async () => {
    const fs = await parquetDataset([3000], 1000);
    const info = await fs.stat('s3://bucket/ds/part-000.parquet');
    const { meta, metaLength } = await readParquetFooter(fs, info);
    const file = describeParquet(info, meta, metaLength, undefined);
    const pool = new DecodePool({ threads: 1 });
    // This dataset's chunks are small: pool them all for the test.
    const src = new ParquetSource(fs, [file], undefined, () => pool, false, new FetchBuffers(1 << 30, 1));
    try {
      const ac = new AbortController();
      for (let round = 0; round < 2; round++) {
        for (let p = 0; p < 3; p++) {
          const fetched = await src.fetch(p, ac.signal);
          const batches = await src.decode(p, fetched, ac.signal);
          expect(batches.reduce((n, b) => n + b.numRows, 0)).toBe(1000);
          expect(batches[0]?.getChild('id')?.get(0)).toBe(p * 1000);
        }
      }
      // Each decode handed its chunks' memory back before the next read: all but the first partition's reads reused it.
      const st = src.buffers.stats();
      const perPartition = st.taken / 6;
      expect(Number.isInteger(perPartition) && perPartition > 0).toBe(true);
      expect(st.reused).toBe(st.taken - perPartition);
    } finally {
      await pool.close();
    }
  });
});

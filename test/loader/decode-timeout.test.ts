import { describe, expect, it } from 'vitest';
import { DecodePool, Dataset } from '../../src/loader/index.js';
import { collect, parquetDataset } from './helpers.js';

describe('decode pool timeout', () => {
  it('fails a decode that takes too long with GRANARY_ERR_TIMEOUT naming the file, and keeps working after', async () => {
    const fs = await parquetDataset([500], 100);
    const pool = new DecodePool({ threads: 1, timeoutMs: 1 });
    try {
      // 1 ms is less than a thread takes to start: every decode times out.
      const ds = await Dataset.parquet('s3://bucket/ds/', { fs, pool }).catch((e: unknown) => e);
      const err = ds instanceof Dataset ? await collect(ds.batches({ batchSize: 50 })).catch((e: unknown) => e) : ds;
      expect(err).toMatchObject({ code: 'GRANARY_ERR_TIMEOUT' });
      expect((err as Error).message).toContain('s3://bucket/ds/part-000.parquet');
    } finally {
      await pool.close();
    }
    const ok = await Dataset.parquet('s3://bucket/ds/', { fs, decodeThreads: 1 });
    try {
      const rows = (await collect(ok.batches({ batchSize: 50 }))).reduce((a, b) => a + b.numRows, 0);
      expect(rows).toBe(500);
    } finally {
      await ok.close();
    }
  });

  it('rejects a timeout that is not a positive integer', () => {
    expect(() => new DecodePool({ timeoutMs: 0 })).toThrow(/timeoutMs/);
  });
});

describe('decode pool order', () => {
  it('decodes row groups in the order they were asked for, even when several wait for one thread', async () => {
    const fs = await parquetDataset([400, 400], 50);
    const pool = new DecodePool({ threads: 1 });
    const asked: number[] = [];
    const finished: number[] = [];
    const decode = pool.decode.bind(pool);
    pool.decode = async (...args) => {
      const id = asked.push(asked.length) - 1;
      const out = await decode(...args);
      finished.push(id);
      return out;
    };
    try {
      const ds = await Dataset.parquet('s3://bucket/ds/', { fs, pool });
      asked.length = 0;
      finished.length = 0;
      const rows = (await collect(ds.batches({ batchSize: 50, prefetch: 8, signal: new AbortController().signal }))).reduce((a, b) => a + b.numRows, 0);
      expect(rows).toBe(800);
      expect(asked.length).toBe(16);
      expect(finished).toEqual(asked);
      await ds.close();
    } finally {
      await pool.close();
    }
  });
});

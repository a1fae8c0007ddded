import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';
import { Dataset } from '../../src/loader/index.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { collect, ids, parquetBytes, parquetDataset } from './helpers.js';

const opened: Dataset[] = [];
async function open(fs: MemoryUfs, columns?: string[]): Promise<Dataset> {
  const ds = await Dataset.parquet('s3://bucket/ds/', { fs, decodeThreads: 1, ...(columns ? { columns } : {}) });
  opened.push(ds);
  return ds;
}
/** The error a promise rejects with (fails the test if it resolves). */
async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected a rejection');
}

afterAll(async () => {
  for (const ds of opened) await ds.close();
});

describe('Dataset.parquet', () => {
  it('plans row groups as partitions and yields every row once in file order', async () => {
    const fs = await parquetDataset([250, 100, 333], [100, 30, 64]);
    const ds = await open(fs);
    expect(ds.numRows).toBe(683);
    expect(ds.partitions.map((p) => p.rows)).toEqual([100, 100, 50, 30, 30, 30, 10, 64, 64, 64, 64, 64, 13]);
    expect(ds.schema.fields.map((f) => f.name)).toEqual(['id', 'x', 's']);
    const batches = await collect(ds.batches({ batchSize: 64 }));
    const all = batches.flatMap(ids);
    expect(all).toEqual(Array.from({ length: 683 }, (_, i) => i));
    const b = batches[3];
    expect(b?.getChild('s')?.get(0)).toBe(`s${64 * 3}`);
    expect(b?.getChild('x')?.get(1)).toBe((64 * 3 + 1) / 2);
  });

  for (const worldSize of [1, 3, 8]) {
    for (const shuffle of [false, 'buffer', 'global'] as const) {
      it(`yields every row exactly once per epoch across ${worldSize} ranks (shuffle ${String(shuffle)}), same batch count per rank`, async () => {
        const fs = await parquetDataset([250, 101, 333], [100, 30, 64]);
        const ds = await open(fs);
        const seen: number[] = [];
        const counts: number[] = [];
        for (let rank = 0; rank < worldSize; rank++) {
          const batches = await collect(ds.batches({ batchSize: 16, epoch: 1, seed: 7, shuffle, rank, worldSize, prefetch: 2 }));
          counts.push(batches.length);
          for (const b of batches) seen.push(...ids(b));
        }
        expect(new Set(counts).size).toBe(1);
        expect(seen.length).toBe(684);
        expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: 684 }, (_, i) => i));
      });
    }
  }

  it('gives the same output across runs and a different order in another epoch', async () => {
    const fs = await parquetDataset([200, 150], [40, 50]);
    const ds = await open(fs);
    const run = async (epoch: number) =>
      (await collect(ds.batches({ batchSize: 32, epoch, seed: 3, shuffle: true, rank: 1, worldSize: 2 }))).map(ids);
    const a = await run(0);
    expect(await run(0)).toEqual(a);
    expect(await run(1)).not.toEqual(a);
  });

  it('resumes at arbitrary points with exactly the remaining batches, without re-reading finished partitions', async () => {
    const fs = await parquetDataset([300, 157], [50, 40]);
    const ds = await open(fs);
    const opts = { batchSize: 24, epoch: 2, seed: 11, shuffle: 'buffer' as const, rank: 1, worldSize: 2 };
    const full = (await collect(ds.batches(opts))).map(ids);
    for (const stopAt of [0, 1, 5, full.length - 1, full.length]) {
      const first = ds.batches(opts);
      const got: number[][] = [];
      if (stopAt > 0) {
        // A batch counts as consumed once the stream has handed it out.
        for await (const b of first) {
          got.push(ids(b));
          if (got.length === stopAt) break;
        }
      }
      const state = JSON.parse(JSON.stringify(first.state())) as ReturnType<typeof first.state>;
      expect(state.batchesDone).toBe(Math.min(stopAt, full.length));
      const resumed = ds.batches({ ...opts, resume: state });
      const rest = (await collect(resumed)).map(ids);
      expect([...got, ...rest]).toEqual(full);
    }
    // Resuming in 'none' mode after half the batches reads only the partitions still needed.
    const seq = { batchSize: 50, rank: 0, worldSize: 1 };
    const s1 = ds.batches(seq);
    let n = 0;
    for await (const _ of s1) if (++n === 5) break;
    const before = fs.requestCounts().get;
    const rest = ds.batches({ ...seq, resume: s1.state() });
    await collect(rest);
    const reads = fs.requestCounts().get - before;
    expect(rest.stats().partitionsFetched).toBeLessThan(ds.partitions.length);
    expect(reads).toBeLessThanOrEqual(rest.stats().partitionsFetched * 3);
  });

  it('projects columns in the order asked and fetches only their chunks', async () => {
    const fs = await parquetDataset([120], [60]);
    const ds = await open(fs, ['s', 'id']);
    expect(ds.schema.fields.map((f) => f.name)).toEqual(['s', 'id']);
    const [b] = await collect(ds.batches({ batchSize: 120 }));
    expect(b?.schema.fields.map((f) => f.name)).toEqual(['s', 'id']);
    expect(b?.getChild('s')?.get(119)).toBe('s119');
    const full = await open(fs);
    expect(ds.partitions[0]?.bytes).toBeLessThan(full.partitions[0]?.bytes ?? 0);
  });

  it('rejects an unknown column with a coded error listing the available ones', async () => {
    const fs = await parquetDataset([10], [10]);
    const err = await failure(Dataset.parquet('s3://bucket/ds/', { fs, columns: ['nope'] }));
    expect(err.code).toBe('GRANARY_ERR_UNKNOWN_COLUMN');
    expect(err.message).toMatch(/nope.*id, x, s/);
  });

  it('rejects files whose schemas disagree, naming the file', async () => {
    const fs = await parquetDataset([10], [10]);
    const t = tableFromArrays({ id: Float64Array.from([1, 2]), x: Float64Array.from([1, 2]), s: ['a', 'b'] });
    const { tableParquet } = await import('./helpers.js');
    await fs.write('s3://bucket/ds/part-999.parquet', tableParquet(t, 10));
    const err = await failure(Dataset.parquet('s3://bucket/ds/', { fs }));
    expect(err.code).toBe('GRANARY_ERR_SCHEMA_MISMATCH');
    expect(err.message).toContain('part-999.parquet');
  });

  it('gives a coded error naming the file for a truncated or corrupt file', async () => {
    const fs = new MemoryUfs();
    const good = parquetBytes(0, 100, 50);
    await fs.write('s3://bucket/t/a.parquet', good.subarray(0, good.byteLength - 20));
    const trunc = await failure(Dataset.parquet('s3://bucket/t/', { fs }));
    expect(trunc.code).toBe('GRANARY_ERR_CORRUPT');
    expect(trunc.message).toContain('s3://bucket/t/a.parquet');
    const bad = good.slice();
    // Damage the first column chunk's pages, leaving the footer intact.
    for (let i = 4; i < 200; i++) bad[i] = 0xee;
    await fs.write('s3://bucket/c/b.parquet', bad);
    const ds = await Dataset.parquet('s3://bucket/c/', { fs, decodeThreads: 1 });
    opened.push(ds);
    const err = await failure(collect(ds.batches({ batchSize: 10 })));
    expect(err.code).toMatch(/GRANARY_ERR_(DECODE|CORRUPT)/);
    expect(err.message).toContain('b.parquet');
    // The pool still works afterwards.
    await fs.write('s3://bucket/g/ok.parquet', good);
    const ok = await Dataset.parquet('s3://bucket/g/', { fs, decodeThreads: 1 });
    opened.push(ok);
    expect((await collect(ok.batches({ batchSize: 100 }))).flatMap(ids).length).toBe(100);
  });

  it('handles an empty dataset', async () => {
    const ds = await open(new MemoryUfs());
    expect(ds.numRows).toBe(0);
    expect(ds.partitions).toEqual([]);
    expect(await collect(ds.batches({ batchSize: 8 }))).toEqual([]);
  });

  it('keeps prefetch within its byte budget and reports stats', async () => {
    const fs = await parquetDataset([400], [20]);
    const ds = await open(fs);
    const per = ds.partitions[0]?.bytes ?? 0;
    const stream = ds.batches({ batchSize: 20, prefetch: 100, prefetchBytes: per * 3 });
    await collect(stream);
    const st = stream.stats();
    expect(st.peakResidentBytes).toBeLessThanOrEqual(per * 3 + per);
    expect(st.rows).toBe(400);
    expect(st.bytesFetched).toBeGreaterThan(0);
    expect(st.partitionsFetched).toBe(20);
  });

  it('stops fetching when the consumer breaks out or the signal aborts, and closes cleanly', async () => {
    const fs = await parquetDataset([1000], [10]);
    const ds = await Dataset.parquet('s3://bucket/ds/', { fs, decodeThreads: 1 });
    const s1 = ds.batches({ batchSize: 10, prefetch: 2 });
    let n = 0;
    for await (const _ of s1) if (++n === 3) break;
    expect(s1.stats().partitionsFetched).toBeLessThan(10);
    const ac = new AbortController();
    const s2 = ds.batches({ batchSize: 10, prefetch: 2, signal: ac.signal });
    const err = await failure(
      (async () => {
        let k = 0;
        for await (const _ of s2) if (++k === 2) ac.abort(new Error('stop'));
      })(),
    );
    expect(err.message).toBe('stop');
    await ds.close();
    await ds.close();
    expect(() => ds.batches({ batchSize: 1 })).toThrow(/closed/);
    // close() resolves once every thread it owns has stopped: nothing is left to settle.
    const left = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap' && r !== 'PipeWrap' && r !== 'ProcessWrap');
    expect(left.filter((r) => r === 'MessagePort' || r === 'Worker')).toEqual([]);
  });
});

describe('Dataset.arrow', () => {
  it('reads Arrow IPC files with record batches as partitions', async () => {
    const fs = new MemoryUfs();
    const { Table } = await import('apache-arrow');
    for (let f = 0; f < 2; f++) {
      const parts = [0, 1, 2].map((k) => tableFromArrays({ id: Int32Array.from({ length: 10 + k }, (_, i) => f * 100 + k * 20 + i), v: Float32Array.from({ length: 10 + k }, () => 1) }));
      const t = new Table(parts.flatMap((p) => p.batches));
      await fs.write(`s3://bucket/arrow/f${f}.arrow`, tableToIPC(t, 'file'));
    }
    const ds = await Dataset.arrow('s3://bucket/arrow/', { fs, columns: ['id'] });
    opened.push(ds);
    expect(ds.partitions.map((p) => p.rows)).toEqual([10, 11, 12, 10, 11, 12]);
    const batches = await collect(ds.batches({ batchSize: 7, shuffle: 'global', seed: 1 }));
    const got = batches.flatMap(ids).sort((a, b) => a - b);
    const want = [0, 1].flatMap((f) => [0, 1, 2].flatMap((k) => Array.from({ length: 10 + k }, (_, i) => f * 100 + k * 20 + i))).sort((a, b) => a - b);
    expect(got).toEqual(want);
    expect(batches[0]?.schema.fields.map((x) => x.name)).toEqual(['id']);
  });
});

describe('Dataset.files', () => {
  it('yields each small object once as { key, bytes }', async () => {
    const fs = new MemoryUfs();
    for (let i = 0; i < 23; i++) await fs.write(`s3://bucket/img/${String(i).padStart(2, '0')}.bin`, new Uint8Array([i, i, i]));
    const ds = await Dataset.files('s3://bucket/img/', { fs, filesPerPartition: 5 });
    opened.push(ds);
    expect(ds.numRows).toBe(23);
    expect(ds.partitions.length).toBe(5);
    const seen = new Map<string, number[]>();
    for (const rank of [0, 1]) {
      for await (const b of ds.batches({ batchSize: 4, shuffle: true, seed: 5, rank, worldSize: 2 })) {
        for (let i = 0; i < b.numRows; i++) {
          seen.set(b.getChild('key')?.get(i) as string, Array.from(b.getChild('bytes')?.get(i) as Uint8Array));
        }
      }
    }
    expect(seen.size).toBe(23);
    expect(seen.get('07.bin')).toEqual([7, 7, 7]);
  });
});

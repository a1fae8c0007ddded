import { afterAll, describe, expect, it } from 'vitest';
import { Dataset } from '../../src/loader/index.js';
import type { LoaderState } from '../../src/loader/index.js';
import { ids, parquetDataset } from './helpers.js';

const opened: Dataset[] = [];
afterAll(async () => {
  for (const ds of opened) await ds.close();
});

describe('elastic resume through the loader', () => {
  for (const mode of ['buffer', 'global', 'none'] as const) {
    it(`resumes a ${mode} epoch saved by 2 ranks on 3 ranks, yielding each remaining row exactly once`, async () => {
      const fs = await parquetDataset([400, 233, 181], [64, 50, 37]);
      const ds = await Dataset.parquet('s3://bucket/ds/', { fs, decodeThreads: 1 });
      opened.push(ds);
      const base = { batchSize: 20, epoch: 1, seed: 99, shuffle: mode };
      // Two ranks train in lockstep for 7 batches each, then checkpoint.
      const consumed: number[] = [];
      const states: LoaderState[] = [];
      for (const rank of [0, 1]) {
        const s = ds.batches({ ...base, rank, worldSize: 2 });
        let n = 0;
        for await (const b of s) {
          consumed.push(...ids(b));
          if (++n === 7) break;
        }
        states.push(JSON.parse(JSON.stringify(s.state())) as LoaderState);
      }
      expect(states[0]!.batchesDone).toBe(7);
      // The job restarts with three ranks from rank 0's checkpoint.
      const rest: number[] = [];
      const counts: number[] = [];
      for (const rank of [0, 1, 2]) {
        let batches = 0;
        for await (const b of ds.batches({ ...base, rank, worldSize: 3, resume: states[0]! })) {
          rest.push(...ids(b));
          batches++;
        }
        counts.push(batches);
      }
      // Every rank yields the same number of batches; together with what was consumed,
      // every row of the epoch exactly once.
      expect(new Set(counts).size).toBe(1);
      const all = [...consumed, ...rest].sort((a, b) => a - b);
      expect(all).toEqual(Array.from({ length: 814 }, (_, i) => i));
    });
  }
});

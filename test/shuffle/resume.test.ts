import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { InvalidArgumentError } from '../../src/errors.js';
import { epochOrder, parseResumeState, planEpoch, resumeInput, resumeState } from '../../src/shuffle/index.js';
import type { EpochPlanInput } from '../../src/shuffle/index.js';
import { baseArb, idsOf, plansFor, rowOffsets, totalRows, worldSizeArb } from './helpers.js';
import type { BaseInput } from './helpers.js';

/** Rows consumed by every rank of a run after `k` batches. */
function consumed(base: BaseInput, worldSize: number, k: number, extra: Partial<EpochPlanInput> = {}): number[] {
  const offsets = rowOffsets(base.partitionRows);
  return plansFor(base, worldSize, extra).flatMap((p) => idsOf(p, offsets, 0, k));
}

describe('resume', () => {
  it('with the same world size continues exactly where the uninterrupted plan was', () => {
    fc.assert(
      fc.property(baseArb, worldSizeArb, fc.double({ min: 0, max: 1, noNaN: true }), (base, worldSize, f) => {
        const offsets = rowOffsets(base.partitionRows);
        const full = plansFor(base, worldSize);
        const k = Math.floor(f * full[0]!.numBatches);
        for (const plan of full) {
          const input = { ...base, rank: plan.rank, worldSize };
          const state = JSON.parse(JSON.stringify(resumeState(input, k))) as unknown;
          const resumed = planEpoch(resumeInput(parseResumeState(state), { partitionRows: base.partitionRows, rank: plan.rank, worldSize }));
          expect(resumed.numBatches).toBe(plan.numBatches - k);
          expect(idsOf(resumed, offsets)).toEqual(idsOf(plan, offsets, k));
          for (let i = 0; i < resumed.numBatches; i++) expect(resumed.batch(i).rows.length).toBe(plan.batch(k + i).rows.length);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('elastic W -> W\' yields each remaining row exactly once, in global order, with equal batch counts', () => {
    fc.assert(
      fc.property(
        baseArb, worldSizeArb, worldSizeArb, fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 1, max: 33 }),
        (b, w1, w2, f, newBatch) => {
          const base = { ...b, dropLast: false };
          const offsets = rowOffsets(base.partitionRows);
          const nb = plansFor(base, w1)[0]!.numBatches;
          const k = Math.floor(f * nb);
          const done = consumed(base, w1, k);
          const resumed = plansFor({ ...base, batchSize: newBatch, resume: { worldSize: w1, batchesDone: k, batchSize: base.batchSize } }, w2);
          const rest = resumed.flatMap((p) => idsOf(p, offsets));
          const doneSet = new Set(done);
          const order = epochOrder(base);
          const global = Array.from(order.partitions, (p, i) => offsets[p]! + order.rows[i]!);
          expect(rest).toEqual(global.filter((id) => !doneSet.has(id)));
          expect(done.length + rest.length).toBe(totalRows(base.partitionRows));
          const remaining = totalRows(base.partitionRows) - done.length;
          for (const plan of resumed) {
            expect(plan.numBatches).toBe(Math.ceil(Math.ceil(remaining / w2) / newBatch));
            expect(plan.remainingRows).toBe(remaining);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a chain of elastic resumes (W1 -> W2 -> W3, dropLast either way) never yields a row twice', () => {
    fc.assert(
      fc.property(
        baseArb, fc.array(fc.tuple(worldSizeArb, fc.double({ min: 0, max: 1, noNaN: true })), { minLength: 1, maxLength: 3 }), worldSizeArb,
        (base, steps, last) => {
          const offsets = rowOffsets(base.partitionRows);
          const seen = new Set<number>();
          let input: EpochPlanInput = { ...base, rank: 0, worldSize: 1 };
          for (const [w, f] of steps) {
            input = { ...input, worldSize: w };
            const plans = plansFor(input, w, { resume: input.resume });
            const k = Math.floor(f * plans[0]!.numBatches);
            for (const plan of plans) for (const id of idsOf(plan, offsets, 0, k)) {
              expect(seen.has(id)).toBe(false);
              seen.add(id);
            }
            // Every rank saves the same state; rank 0's is the job's.
            input = resumeInput(resumeState({ ...input, rank: 0 }, k), { partitionRows: base.partitionRows, rank: 0, worldSize: last });
          }
          const finals = plansFor(input, last, { resume: input.resume });
          for (const plan of finals) {
            expect(plan.numBatches).toBe(finals[0]!.numBatches);
            for (const id of idsOf(plan, offsets)) {
              expect(seen.has(id)).toBe(false);
              seen.add(id);
            }
          }
          if (!base.dropLast) expect(seen.size).toBe(totalRows(base.partitionRows));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('rejects a state that resumes past the end of the epoch or a dataset that changed', () => {
    const base = { partitionRows: [10, 10], seed: 3, epoch: 1, rank: 0, worldSize: 2, batchSize: 4, mode: 'buffer' as const, dropLast: false };
    expect(() => planEpoch({ ...base, resume: { worldSize: 2, batchesDone: 4 } })).toThrow(/batchesDone.*only 3 batches/);
    const state = resumeState(base, 1);
    expect(() => resumeInput(state, { partitionRows: [10, 11], rank: 0, worldSize: 2 })).toThrow(/21 rows/);
    expect(() => parseResumeState({ ...state, batchesDone: -1 })).toThrow(InvalidArgumentError);
    expect(() => parseResumeState({ ...state, history: [{ worldSize: 0 }] })).toThrow(/history\[0\]\.worldSize/);
    expect(() => parseResumeState('x')).toThrow(/root/);
  });

  it('produces small JSON', () => {
    const base = { partitionRows: Array.from({ length: 1000 }, () => 1000), seed: 3, epoch: 7, rank: 0, worldSize: 8, batchSize: 256, mode: 'global' as const, dropLast: false };
    const json = JSON.stringify(resumeState(base, 12));
    expect(json.length).toBeLessThan(400);
    expect(JSON.parse(json)).toMatchObject({ v: 1, seed: 3, epoch: 7, worldSize: 8, batchesDone: 12, mode: 'global', bufferPartitions: 4 });
  });
});

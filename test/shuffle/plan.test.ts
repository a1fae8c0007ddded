import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { InvalidArgumentError } from '../../src/errors.js';
import { epochOrder, planEpoch, splitRows } from '../../src/shuffle/index.js';
import { baseArb, idsOf, plansFor, rowOffsets, totalRows, worldSizeArb } from './helpers.js';
import type { BaseInput } from './helpers.js';
import type { EpochPlan } from '../../src/shuffle/index.js';

describe('planEpoch', () => {
  it('yields every row exactly once across ranks, in contiguous spans of the global order', () => {
    fc.assert(
      fc.property(baseArb, worldSizeArb, (b, worldSize) => {
        const base = { ...b, dropLast: false };
        const offsets = rowOffsets(base.partitionRows);
        const n = totalRows(base.partitionRows);
        const plans = plansFor(base, worldSize);
        const all = plans.flatMap((p) => idsOf(p, offsets));
        const order = epochOrder(base);
        const global = Array.from(order.partitions, (p, i) => offsets[p]! + order.rows[i]!);
        expect(all).toEqual(global);
        expect(new Set(all).size).toBe(n);
        expect(all.length).toBe(n);
      }),
      { numRuns: 300 },
    );
  });

  it('gives every rank the same number of batches, full except the last, rows within one of each other', () => {
    fc.assert(
      fc.property(baseArb, worldSizeArb, (b, worldSize) => {
        const base = { ...b, dropLast: false };
        const n = totalRows(base.partitionRows);
        const plans = plansFor(base, worldSize);
        const expected = Math.ceil(Math.ceil(n / worldSize) / base.batchSize);
        const counts = plans.map((p) => p.numRows);
        expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
        for (const plan of plans) {
          expect(plan.numBatches).toBe(expected);
          for (let i = 0; i < plan.numBatches; i++) {
            const size = plan.batch(i).partitions.length;
            if (i < plan.numBatches - 1) expect(size).toBe(base.batchSize);
            else expect(size).toBe(plan.numRows - (plan.numBatches - 1) * base.batchSize);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('with dropLast yields only full batches, the same count on every rank, each row at most once', () => {
    fc.assert(
      fc.property(baseArb, worldSizeArb, (b, worldSize) => {
        const base = { ...b, dropLast: true };
        const offsets = rowOffsets(base.partitionRows);
        const n = totalRows(base.partitionRows);
        const plans = plansFor(base, worldSize);
        const perRank = Math.floor(n / (worldSize * base.batchSize)) * base.batchSize;
        const all: number[] = [];
        for (const plan of plans) {
          expect(plan.numRows).toBe(perRank);
          expect(plan.numBatches).toBe(perRank / base.batchSize);
          for (let i = 0; i < plan.numBatches; i++) expect(plan.batch(i).rows.length).toBe(base.batchSize);
          all.push(...idsOf(plan, offsets));
        }
        expect(new Set(all).size).toBe(all.length);
        expect(n - all.length).toBeLessThan(worldSize * base.batchSize);
      }),
      { numRuns: 300 },
    );
  });

  it('is deterministic and its global order does not depend on worldSize', () => {
    fc.assert(
      fc.property(baseArb, worldSizeArb, worldSizeArb, (b, w1, w2) => {
        const base = { ...b, dropLast: false };
        const offsets = rowOffsets(base.partitionRows);
        const a = plansFor(base, w1).flatMap((p) => idsOf(p, offsets));
        const again = plansFor(base, w1).flatMap((p) => idsOf(p, offsets));
        const other = plansFor(base, w2).flatMap((p) => idsOf(p, offsets));
        expect(again).toEqual(a);
        expect(other).toEqual(a);
      }),
      { numRuns: 150 },
    );
  });

  it('reports firstUse, lastUse and partitionOrder consistent with its batches', () => {
    fc.assert(
      fc.property(baseArb, worldSizeArb, fc.nat(9), worldSizeArb, fc.option(fc.double({ min: 0, max: 1, noNaN: true })), (base, worldSize, r, w1, f) => {
        const rank = r % worldSize;
        const plan = f === null ? planEpoch({ ...base, rank, worldSize }) : resumedPlans(base, w1, f, worldSize)[rank]!;
        const first = new Map<number, number>();
        const last = new Map<number, number>();
        const order: number[] = [];
        for (let i = 0; i < plan.numBatches; i++) {
          for (const p of plan.batch(i).partitions) {
            if (!first.has(p)) {
              first.set(p, i);
              order.push(p);
            }
            last.set(p, i);
          }
        }
        expect(plan.partitionOrder).toEqual(order);
        for (let p = 0; p < base.partitionRows.length; p++) {
          expect(plan.firstUse(p)).toBe(first.get(p) ?? -1);
          expect(plan.lastUse(p)).toBe(last.get(p) ?? -1);
        }
        expect(plan.firstUse(base.partitionRows.length + 5)).toBe(-1);
      }),
      { numRuns: 200 },
    );
  });

  it('in buffer mode shares only about bufferPartitions partitions between neighbouring ranks', () => {
    fc.assert(
      fc.property(baseArb, worldSizeArb, (b, worldSize) => {
        const base = { ...b, mode: 'buffer' as const };
        const k = base.bufferPartitions ?? 4;
        const nonEmpty = base.partitionRows.filter((r) => r > 0).length;
        const reads = plansFor(base, worldSize).reduce((s, p) => s + p.partitionOrder.length, 0);
        expect(reads).toBeLessThanOrEqual(nonEmpty + (worldSize - 1) * k);
        const none = plansFor({ ...base, mode: 'none' }, worldSize).reduce((s, p) => s + p.partitionOrder.length, 0);
        expect(none).toBeLessThanOrEqual(nonEmpty + worldSize - 1);
      }),
      { numRuns: 200 },
    );
  });

  it('in buffer mode holds at most bufferPartitions + 1 partitions when batches fit in a partition', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 60 }),
        fc.integer(),
        fc.integer({ min: 1, max: 4 }),
        (k, m, partitions, seed, worldSize) => {
          const rowsPer = k * m;
          const batchSize = 1 + (Math.abs(seed) % rowsPer);
          const base = {
            partitionRows: Array.from({ length: partitions }, () => rowsPer),
            seed, epoch: 0, batchSize, mode: 'buffer' as const, bufferPartitions: k, dropLast: false,
          };
          for (const plan of plansFor(base, worldSize)) expect(plan.peakResidentPartitions()).toBeLessThanOrEqual(k + 1);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('changes the order with the epoch and the seed', () => {
    const partitionRows = [50, 0, 30, 70, 20, 10, 40];
    const offsets = rowOffsets(partitionRows);
    for (const mode of ['buffer', 'global'] as const) {
      const seen = new Set<string>();
      for (let seed = 0; seed < 5; seed++)
        for (let epoch = 0; epoch < 5; epoch++) {
          const plan = planEpoch({ partitionRows, seed, epoch, rank: 0, worldSize: 1, batchSize: 7, mode, dropLast: false });
          seen.add(idsOf(plan, offsets).join(','));
        }
      expect(seen.size).toBe(25);
    }
    const none = (epoch: number): number[] =>
      idsOf(planEpoch({ partitionRows, seed: 1, epoch, rank: 0, worldSize: 1, batchSize: 7, mode: 'none', dropLast: false }), offsets);
    expect(none(3)).toEqual(Array.from({ length: totalRows(partitionRows) }, (_, i) => i));
  });

  it('gives a rank with one row fewer an empty last batch when its span is a whole number of batches', () => {
    // 5 rows, 4 ranks, batch 1: rank 0 gets 2 rows, the others 1 row and an empty second batch.
    const plans = plansFor({ partitionRows: [5], seed: 1, epoch: 0, batchSize: 1, mode: 'global', dropLast: false }, 4);
    expect(plans.map((p) => p.numBatches)).toEqual([2, 2, 2, 2]);
    expect(plans.map((p) => p.batch(1).rows.length)).toEqual([1, 0, 0, 0]);
    const empty = plansFor({ partitionRows: [], seed: 1, epoch: 0, batchSize: 4, mode: 'buffer', dropLast: false }, 3);
    expect(empty.map((p) => p.numBatches)).toEqual([0, 0, 0]);
  });

  it('splits rows as documented', () => {
    expect(splitRows(10, 3, 2, false)).toEqual({ numBatches: 2, rowsPerRank: [4, 3, 3], starts: [0, 4, 7] });
    expect(splitRows(10, 3, 2, true)).toEqual({ numBatches: 1, rowsPerRank: [2, 2, 2], starts: [0, 2, 4] });
  });

  it('rejects invalid input with InvalidArgumentError naming the option', () => {
    const ok = { partitionRows: [3, 4], seed: 1, epoch: 0, rank: 0, worldSize: 2, batchSize: 2, mode: 'global' as const, dropLast: false };
    expect(() => planEpoch({ ...ok, rank: 2 })).toThrow(InvalidArgumentError);
    expect(() => planEpoch({ ...ok, batchSize: 0 })).toThrow(/batchSize/);
    expect(() => planEpoch({ ...ok, partitionRows: [3, -1] })).toThrow(/partitionRows\[1\]/);
    expect(() => planEpoch({ ...ok, bufferPartitions: 0, mode: 'buffer' })).toThrow(/bufferPartitions/);
    expect(() => planEpoch({ ...ok, mode: 'random' as never })).toThrow(/mode/);
    expect(() => planEpoch(ok).batch(5)).toThrow(/batch index/);
  });
});

/** Plans of an epoch resumed with `worldSize` after a `w1`-rank run stopped a fraction `f` through it: its rows are several runs of the order. */
function resumedPlans(base: BaseInput, w1: number, f: number, worldSize: number): EpochPlan[] {
  const interrupted = { ...base, batchSize: base.batchSize + 1 };
  const k = Math.floor(f * planEpoch({ ...interrupted, rank: 0, worldSize: w1 }).numBatches);
  return plansFor(base, worldSize, { resume: { worldSize: w1, batchesDone: k, batchSize: interrupted.batchSize } });
}

describe('EpochPlan.run', () => {
  it('names exactly the batches that are one run of consecutive rows of one partition (also after an elastic resume)', () => {
    fc.assert(
      fc.property(baseArb, worldSizeArb, worldSizeArb, fc.double({ min: 0, max: 1, noNaN: true }), (base, worldSize, w1, f) => {
        for (const plan of [...plansFor(base, worldSize), ...resumedPlans(base, w1, f, worldSize)]) {
          for (let i = 0; i < plan.numBatches; i++) {
            const { partitions, rows } = plan.batch(i);
            const contiguous = partitions.length > 0 && partitions.every((p, j) => p === partitions[0] && rows[j] === (rows[0] as number) + j);
            const run = plan.run(i);
            if (!contiguous) expect(run).toBeUndefined();
            else expect(run).toEqual({ partition: partitions[0], row: rows[0], count: partitions.length });
          }
          const all = plan.allRows();
          expect(Array.from(all.partitions)).toEqual(Array.from({ length: plan.numBatches }, (_, i) => Array.from(plan.batch(i).partitions)).flat());
          expect(Array.from(all.rows)).toEqual(Array.from({ length: plan.numBatches }, (_, i) => Array.from(plan.batch(i).rows)).flat());
        }
      }),
      { numRuns: 150 },
    );
  });
});

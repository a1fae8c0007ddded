import fc from 'fast-check';
import { planEpoch } from '../../src/shuffle/index.js';
import type { EpochPlan, EpochPlanInput, ShuffleMode } from '../../src/shuffle/index.js';

export type BaseInput = Omit<EpochPlanInput, 'rank' | 'worldSize'>;

/** Global row ids: partition p's row r is offsets[p] + r. */
export function rowOffsets(partitionRows: readonly number[]): number[] {
  const offsets = [0];
  for (const r of partitionRows) offsets.push(offsets[offsets.length - 1]! + r);
  return offsets;
}

export function totalRows(partitionRows: readonly number[]): number {
  return partitionRows.reduce((a, b) => a + b, 0);
}

export function plansFor(base: BaseInput, worldSize: number, extra: Partial<EpochPlanInput> = {}): EpochPlan[] {
  return Array.from({ length: worldSize }, (_, rank) => planEpoch({ ...base, ...extra, rank, worldSize }));
}

/** Global ids of batches [from, to) of a plan, in order. */
export function idsOf(plan: EpochPlan, offsets: readonly number[], from = 0, to = plan.numBatches): number[] {
  const ids: number[] = [];
  for (let b = from; b < to; b++) {
    const { partitions, rows } = plan.batch(b);
    for (let j = 0; j < partitions.length; j++) ids.push(offsets[partitions[j]!]! + rows[j]!);
  }
  return ids;
}

export const modeArb: fc.Arbitrary<ShuffleMode> = fc.constantFrom('none', 'buffer', 'global');

/** Uneven partitions, including zero-row ones and empty datasets. */
export const partitionRowsArb = fc.oneof(
  fc.array(fc.nat(40), { maxLength: 25 }),
  fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 300 })), { minLength: 1, maxLength: 12 }),
);

export const baseArb: fc.Arbitrary<BaseInput> = fc.record({
  partitionRows: partitionRowsArb,
  seed: fc.integer(),
  epoch: fc.nat(50),
  batchSize: fc.integer({ min: 1, max: 33 }),
  mode: modeArb,
  bufferPartitions: fc.integer({ min: 1, max: 6 }),
  dropLast: fc.boolean(),
});

export const worldSizeArb = fc.oneof(fc.constantFrom(1, 3, 8), fc.integer({ min: 1, max: 10 }));

import { describe, expect, it } from 'vitest';
import { chiSquarePositions, chiSquareQuantile, epochOrder, permutation, randomFor, shuffleQuality } from '../../src/shuffle/index.js';
import { rowOffsets } from './helpers.js';

// Fixed seeds: these statistics are deterministic, so the thresholds cannot flake.
// The bar is the 1 - 1e-6 quantile: a correct shuffle clears it by a wide margin,
// a biased one (below) lands far above it.
const P = 1 - 1e-6;

function* globalModeOrders(partitionRows: number[], seeds: number, epoch: (s: number) => number, seed: (s: number) => number): Generator<Uint32Array> {
  const offsets = rowOffsets(partitionRows);
  for (let s = 0; s < seeds; s++) {
    const order = epochOrder({ partitionRows, seed: seed(s), epoch: epoch(s), mode: 'global' });
    yield Uint32Array.from(order.partitions, (p, i) => offsets[p]! + order.rows[i]!);
  }
}

describe('shuffle quality', () => {
  it('global mode puts every row at every position equally often over many seeds (chi-square)', () => {
    const partitionRows = [3, 0, 2, 1, 3];
    const result = chiSquarePositions(globalModeOrders(partitionRows, 20_000, () => 0, (s) => s), 9);
    expect(result.degreesOfFreedom).toBe(64);
    expect(result.statistic).toBeLessThan(chiSquareQuantile(64, P));
    expect(result.statistic).toBeGreaterThan(chiSquareQuantile(64, 1 - P));
  });

  it('global mode is uniform over epochs of one seed too (chi-square)', () => {
    const result = chiSquarePositions(globalModeOrders([4, 4], 20_000, (e) => e, () => 42), 8);
    expect(result.statistic).toBeLessThan(chiSquareQuantile(49, P));
  });

  it('permutation() is uniform for n = 12 (chi-square)', () => {
    const perms = (function* () {
      for (let s = 0; s < 20_000; s++) yield permutation(s, 3, 12);
    })();
    const result = chiSquarePositions(perms, 12);
    expect(result.statistic).toBeLessThan(chiSquareQuantile(121, P));
  });

  it('the chi-square test catches a classic biased shuffle (swap with any position)', () => {
    const naive = (function* () {
      for (let s = 0; s < 20_000; s++) {
        const rng = randomFor(s, 0);
        const p = Uint32Array.from({ length: 8 }, (_, i) => i);
        for (let i = 0; i < 8; i++) {
          const j = rng.nextInt(8);
          [p[i], p[j]] = [p[j]!, p[i]!];
        }
        yield p;
      }
    })();
    expect(chiSquarePositions(naive, 8).statistic).toBeGreaterThan(chiSquareQuantile(49, P));
  });

  it('reports displacement, epoch correlation and local mixing for each mode', () => {
    const partitionRows = Array.from({ length: 60 }, (_, p) => 200 + (p % 7) * 10);
    const q = (mode: 'none' | 'buffer' | 'global', bufferPartitions = 4) =>
      shuffleQuality({ partitionRows, seed: 7, epoch: 0, mode, bufferPartitions, epochs: 3 });
    const none = q('none');
    expect(none.meanDisplacement).toBe(0);
    expect(none.epochCorrelation).toBe(1);
    expect(none.samePartitionAdjacent).toBeGreaterThan(0.98);
    const global = q('global');
    expect(Math.abs(global.meanDisplacement - 1 / 3)).toBeLessThan(0.01);
    expect(Math.abs(global.epochCorrelation)).toBeLessThan(0.02);
    expect(global.samePartitionAdjacent).toBeLessThan(2 * global.uniformSamePartition);
    const buffer = q('buffer', 4);
    expect(buffer.meanDisplacement).toBeGreaterThan(0.2);
    expect(Math.abs(buffer.epochCorrelation)).toBeLessThan(0.4);
    // Adjacent rows come from one partition about 1/K of the time.
    expect(buffer.samePartitionAdjacent).toBeLessThan(0.35);
    expect(q('buffer', 8).samePartitionAdjacent).toBeLessThan(buffer.samePartitionAdjacent);
  });
});

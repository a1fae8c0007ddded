import { InvalidArgumentError } from '../errors.js';
import { checkInt, optionalInt } from '../util/validate.js';
import { epochOrder } from './order.js';
import type { EpochOrderInput } from './order.js';

/** Pearson's chi-square statistic of an item-by-position count table. */
export interface ChiSquareResult {
  statistic: number;
  degreesOfFreedom: number;
  /** Permutations counted. */
  samples: number;
}

/**
 * Chi-square test that every item is equally likely at every position: counts how
 * often item x sits at position i over `perms` (each a permutation of 0..n-1) and
 * compares with samples / n per cell, (n - 1)^2 degrees of freedom. It tests the
 * marginal positions only, not the joint distribution.
 */
export function chiSquarePositions(perms: Iterable<ArrayLike<number>>, n: number): ChiSquareResult {
  checkInt('n', n, 2);
  const counts = new Float64Array(n * n);
  let samples = 0;
  for (const perm of perms) {
    if (perm.length !== n) {
      throw new InvalidArgumentError(`shuffle: chi-square sample ${samples} has ${perm.length} items, expected ${n}`);
    }
    for (let pos = 0; pos < n; pos++) counts[perm[pos]! * n + pos]!++;
    samples++;
  }
  const expected = samples / n;
  let statistic = 0;
  for (const c of counts) statistic += ((c - expected) * (c - expected)) / expected;
  return { statistic, degreesOfFreedom: (n - 1) * (n - 1), samples };
}

/** Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new InvalidArgumentError(`shuffle: normal quantile needs 0 < p < 1, got ${p}`);
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (q: number): number =>
    (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) /
    ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) /
    (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1)
  );
}

/** The p-quantile of the chi-square distribution (Wilson–Hilferty; good to ~1% for dof >= 10). */
export function chiSquareQuantile(degreesOfFreedom: number, p: number): number {
  const k = degreesOfFreedom;
  const z = normalQuantile(p);
  const h = 2 / (9 * k);
  return k * Math.pow(1 - h + z * Math.sqrt(h), 3);
}

/** How well an order mode mixes a dataset, averaged over consecutive epochs. */
export interface ShuffleQuality {
  /**
   * Mean |position − dataset index| / rows. Dataset order gives 0; a uniform
   * permutation about 1/3.
   */
  meanDisplacement: number;
  /**
   * Pearson correlation between a row's positions in epoch e and e + 1 (positions are
   * ranks, so this is also Spearman's). Identical orders give 1; independent uniform
   * permutations about 0.
   */
  epochCorrelation: number;
  /**
   * Fraction of adjacent positions holding rows of the same partition: local mixing.
   * Dataset order gives ~1; a uniform permutation `uniformSamePartition`.
   */
  samePartitionAdjacent: number;
  /** What `samePartitionAdjacent` is for a uniform permutation of these partitions. */
  uniformSamePartition: number;
  rows: number;
  epochs: number;
}

/**
 * Measures an order mode on a dataset shape: the global orders of epochs
 * `epoch .. epoch + epochs − 1` (default 3) against dataset order and each other.
 */
export function shuffleQuality(input: EpochOrderInput & { epochs?: number | undefined }): ShuffleQuality {
  const epochs = optionalInt('epochs', input.epochs, 3, 2);
  const { partitionRows } = input;
  const offsets = new Float64Array(partitionRows.length + 1);
  for (let p = 0; p < partitionRows.length; p++) offsets[p + 1] = offsets[p]! + partitionRows[p]!;
  const n = offsets[partitionRows.length]!;
  let uniformSame = 0;
  for (const r of partitionRows) uniformSame += n > 1 ? (r * (r - 1)) / (n * (n - 1)) : 0;

  let displacement = 0;
  let correlation = 0;
  let sameAdjacent = 0;
  let previous: Float64Array | undefined;
  for (let e = 0; e < epochs; e++) {
    const order = epochOrder({ ...input, epoch: input.epoch + e });
    const pos = new Float64Array(n); // pos[global row id] = position this epoch
    let disp = 0;
    let same = 0;
    for (let i = 0; i < n; i++) {
      const id = offsets[order.partitions[i]!]! + order.rows[i]!;
      pos[id] = i;
      disp += Math.abs(i - id);
      if (i > 0 && order.partitions[i] === order.partitions[i - 1]) same++;
    }
    displacement += n > 0 ? disp / (n * n) : 0;
    sameAdjacent += n > 1 ? same / (n - 1) : 0;
    if (previous !== undefined) correlation += pearson(previous, pos);
    previous = pos;
  }
  return {
    meanDisplacement: displacement / epochs,
    epochCorrelation: correlation / (epochs - 1),
    samePartitionAdjacent: sameAdjacent / epochs,
    uniformSamePartition: uniformSame,
    rows: n,
    epochs,
  };
}

function pearson(x: Float64Array, y: Float64Array): number {
  const n = x.length;
  if (n < 2) return 1;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i]!;
    my += y[i]!;
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i]! - mx;
    const dy = y[i]! - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  return sxx === 0 || syy === 0 ? 1 : sxy / Math.sqrt(sxx * syy);
}

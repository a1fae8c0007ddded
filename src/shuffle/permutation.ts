import { checkInt } from '../util/validate.js';
import { randomFor } from './prng.js';
import type { Xoshiro128 } from './prng.js';

/**
 * Stream numbers used by the planner, so that each use of randomness in an epoch
 * draws from its own independent generator (changing how many partitions there
 * are never shifts the global permutation's draws, and so on).
 */
export const Streams = {
  /** `permutation(seed, epoch, n)` with no explicit stream. */
  PERMUTATION: 0,
  /** The order of partitions in 'buffer' mode. */
  PARTITION_ORDER: 1,
  /** The full row permutation in 'global' mode. */
  GLOBAL_ROWS: 2,
  /** Base of the per-partition row shuffles in 'buffer' mode (+ partition index). */
  PARTITION_ROWS: 2 ** 32,
  /** Base of the per-window row shuffles in 'buffer' mode (+ window index). */
  WINDOW_ROWS: 2 * 2 ** 32,
} as const;

const MAX_PERMUTATION = 2 ** 32 - 1;

/** Fisher–Yates (Durstenfeld) in place: every one of the n! orders is equally likely. */
export function shuffleInPlace(values: Uint32Array | Int32Array, rng: Xoshiro128): void {
  for (let i = values.length - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = values[i]!;
    values[i] = values[j]!;
    values[j] = t;
  }
}

/**
 * A uniformly random permutation of 0..n-1 for `(seed, epoch)`: `p[i]` is the item at
 * position i. A pure function of its arguments; different streams give independent
 * permutations of the same seed and epoch.
 *
 * @example
 * permutation(42, 0, 5); // Uint32Array [3, 4, 0, 1, 2] (the same in every process)
 */
export function permutation(seed: number, epoch: number, n: number, stream: number = Streams.PERMUTATION): Uint32Array {
  checkInt('n', n, 0, MAX_PERMUTATION);
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  if (n > 1) shuffleInPlace(p, randomFor(seed, epoch, stream));
  return p;
}

/** The inverse of a permutation: `inv[p[i]] = i` (the position of each item). */
export function inversePermutation(p: ArrayLike<number>): Uint32Array {
  const inv = new Uint32Array(p.length);
  for (let i = 0; i < p.length; i++) inv[p[i]!] = i;
  return inv;
}

/** Whether `values` holds each of 0..n-1 exactly once. */
export function isPermutation(values: ArrayLike<number>, n = values.length): boolean {
  if (values.length !== n) return false;
  const seen = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= n || seen[v] === 1) return false;
    seen[v] = 1;
  }
  return true;
}

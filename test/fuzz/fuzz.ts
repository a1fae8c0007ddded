/**
 * Settings shared by the fuzz tests: a fixed seed, so CI runs the same cases every
 * time, and `FUZZ_RUNS` to run many more of them by hand (`FUZZ_SEED` picks another
 * sequence):
 *
 *   FUZZ_RUNS=20000 npx vitest run test/fuzz/
 *   FUZZ_RUNS=5000 FUZZ_SEED=$RANDOM npx vitest run test/fuzz/parquet-plan.test.ts
 *
 * A failure prints the seed and the shrunk counterexample; add it to the test's
 * regression examples once fixed.
 */
import { expect } from 'vitest';
import { isGranaryError } from '../../src/errors.js';

const seed = Number(process.env.FUZZ_SEED ?? 19);
const runs = process.env.FUZZ_RUNS === undefined ? undefined : Number(process.env.FUZZ_RUNS);

/** fast-check parameters: `ciRuns` cases in CI, `FUZZ_RUNS` when set; each async case fails after `timeoutMs` (a hang). */
export function fuzzParams(ciRuns: number, timeoutMs = 5000): { seed: number; numRuns: number; timeout: number } {
  return { seed, numRuns: runs !== undefined && Number.isSafeInteger(runs) && runs > 0 ? runs : ciRuns, timeout: timeoutMs };
}

/** A vitest timeout that grows with `FUZZ_RUNS`: `msPerRun` per case, at least `min`. */
export function fuzzTimeout(ciRuns: number, msPerRun: number, min = 30_000): number {
  return Math.max(min, fuzzParams(ciRuns).numRuns * msPerRun);
}

/** Assert `err` is a coded granary error (`GRANARY_ERR_*`), and not a crash. */
export function expectCoded(err: unknown): void {
  if (!isGranaryError(err)) throw new Error(`expected a coded error, got ${err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err)}`);
  expect(err.code).toMatch(/^GRANARY_ERR_[A-Z_]+$/);
}

/** Run `fn`; it may succeed or throw a coded error, nothing else. */
export async function codedOrOk<T>(fn: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    expectCoded(err);
    return undefined;
  }
}

import { describe, expect, it } from 'vitest';
import { runTsx as tsx } from '../support/run.js';
import type { DriverResult } from '../../examples/ray-style/driver.js';

describe('examples/ray-style', () => {
  it('ray-style: two jobs of two trainers read every row once per epoch, directly and through granary, and report sane shares', async () => {
    const r = await tsx(['examples/ray-style/driver.ts', '--size', '2MiB', '--trainers', '2', '--jobs', '2', '--epochs', '2', '--step-ms', '1', '--json']);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout) as DriverResult;
    expect(result.modes.map((m) => m.mode)).toEqual(['direct', 'granary']);
    for (const m of result.modes) {
      expect(m.complete).toBe(true);
      expect(m.trainers).toHaveLength(4);
      expect(new Set(m.trainers.map((t) => `${t.job}/${t.rank}`)).size).toBe(4);
      for (const t of m.trainers) {
        expect(t.worldSize).toBe(2);
        expect(t.rowsPerEpoch).toHaveLength(2);
        expect(t.batches).toBeGreaterThan(0);
        for (const pct of [t.utilizationPct, t.dataWaitPct]) {
          expect(pct).toBeGreaterThanOrEqual(0);
          expect(pct).toBeLessThanOrEqual(100);
        }
        // Per epoch: the device cannot be busy longer than the epoch lasted (1 ms of timer slack).
        expect(t.perEpoch).toHaveLength(2);
        for (const e of t.perEpoch) {
          expect(e.busyMs).toBeLessThanOrEqual(e.wallMs + 1);
          expect(e.stallMs).toBeLessThanOrEqual(e.wallMs + 1);
        }
        expect(t.perEpoch.reduce((a, e) => a + e.busyMs, 0)).toBe(t.batches * result.stepMs);
      }
      expect(m.laterEpochs).not.toBeNull();
      for (const pct of [m.laterEpochs?.utilizationPct ?? -1, m.laterEpochs?.dataWaitPct ?? -1]) {
        expect(pct).toBeGreaterThanOrEqual(0);
        expect(pct).toBeLessThanOrEqual(100);
      }
      expect(m.storeRequests).toBeGreaterThan(0);
    }
    expect(result.profile).toBe('trainingNode');
    const [direct, granary] = result.modes;
    // Four trainer-epochs per job read the whole dataset from the store directly; through the cache the
    // jobs share one cold read.
    expect(direct?.storeBytes).toBeGreaterThanOrEqual(2 * 2 * result.dataset.bytes * 0.9);
    expect(granary?.storeBytes).toBeLessThan(direct?.storeBytes ?? 0);
    expect(granary?.trainers.every((t) => t.fallbacks === 0)).toBe(true);
  });
});

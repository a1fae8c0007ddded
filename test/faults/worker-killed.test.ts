/**
 * Fault matrix, row 1: a worker SIGKILLed mid-epoch. Its lease outlives the epoch, so
 * the ring keeps sending its blocks to it; every such read must fall back to the store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdAvailable } from '../support/etcd.js';
import { startFaultCluster, verifyEpoch, type FaultCluster } from '../support/fault-epoch.js';

describe.runIf(etcdAvailable())('fault: a worker SIGKILLed mid-epoch', () => {
  let c: FaultCluster;
  beforeAll(async () => {
    // With HTTP fault proxies in front of the workers too, so the baseline covers that path of the harness.
    c = await startFaultCluster({ workers: 3, leaseTtlSeconds: 60, workerHttpFaults: true });
  }, 120_000);
  afterAll(async () => {
    await c?.close();
  }, 60_000);

  it('yields every row exactly once and byte-identical with no faults (the baseline)', async () => {
    const r = await c.runEpoch({ epoch: 0 });
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    expect(r.stats.bytesFromCache).toBeGreaterThan(0);
    expect(c.workers.every((w) => (w.http?.stats().forwarded ?? 0) > 0)).toBe(true);
  });

  it('falls back to the store for the killed worker and yields every row exactly once', async () => {
    const victim = c.workers[1]!;
    const r = await c.runEpoch({ epoch: 1, at: { 3: () => victim.kill() } });
    expect(victim.alive()).toBe(false);
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    expect(r.stats.fallbacks).toBeGreaterThan(0);
    // The survivors kept serving.
    expect(c.workers.filter((w) => w.alive())).toHaveLength(2);
  });
});

/**
 * Fault matrix, row 4: every worker down for the whole epoch, still listed in etcd
 * (their leases outlive the epoch), so every read tries its owner, fails, and falls
 * back to the store: the job runs at store speed, never fails.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdAvailable } from '../support/etcd.js';
import { startFaultCluster, verifyEpoch, type FaultCluster } from '../support/fault-epoch.js';

describe.runIf(etcdAvailable())('fault: all workers down for the whole epoch', () => {
  let c: FaultCluster;
  beforeAll(async () => {
    c = await startFaultCluster({ workers: 3, leaseTtlSeconds: 60 });
  }, 120_000);
  afterAll(async () => {
    await c?.close();
  }, 60_000);

  it('reads everything from the store when every worker refuses connections, yielding every row exactly once', async () => {
    for (const w of c.workers) await w.proxy.refuse(true, 'unlisten');
    try {
      const r = await c.runEpoch({ epoch: 0 });
      expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
      expect(r.stats.bytesFromCache).toBe(0);
      expect(r.stats.fallbacks).toBeGreaterThan(0);
    } finally {
      for (const w of c.workers) await w.proxy.refuse(false);
    }
  });

  it('reads everything from the store when every worker was SIGKILLed, yielding every row exactly once', async () => {
    for (const w of c.workers) await w.kill();
    const r = await c.runEpoch({ epoch: 1 });
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    expect(r.stats.bytesFromCache).toBe(0);
    expect(r.stats.fallbacks).toBeGreaterThan(0);
  });
});

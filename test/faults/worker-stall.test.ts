/**
 * Fault matrix, row 2: a worker that stalls mid-epoch (its connections stay open and
 * nothing flows). Reads to it time out after the client's `requestTimeoutMs` and fall
 * back to the store; its breaker steers later reads around it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdAvailable } from '../support/etcd.js';
import { startFaultCluster, verifyEpoch, type FaultCluster } from '../support/fault-epoch.js';

describe.runIf(etcdAvailable())('fault: a worker stalls mid-epoch', () => {
  let c: FaultCluster;
  beforeAll(async () => {
    c = await startFaultCluster({ workers: 3, leaseTtlSeconds: 60 });
  }, 120_000);
  afterAll(async () => {
    await c?.close();
  }, 60_000);

  it('times out the stalled worker, falls back to the store, and yields every row exactly once', async () => {
    const slow = c.workers[0]!;
    const r = await c.runEpoch({ client: { requestTimeoutMs: 1000 }, at: { 2: () => slow.proxy.stall() } });
    slow.proxy.resume();
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    expect(r.stats.fallbacks).toBeGreaterThan(0);
    // The worker itself never failed: it answers again once the link does.
    expect(slow.alive()).toBe(true);
    expect((await fetch(`${slow.url}/healthz`)).ok).toBe(true);
    const again = await c.runEpoch({ epoch: 1 });
    expect(verifyEpoch(again, c.reference).rows).toBe(c.dataset.rows);
  });
});

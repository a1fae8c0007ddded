/**
 * Fault matrix, row 5: etcd killed (SIGKILL) and restarted mid-epoch. Clients keep the
 * last membership they saw and workers keep serving; when etcd is back, workers'
 * registrations are there again and new clients find them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { etcdAvailable } from '../support/etcd.js';
import { startFaultCluster, verifyEpoch, type FaultCluster } from '../support/fault-epoch.js';
import { waitFor } from '../support/wait.js';

describe.runIf(etcdAvailable())('fault: etcd killed and restarted mid-epoch', () => {
  let c: FaultCluster;
  beforeAll(async () => {
    c = await startFaultCluster({ workers: 3 });
  }, 120_000);
  afterAll(async () => {
    await c?.close();
  }, 60_000);

  it('keeps reading through the workers while etcd is gone, and yields every row exactly once', async () => {
    const r = await c.runEpoch({
      at: {
        2: () => c.etcd.kill(),
        8: () => c.etcd.start(),
      },
    });
    expect(c.etcd.running).toBe(true);
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    // The workers served the epoch: losing etcd cost no cache reads.
    expect(r.stats.bytesFromCache).toBeGreaterThan(0);
    expect(c.workers.every((w) => w.alive())).toBe(true);
    // A client started after the restart finds every worker in etcd again.
    const fresh = new CacheClient(c.clientOptions());
    try {
      await fresh.ready();
      await waitFor(() => fresh.workers().length === 3, { what: 'all 3 workers to be listed in the restarted etcd', timeoutMs: 30_000 });
    } finally {
      await fresh.close();
    }
    const again = await c.runEpoch({ epoch: 1 });
    expect(verifyEpoch(again, c.reference).rows).toBe(c.dataset.rows);
  });
});

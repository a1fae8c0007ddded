/**
 * Fault matrix, row 7: store connections reset mid-body: the store sends the status,
 * the headers and half the body, then a TCP reset. The S3 adapter retries the part;
 * the worker or client that asked never sees a short read.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isObjectGet, resetMidBody } from '../../src/netem/http-faults.js';
import { etcdAvailable } from '../support/etcd.js';
import { startFaultCluster, verifyEpoch, type FaultCluster } from '../support/fault-epoch.js';

describe.runIf(etcdAvailable())('fault: store connections reset mid-body', () => {
  let c: FaultCluster;
  beforeAll(async () => {
    c = await startFaultCluster({ workers: 3 });
  }, 120_000);
  afterAll(async () => {
    await c?.close();
  }, 60_000);

  it('retries every cut read and yields every row exactly once, byte-identical', async () => {
    const cut = (): void => c.store.inject(resetMidBody(), { times: 2, match: isObjectGet });
    cut();
    const r = await c.runEpoch({ at: { 1: cut, 3: cut, 6: cut, 10: cut } });
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    expect(c.store.stats().injected.resetMidBody ?? 0).toBeGreaterThanOrEqual(2);
  });

  it('retries the reads a client makes itself (no worker reachable) when they are cut mid-body', async () => {
    // No workers reachable: every read is the client's own, and each of the first ten is cut once.
    for (const w of c.workers) await w.proxy.refuse(true, 'unlisten');
    try {
      c.store.inject(resetMidBody(), { times: 10, match: isObjectGet });
      const r = await c.runEpoch({ epoch: 1 });
      expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
      expect(r.stats.bytesFromCache).toBe(0);
      expect(c.store.pending()).toBe(0);
    } finally {
      for (const w of c.workers) await w.proxy.refuse(false);
      c.store.clear();
    }
  });
});

/**
 * Fault matrix, row 6: the store answers bursts of `503 SlowDown`, to the workers'
 * read-throughs and to the clients' own reads alike. Each burst is shorter than the
 * store adapter's retry budget (4 attempts), so retries with backoff absorb it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isObjectGet, slowDown } from '../../src/netem/http-faults.js';
import { etcdAvailable } from '../support/etcd.js';
import { startFaultCluster, verifyEpoch, type FaultCluster } from '../support/fault-epoch.js';

const BURST = 3;

describe.runIf(etcdAvailable())('fault: the store throttles with bursts of 503 SlowDown', () => {
  let c: FaultCluster;
  beforeAll(async () => {
    c = await startFaultCluster({ workers: 3 });
  }, 120_000);
  afterAll(async () => {
    await c?.close();
  }, 60_000);

  it('retries through every burst and yields every row exactly once', async () => {
    const burst = (): void => c.store.inject(slowDown(), { times: BURST, match: isObjectGet });
    burst();
    const r = await c.runEpoch({ at: { 1: burst, 4: burst, 8: burst, 12: burst } });
    expect(verifyEpoch(r, c.reference).rows).toBe(c.dataset.rows);
    // Bursts were answered (at least the first, injected before any read).
    expect(c.store.stats().injected.slowDown ?? 0).toBeGreaterThanOrEqual(BURST);
  });
});

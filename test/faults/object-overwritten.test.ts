/**
 * Fault matrix, row 8: an object overwritten mid-epoch. Reads are pinned to the version
 * the dataset planned from, so the epoch either completes on that version of every file
 * or fails with `GRANARY_ERR_VERSION_CHANGED` naming the file; it never yields a mix of
 * two versions. Each case below is made deterministic by construction: a read of bytes
 * nobody has cached yet, held until the overwrite lands, must fail; a fully cached file
 * must complete on the old version.
 */
import type http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forObject, hold } from '../../src/netem/http-faults.js';
import { etcdAvailable } from '../support/etcd.js';
import { describeError, readReference, startFaultCluster, verifyEpoch, verifyNoMix, type FaultCluster } from '../support/fault-epoch.js';

const PAGE = 16 * 1024;

/** A store GET of the first page of `key` (row group 0's bytes; the footer probe reads the end of the file). */
function firstPageGet(key: string): (req: http.IncomingMessage) => boolean {
  const isObject = forObject('train', key);
  return (req) => {
    const m = /^bytes=(\d+)-/.exec(req.headers.range ?? '');
    return req.method === 'GET' && isObject(req) && m !== null && Number(m[1]) < PAGE;
  };
}

describe.runIf(etcdAvailable())('fault: an object overwritten mid-epoch', () => {
  let c: FaultCluster;
  beforeAll(async () => {
    c = await startFaultCluster({ workers: 3 });
  }, 120_000);
  afterAll(async () => {
    await c?.close();
  }, 60_000);

  it('fails with GRANARY_ERR_VERSION_CHANGED naming the file when uncached bytes of it change under the epoch, having yielded no mix of versions', async () => {
    const file = c.dataset.files[1]!;
    const key = file.url.slice('s3://train/'.length);
    let overwritten = false;
    // Every store read of the file's first page (a worker's, or a client's fallback) waits until the new version is in place.
    const held = hold();
    c.store.inject(held, { match: firstPageGet(key), times: 1000 });
    void held.arrived.then(async () => {
      await c.overwrite(1, 1234);
      overwritten = true;
      held.release();
    });
    const r = await c.runEpoch({ epoch: 0 });
    c.store.clear();
    expect(overwritten).toBe(true);
    const next = await readReference(c.direct, [file.url]);
    expect(r.error, 'the epoch completed though a version change was certain').toBeDefined();
    expect((r.error as { code?: string }).code, describeError(r.error)).toBe('GRANARY_ERR_VERSION_CHANGED');
    expect((r.error as Error).message).toContain(file.url);
    // What was yielded before the failure is the old version of each file, never the new one.
    const versions = verifyNoMix(r, c.dataset.files, [c.reference, next]);
    expect(versions.filter((v) => v === 1)).toEqual([]);
  });

  it('completes on the old version when every page of the file was cached before it changed', async () => {
    // The file changed in the test above; this dataset starts from the store as it is now.
    const now = await readReference(c.direct, c.prefix);
    const warm = await c.runEpoch({ epoch: 1 });
    expect(verifyEpoch(warm, now).rows).toBe(c.dataset.rows);
    let overwritten = false;
    const r = await c.runEpoch({
      epoch: 2,
      at: {
        2: async () => {
          await c.overwrite(2, 4321);
          overwritten = true;
        },
      },
    });
    expect(overwritten).toBe(true);
    // Every row exactly once, each file wholly the version the epoch planned from.
    expect(verifyEpoch(r, now).rows).toBe(c.dataset.rows);
    expect(r.stats.fallbacks).toBe(0);
  });
});

/**
 * One membership, one ring and one breaker per worker per process: a dataset whose
 * decode threads read through a `CacheClient` on real etcd membership shares the
 * client's etcd watch and breakers instead of building its own in every thread.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { BroadcastChannel } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { sharedStateChannels } from '../../src/cache/membership-port.js';
import { SharedBreakers } from '../../src/cache/shared-breakers.js';
import { Dataset, ufsSpecOf } from '../../src/loader/index.js';
import { etcdAvailable, startEtcd, type EtcdServer } from '../support/etcd.js';
import { spawnWorker, type WorkerProcess } from '../support/workers.js';
import { ids, parquetBytes } from './helpers.js';

const KiB = 1024;
const FILES = 4;
const ROWS = 1200;
const ROW_GROUP = 100;
const TOTAL = FILES * ROWS;

/** Watchers etcd holds open, from its own metrics endpoint. */
async function etcdWatchers(etcd: EtcdServer): Promise<number> {
  const text = await (await fetch(`${etcd.endpoint}/metrics`)).text();
  const m = /^etcd_debugging_mvcc_watcher_total (\d+(?:\.\d+)?(?:e[+-]?\d+)?)$/m.exec(text);
  if (!m) throw new Error('etcd reports no etcd_debugging_mvcc_watcher_total');
  return Number(m[1]);
}

/**
 * Breaker trips counted in the client's shared breaker memory (every thread's), read
 * through the client's hub as a copy would: ask for the state, read the counter.
 */
async function sharedTrips(client: CacheClient): Promise<number> {
  const share = ufsSpecOf(client)?.share as { channel: string } | undefined;
  if (!share) throw new Error('the client has no hub');
  const bc = new BroadcastChannel(share.channel);
  try {
    const buffer = await new Promise<SharedArrayBuffer>((resolve) => {
      bc.onmessage = (ev) => {
        const m = (ev as { data: { t: string; breakers?: SharedArrayBuffer } }).data;
        if (m.t === 'state' && m.breakers) resolve(m.breakers);
      };
      bc.postMessage({ t: 'hello' });
    });
    return new SharedBreakers({}, buffer).trips;
  } finally {
    bc.close();
  }
}

describe.runIf(etcdAvailable())('one membership per process', () => {
  let etcd: EtcdServer;
  let dir: string;
  let prefix: string;
  const workers: WorkerProcess[] = [];
  const cluster = `shared${Date.now()}`;

  beforeAll(async () => {
    etcd = (await startEtcd()) as EtcdServer;
    dir = await mkdtemp(join(tmpdir(), 'granary-shared-'));
    for (let f = 0; f < FILES; f++) {
      const pad = Array.from({ length: ROWS }, (_, i) => `${'p'.repeat(200)}${f * ROWS + i}`);
      await writeFile(join(dir, `part-${f}.parquet`), parquetBytes(f * ROWS, ROWS, ROW_GROUP, { pad }));
    }
    prefix = pathToFileURL(dir).href + '/';
    for (let i = 0; i < 3; i++) {
      workers.push(
        await spawnWorker({
          id: `w${i}`,
          memoryBytes: 64 * 1024 * KiB,
          fileRoot: dir,
          // A SIGKILLed worker stays listed for the whole test: its reads must fail over.
          etcd: { endpoints: [etcd.endpoint], cluster, ttlSeconds: 120 },
        }),
      );
    }
  }, 120_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await etcd?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const clientOptions = () => ({
    etcd: { endpoints: [etcd.endpoint], cluster },
    ufs: { file: { root: dir } },
    // Every row group spans blocks on several workers.
    blockSize: 16 * KiB,
    // No probe during the test: a worker found down stays down.
    breaker: { cooldownMs: 600_000 },
  });

  for (const loaderThread of [true, false]) {
    it(`opens exactly one etcd watch for a dataset with 4 decode threads reading through the cache (loader thread: ${String(loaderThread)})`, async () => {
      const before = await etcdWatchers(etcd);
      const fs = new CacheClient(clientOptions());
      let ds: Dataset | undefined;
      try {
        await fs.ready();
        expect(fs.workers().map((w) => w.id)).toEqual(['w0', 'w1', 'w2']);
        ds = await Dataset.parquet(prefix, { fs, decodeThreads: 4, fetchInDecoder: true, loaderThread });
        expect(ds.loaderThread).toBe(loaderThread);
        const seen: number[] = [];
        for await (const b of ds.batches({ batchSize: 256, epoch: 0, seed: 1, shuffle: 'global', prefetch: 8 })) seen.push(...ids(b));
        expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: TOTAL }, (_, i) => i));
        // The decode threads read through the workers (their copies knew the members)...
        const stats = await ds.readStats();
        expect(stats.cache?.bytesFromCache ?? 0).toBeGreaterThan(0);
        expect(stats.cache?.fallbacks).toBe(0);
        // ...and, while they are alive, the process holds the owner's watch and no other.
        expect((await etcdWatchers(etcd)) - before).toBe(1);
      } finally {
        await ds?.close();
        await fs.close();
      }
    }, 120_000);
  }

  it('marks a worker killed mid-epoch down once for the whole process, and yields every row exactly once', async () => {
    const victim = workers[1] as WorkerProcess;
    const fs = new CacheClient(clientOptions());
    const hub = (ufsSpecOf(fs)?.share as { channel: string }).channel;
    const trips: string[] = [];
    let firstTrip: () => void = () => undefined;
    const tripped = new Promise<void>((resolve) => (firstTrip = resolve));
    const onTrip = (m: unknown): void => {
      const e = m as { worker: string; hub: string | undefined };
      if (e.hub !== hub) return;
      trips.push(e.worker);
      firstTrip();
    };
    subscribe(sharedStateChannels.breaker.name, onTrip);
    let ds: Dataset | undefined;
    try {
      await fs.ready();
      ds = await Dataset.parquet(prefix, { fs, decodeThreads: 4, fetchInDecoder: true });
      const seen: number[] = [];
      let killed = false;
      for await (const b of ds.batches({ batchSize: 128, epoch: 1, seed: 3, shuffle: false, prefetch: 2 })) {
        seen.push(...ids(b));
        if (!killed) {
          killed = true;
          await victim.kill();
        }
      }
      expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: TOTAL }, (_, i) => i));
      // The threads' reads to the dead worker fell back to the store.
      expect((await ds.readStats()).cache?.fallbacks ?? 0).toBeGreaterThan(0);
      // One trip in the shared breakers (every thread's)...
      expect(await sharedTrips(fs)).toBe(1);
      // ...reported once to the owner's thread (the report may still be on its way).
      await tripped;
      expect(trips).toEqual([victim.id]);
    } finally {
      unsubscribe(sharedStateChannels.breaker.name, onTrip);
      await ds?.close();
      await fs.close();
    }
  }, 120_000);
});

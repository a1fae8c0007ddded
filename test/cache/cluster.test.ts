/**
 * The cache as it runs in production: real etcd, real S3 (s3rver), workers as
 * separate processes that register under leases, clients that watch etcd.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { CacheClient } from '../../src/cache/client.js';
import { workerKey } from '../../src/cache/membership.js';
import type { WorkerInfoResponse } from '../../src/cache/worker.js';
import { S3Ufs } from '../../src/ufs/s3.js';
import { startEtcd, type EtcdServer } from '../support/etcd.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';
import { spawnWorker, type WorkerProcess } from '../support/workers.js';

const MiB = 1024 * 1024;

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function workerStoreRequests(ws: readonly WorkerProcess[]): Promise<number> {
  const infos = await Promise.all(ws.map(async (w) => (await (await fetch(`${w.url}/v1/info`)).json()) as WorkerInfoResponse));
  return infos.reduce((a, i) => a + i.counters.storeRequests, 0);
}

describe('cache cluster: etcd membership, s3rver store, worker processes', () => {
  let etcd: EtcdServer | undefined;
  let s3: S3rverHandle;
  let store: S3Ufs;
  let s3opts: Record<string, unknown>;
  const workers: WorkerProcess[] = [];
  const objects = new Map<string, Buffer>();
  const cluster = `c${Date.now()}`;

  const workerOptions = (id: string): Record<string, unknown> => ({
    id,
    // Room for the whole prefix on any one worker, so placement luck cannot cause evictions.
    memoryBytes: 256 * MiB,
    metadataTtlMs: 120_000,
    etcd: { endpoints: [etcd!.endpoint], cluster, ttlSeconds: 2 },
    ufs: { s3: s3opts },
  });

  beforeAll(async () => {
    etcd = await startEtcd();
    if (!etcd) return;
    s3 = await startS3rver({ buckets: ['train'] });
    s3opts = {
      endpoint: s3.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    };
    store = new S3Ufs(s3opts);
    // 200 MB over 10 objects.
    for (let i = 0; i < 10; i++) {
      const bytes = randomBytes(20 * 1000 * 1000);
      const url = `s3://train/prefix/obj-${i}.bin`;
      await store.write(url, bytes);
      objects.set(url, bytes);
    }
    for (const id of ['w0', 'w1', 'w2']) workers.push(await spawnWorker(workerOptions(id)));
  }, 180_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await store?.close();
    await s3?.close();
    await etcd?.close();
  }, 60_000);

  it('reads a 200 MB prefix cold, then warm with zero store requests, and a second job is served from the cache', async (ctx) => {
    if (!etcd) return ctx.skip();
    // A warm pass within the metadata TTL asks the store nothing; a slow machine must not outlive the TTL.
    const client = new CacheClient({ etcd: { endpoints: [etcd.endpoint], cluster }, ufs: { s3: s3opts }, metadataTtlMs: 120_000 });
    try {
      await client.ready();
      await waitFor('three workers', () => client.workers().length === 3);
      const readAll = async (c: CacheClient): Promise<number> => {
        let n = 0;
        for await (const f of c.list('s3://train/prefix/')) {
          const got = await c.read(f.url, 0, f.size);
          expect(createHash('md5').update(got).digest('hex')).toBe(createHash('md5').update(objects.get(f.url)!).digest('hex'));
          n++;
        }
        return n;
      };
      expect(await readAll(client)).toBe(10);
      const afterCold = await workerStoreRequests(workers);
      expect(afterCold).toBeGreaterThan(0);
      const clientCold = client.stats().ufsRequests;

      expect(await readAll(client)).toBe(10);
      expect(await workerStoreRequests(workers)).toBe(afterCold);
      expect(client.stats().ufsRequests).toBe(clientCold);
      expect(client.stats().fallbacks).toBe(0);

      // Another job, another process's view: its first read is a cache read.
      const second = new CacheClient({ etcd: { endpoints: [etcd.endpoint], cluster }, ufs: { s3: s3opts }, metadataTtlMs: 120_000 });
      try {
        await second.ready();
        await waitFor('three workers (second client)', () => second.workers().length === 3);
        expect(await readAll(second)).toBe(10);
        expect(await workerStoreRequests(workers)).toBe(afterCold);
        expect(second.stats().ufsRequests).toBe(0);
        expect(second.stats().misses).toBe(0);
      } finally {
        await second.close();
      }
    } finally {
      await client.close();
    }
  }, 240_000);

  it('keeps every read exact when a worker is SIGKILLed mid-read, drops it when its lease expires, and takes it back on restart', async (ctx) => {
    if (!etcd) return ctx.skip();
    const client = new CacheClient({ etcd: { endpoints: [etcd.endpoint], cluster }, ufs: { s3: s3opts }, breaker: { cooldownMs: 500 } });
    try {
      await client.ready();
      await waitFor('three workers', () => client.workers().length === 3);
      const urls = [...objects.keys()];
      let stop = false;
      let reads = 0;
      const reader = async (seed: number): Promise<void> => {
        for (let i = seed; !stop; i += 7) {
          const url = urls[i % urls.length]!;
          const bytes = objects.get(url)!;
          const off = (i * 1_234_567) % (bytes.byteLength - 3 * MiB);
          const len = 1 + ((i * 777_777) % (3 * MiB));
          const got = await client.read(url, off, len);
          expect(Buffer.from(got).equals(bytes.subarray(off, off + len))).toBe(true);
          reads++;
        }
      };
      const readers = [1, 2, 3, 4].map(reader);
      await waitFor('some reads', () => reads > 20);
      const victim = workers.find((w) => w.id === 'w1')!;
      await victim.kill();
      await waitFor('reads after the kill', () => reads > 80);
      await waitFor('the ring to drop the killed worker', () => client.workers().every((w) => w.id !== 'w1'));
      expect(client.stats().fallbacks).toBeGreaterThan(0);
      const restarted = await spawnWorker(workerOptions('w1'));
      workers.splice(workers.indexOf(victim), 1, restarted);
      await waitFor('the restarted worker to rejoin', () => client.workers().some((w) => w.id === 'w1' && w.url === restarted.url));
      const readsAtRejoin = reads;
      await waitFor('reads after the rejoin', () => reads > readsAtRejoin + 40);
      stop = true;
      await Promise.all(readers);
    } finally {
      await client.close();
    }
  }, 240_000);

  it('drops a gracefully closed worker at once, keeps reading while etcd is down, and resumes membership when it is back', async (ctx) => {
    if (!etcd) return ctx.skip();
    const client = new CacheClient({ etcd: { endpoints: [etcd.endpoint], cluster }, ufs: { s3: s3opts } });
    try {
      await client.ready();
      await waitFor('three workers', () => client.workers().length === 3);
      // A long lease for this one: the test is about the revoke on close, and a keepalive
      // missed on a loaded machine must not turn into a lost lease and a re-registration.
      const extra = await spawnWorker({ ...workerOptions('w3'), etcd: { endpoints: [etcd.endpoint], cluster, ttlSeconds: 30 } });
      await waitFor('the fourth worker', () => client.workers().length === 4);
      await extra.stop();
      // The close revoked the lease: the key goes well inside the 30 s TTL, not when it expires.
      const etcdClient = new Etcd3({ hosts: [etcd.endpoint] });
      try {
        await waitFor('the closed worker key to be deleted', async () => (await etcdClient.get(workerKey(cluster, 'w3')).string()) === null, 15_000);
      } finally {
        etcdClient.close();
      }
      // A graceful close revokes the lease before the process exits.
      await waitFor('the closed worker to leave', () => client.workers().length === 3);
      expect(client.workers().some((w) => w.id === 'w3')).toBe(false);

      await etcd.stop();
      const url = 's3://train/prefix/obj-3.bin';
      const bytes = objects.get(url)!;
      for (let i = 0; i < 5; i++) {
        const got = await client.read(url, i * 3 * MiB, 2 * MiB);
        expect(Buffer.from(got).equals(bytes.subarray(i * 3 * MiB, i * 3 * MiB + 2 * MiB))).toBe(true);
      }
      expect(client.workers().length).toBe(3);

      await etcd.start();
      const late = await spawnWorker(workerOptions('w4'));
      workers.push(late);
      await waitFor('membership to resume and see a new worker', () => client.workers().some((w) => w.id === 'w4'), 30_000);
      const got = await client.read(url, 0, 5 * MiB);
      expect(Buffer.from(got).equals(bytes.subarray(0, 5 * MiB))).toBe(true);
    } finally {
      await client.close();
    }
  }, 240_000);
});

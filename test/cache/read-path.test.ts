/**
 * The read path's request budget against a real store (s3rver) and worker processes:
 * metadata from listings (one LIST per TTL, never a HEAD per object), reads that carry
 * the version (no HEAD before a GET, `If-Match` on a miss), versions that change under
 * a read, and connections reused to the workers.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { encodeTrailer } from '../../src/cache/page-checksum.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { S3Ufs } from '../../src/ufs/s3.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';
import { waitFor } from '../support/wait.js';
import { spawnWorker, type WorkerProcess } from '../support/workers.js';

const MiB = 1024 * 1024;
const TTL = 4000;

interface Counts {
  get: number;
  stat: number;
  list: number;
  reads: number;
  stats: number;
}

/** Store requests by kind (the workers' and the client's own) and worker requests by endpoint, so far. */
async function counts(ws: readonly WorkerProcess[], client: CacheClient): Promise<Counts> {
  const out: Counts = { get: 0, stat: 0, list: 0, reads: 0, stats: 0 };
  for (const w of ws) {
    const text = await (await fetch(`${w.url}/metrics`)).text();
    for (const m of text.matchAll(/^granary_worker_store_requests_total\{[^}]*kind="(\w+)"[^}]*\} (\d+)/gm)) out[m[1] as 'get' | 'stat' | 'list'] += Number(m[2]);
    for (const m of text.matchAll(/^granary_worker_requests_total\{[^}]*endpoint="\/v1\/(read|stat)"[^}]*\} (\d+)/gm)) out[m[1] === 'read' ? 'reads' : 'stats'] += Number(m[2]);
  }
  const u = client.stats().ufs;
  out.get += u.get;
  out.stat += u.stat;
  out.list += u.list;
  return out;
}

function delta(a: Counts, b: Counts): Counts {
  return { get: b.get - a.get, stat: b.stat - a.stat, list: b.list - a.list, reads: b.reads - a.reads, stats: b.stats - a.stats };
}

describe('read path over s3rver and worker processes', () => {
  let s3: S3rverHandle;
  let store: S3Ufs;
  let ws: WorkerProcess[] = [];
  let s3opts: Record<string, unknown>;
  const objects = new Map<string, Buffer>();
  const prefix = 's3://readpath/small/';

  beforeAll(async () => {
    s3 = await startS3rver({ buckets: ['readpath'] });
    s3opts = { endpoint: s3.endpoint, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } };
    store = new S3Ufs(s3opts);
    for (let i = 0; i < 30; i++) {
      const url = `${prefix}f-${String(i).padStart(2, '0')}.bin`;
      const bytes = randomBytes(10_000 + i);
      await store.write(url, bytes);
      objects.set(url, bytes);
    }
    ws = await Promise.all(['w0', 'w1'].map((id) => spawnWorker({ id, memoryBytes: 128 * MiB, metadataTtlMs: TTL, ufs: { s3: s3opts } })));
  }, 120_000);

  afterAll(async () => {
    await Promise.all(ws.map((w) => w.stop()));
    await store?.close();
    await s3?.close();
  });

  async function pass(client: CacheClient, p: string, expected: Map<string, Buffer>): Promise<void> {
    const files = [];
    for await (const f of client.list(p)) files.push(f);
    expect(files.length).toBe(expected.size);
    await Promise.all(
      files.map(async (f) => {
        const info = await client.stat(f.url);
        const got = await client.read(f.url, 0, info.size);
        expect(Buffer.from(got).equals(expected.get(f.url)!)).toBe(true);
      }),
    );
  }

  it('sends one GET per object and no HEAD cold, nothing warm, and one LIST and no HEAD after the TTL', async () => {
    const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: store, metadataTtlMs: TTL });
    try {
      const c0 = await counts(ws, client);
      await pass(client, prefix, objects);
      const c1 = await counts(ws, client);
      const cold = delta(c0, c1);
      expect(cold.get).toBe(objects.size);
      expect(cold.stat).toBe(0);
      expect(cold.list).toBeGreaterThanOrEqual(1);
      // Stat answers come from the listing: no stat request reaches a worker.
      expect(cold.stats).toBe(0);

      await pass(client, prefix, objects);
      const c2 = await counts(ws, client);
      const warmEnd = Date.now();
      const warm = delta(c1, c2);
      expect(warm.get).toBe(0);
      expect(warm.stat).toBe(0);

      // Past the TTL every entry has expired: the prefix is listed again, once, and no object is HEADed.
      await waitFor(() => Date.now() > warmEnd + TTL + 50, { timeoutMs: TTL * 3 });
      const start = Date.now();
      await pass(client, prefix, objects);
      const again = delta(c2, await counts(ws, client));
      const intervals = Math.ceil((Date.now() - start) / TTL);
      expect(again.get).toBe(0);
      expect(again.stat).toBe(0);
      expect(again.stats).toBe(0);
      expect(again.list).toBeGreaterThanOrEqual(1);
      // At most one LIST per TTL interval (and one more where an interval began mid-pass).
      expect(again.list).toBeLessThanOrEqual(intervals + 1);
    } finally {
      await client.close();
    }
  });

  it('reads a listed object whole in one request to one worker and one GET', async () => {
    const p = 's3://readpath/whole/';
    const u = `${p}one.bin`;
    const bytes = randomBytes(50_000);
    await store.write(u, bytes);
    const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: store, metadataTtlMs: TTL });
    try {
      for await (const f of client.list(p)) expect(f.size).toBe(bytes.byteLength);
      const c0 = await counts(ws, client);
      expect(Buffer.from(await client.read(u)).equals(bytes)).toBe(true);
      const d = delta(c0, await counts(ws, client));
      expect(d).toEqual({ get: 1, stat: 0, list: 0, reads: 1, stats: 0 });
    } finally {
      await client.close();
    }
  });

  it('gives the new bytes, never a mix, when an object changed after it was listed; a pinned old version is VERSION_CHANGED', async () => {
    const p = 's3://readpath/changing/';
    const u = `${p}obj.bin`;
    const v1 = Buffer.alloc(300_000, 1);
    const v2 = Buffer.alloc(200_000, 2);
    await store.write(u, v1);
    const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: store, metadataTtlMs: TTL });
    try {
      const listed = [];
      for await (const f of client.list(p)) listed.push(f);
      const old = listed[0]!;
      await store.write(u, v2);
      const c0 = await counts(ws, client);
      // The listing still names v1: the worker's If-Match read gets 412, the client refreshes and reads v2.
      const got = await client.read(u);
      expect(Buffer.from(got).equals(v2)).toBe(true);
      const d = delta(c0, await counts(ws, client));
      expect(d.get).toBe(2);
      expect(d.stat).toBe(1);
      await expect(client.read(u, 0, 1000, { etag: old.etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
      expect((await client.stat(u)).size).toBe(v2.byteLength);
    } finally {
      await client.close();
    }
  });

  it('serves a cached object at its new version once the TTL has passed', async () => {
    const p = 's3://readpath/overwritten/';
    const u = `${p}obj.bin`;
    await store.write(u, Buffer.alloc(100_000, 7));
    const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: store, metadataTtlMs: TTL });
    try {
      for await (const f of client.list(p)) expect(f.url).toBe(u);
      expect(Buffer.from(await client.read(u)).equals(Buffer.alloc(100_000, 7))).toBe(true);
      await store.write(u, Buffer.alloc(120_000, 8));
      const writtenAt = Date.now();
      // Within the TTL the cached version may still be served, whole and unmixed.
      const during = await client.read(u);
      expect([Buffer.alloc(100_000, 7), Buffer.alloc(120_000, 8)].some((b) => b.equals(Buffer.from(during)))).toBe(true);
      await waitFor(() => Date.now() > writtenAt + TTL + 50, { timeoutMs: TTL * 3 });
      expect(Buffer.from(await client.read(u)).equals(Buffer.alloc(120_000, 8))).toBe(true);
    } finally {
      await client.close();
    }
  });

  it('reuses its connections to the workers: large reads open no new connection once warm', async () => {
    const p = 's3://readpath/large/';
    const big = new Map<string, Buffer>();
    for (let i = 0; i < 4; i++) {
      const bytes = randomBytes(3 * MiB + i);
      await store.write(`${p}b-${i}.bin`, bytes);
      big.set(`${p}b-${i}.bin`, bytes);
    }
    const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: store, metadataTtlMs: 600_000, partSize: MiB, blockSize: 2 * MiB, concurrency: 4 });
    let sockets = 0;
    const onSocket = (): void => {
      sockets++;
    };
    subscribe('net.client.socket', onSocket);
    try {
      await pass(client, p, big);
      const cold = sockets;
      // At most one connection per read in flight to each worker, plus the metadata requests'.
      expect(cold).toBeLessThanOrEqual(4 * ws.length + 2);
      await pass(client, p, big);
      await pass(client, p, big);
      expect(sockets - cold).toBeLessThanOrEqual(4);
      expect(client.stats().fallbacks).toBe(0);
    } finally {
      unsubscribe('net.client.socket', onSocket);
      await client.close();
    }
  });
});

describe('raw keep-alive sockets to a worker', () => {
  it('sends a read again on a fresh socket when the worker closed the reused one without answering', async () => {
    const store = new MemoryUfs();
    const u = 's3://bucket/raw/stale.bin';
    const bytes = randomBytes(2 * MiB);
    const { etag, size } = await store.write(u, bytes);
    let accepted = 0;
    // A worker that answers the first request on each connection, then closes it on the next without a byte.
    const server = createNetServer((sock) => {
      accepted++;
      let served = 0;
      let pending = '';
      sock.on('data', (d: Buffer) => {
        pending += d.toString('latin1');
        if (!pending.includes('\r\n\r\n')) return;
        pending = '';
        if (served++ > 0) {
          sock.destroy();
          return;
        }
        // The bytes, then the page checksums the client asked for (two 1 MiB pages).
        const trailer = encodeTrailer([crc32(bytes.subarray(0, MiB)), crc32(bytes.subarray(MiB))]);
        const length = bytes.byteLength + trailer.byteLength;
        sock.write(`HTTP/1.1 200 OK\r\ncontent-length: ${length}\r\nx-granary-etag: ${etag}\r\nx-granary-cache: hit\r\nx-granary-crc32: ${MiB}\r\n\r\n`);
        sock.write(bytes);
        sock.write(trailer);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const client = new CacheClient({ workers: [`http://127.0.0.1:${(server.address() as AddressInfo).port}`], ufs: store, concurrency: 1 });
    try {
      for (let i = 0; i < 3; i++) expect(Buffer.from(await client.read(u, 0, size, { etag })).equals(bytes)).toBe(true);
      // The first read opened a socket; each later one found it closed and opened exactly one more.
      expect(accepted).toBe(3);
      expect(client.stats().fallbacks).toBe(0);
      expect(client.stats().ufsRequests).toBe(0);
    } finally {
      await client.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

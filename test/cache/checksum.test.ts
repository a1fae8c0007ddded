/**
 * End-to-end page checksums: every piece a worker sends is checked against the CRC the
 * worker computed from the store's bytes; bad or missing checksums cost a store read,
 * never a wrong byte, and the worker drops the pages the client reports.
 */
import { randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { badPages, encodeTrailer, pieceCount } from '../../src/cache/page-checksum.js';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { startFaultProxy, type FaultProxy } from '../../src/netem/fault-proxy.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { waitFor } from '../support/wait.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const PAGE = 64 * KiB;

async function metric(w: CacheWorker, name: string): Promise<number> {
  const text = await (await fetch(`${w.url}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

describe('the checksum trailer', () => {
  it('finds exactly the pages whose bytes changed, for any range and page size', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 0, max: 20_000 }),
        fc.uint8Array({ minLength: 0, maxLength: 20_000 }),
        fc.array(fc.nat(), { maxLength: 3 }),
        (pageSize, offset, bytes, flips) => {
          // The worker's pieces: the part of each page the range covers.
          const crcs: number[] = [];
          for (let pos = 0; pos < bytes.byteLength; ) {
            const end = Math.min(bytes.byteLength, (Math.floor((offset + pos) / pageSize) + 1) * pageSize - offset);
            crcs.push(crc32(bytes.subarray(pos, end)));
            pos = end;
          }
          expect(crcs.length).toBe(pieceCount(offset, bytes.byteLength, pageSize));
          const trailer = encodeTrailer(crcs);
          expect(badPages(bytes, offset, pageSize, trailer)).toEqual([]);
          if (bytes.byteLength === 0) return;
          const bad = new Set<number>();
          const copy = new Uint8Array(bytes);
          for (const f of flips) {
            const i = f % copy.byteLength;
            copy[i] = (copy[i] as number) ^ 0x5a;
            bad.add(Math.floor((offset + i) / pageSize));
          }
          // Two flips of one byte cancel out; every other page with a changed byte is named.
          const changed = [...bad].filter((p) => {
            const from = Math.max(0, p * pageSize - offset);
            const to = Math.min(copy.byteLength, (p + 1) * pageSize - offset);
            return !Buffer.from(copy.subarray(from, to)).equals(Buffer.from(bytes.subarray(from, to)));
          });
          expect(badPages(copy, offset, pageSize, trailer)).toEqual(changed.sort((a, b) => a - b));
        },
      ),
      { seed: 19, numRuns: 300 },
    );
  });

  it('names every page when the trailer has the wrong length', () => {
    expect(badPages(new Uint8Array(3 * PAGE), PAGE / 2, PAGE, new Uint8Array(4))).toEqual([0, 1, 2, 3]);
  });
});

describe('a worker whose answers are corrupted on the way', () => {
  const store = new MemoryUfs();
  const url = 's3://bucket/crc/data.bin';
  const data = randomBytes(3 * MiB + 777);
  let worker: CacheWorker;
  let proxy: FaultProxy;

  beforeAll(async () => {
    await store.write(url, data);
    worker = await startWorker({ id: 'crc0', ufs: store, memoryBytes: 64 * MiB, pageSize: PAGE });
    const port = Number(new URL(worker.url).port);
    proxy = await startFaultProxy({ target: { host: '127.0.0.1', port }, flipBodies: { every: 1 } });
  });

  afterAll(async () => {
    await proxy.close();
    await worker.close();
  });

  it('reads exact bytes from the store, counts each bad part and reports its pages to the worker', async () => {
    // A client per read: a corrupt answer opens the worker's breaker, and each read here must reach the worker.
    const clients = [0, 1].map(() => new CacheClient({ workers: [proxy.url], ufs: store, partSize: 2 * MiB, blockSize: 4 * MiB }));
    const [a, b] = clients as [CacheClient, CacheClient];
    const seen: { pages: number[] }[] = [];
    const onCorrupt = (m: unknown): void => void seen.push(m as { pages: number[] });
    subscribe('granary:client:corrupt', onCorrupt);
    try {
      // A small part (HTTP client), then two large ones (raw sockets), all with partial pages at the ends.
      const small = await a.read(url, 1000, 100 * KiB);
      expect(Buffer.from(small).equals(data.subarray(1000, 1000 + 100 * KiB))).toBe(true);
      const whole = await b.read(url);
      expect(Buffer.from(whole).equals(data)).toBe(true);
      const corrupt = a.stats().corrupt + b.stats().corrupt;
      expect(corrupt).toBe(3);
      expect(proxy.stats().flippedBodies).toBe(3);
      for (const c of clients) {
        expect(c.stats().fallbacks).toBe(c.stats().corrupt);
        expect(c.stats().bytesFromCache).toBe(0);
      }
      // One flipped byte spoils exactly one page of each part.
      expect(seen.map((m) => m.pages.length)).toEqual([1, 1, 1]);
      await waitFor(async () => (await metric(worker, 'granary_worker_corrupt_reports_total')) === corrupt);
    } finally {
      unsubscribe('granary:client:corrupt', onCorrupt);
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  it('refetches a reported page from the store on the next read', async () => {
    const u = 's3://bucket/crc/refetch.bin';
    const bytes = randomBytes(4 * PAGE);
    await store.write(u, bytes);
    const direct = new CacheClient({ workers: [worker.url], ufs: store });
    const flipped = new CacheClient({ workers: [proxy.url], ufs: store });
    try {
      // Warm the worker, then read page 1 through the flipping proxy: the worker drops it.
      expect(Buffer.from(await direct.read(u)).equals(bytes)).toBe(true);
      const gets = store.requestCounts().get;
      const reports = await metric(worker, 'granary_worker_corrupt_reports_total');
      expect(Buffer.from(await flipped.read(u, PAGE, PAGE)).equals(bytes.subarray(PAGE, 2 * PAGE))).toBe(true);
      expect(store.requestCounts().get).toBe(gets + 1);
      await waitFor(async () => (await metric(worker, 'granary_worker_corrupt_reports_total')) >= reports + 1);
      // The worker dropped page 1 only: reading it again makes the worker fetch it.
      const before = store.requestCounts().get;
      expect(Buffer.from(await direct.read(u, PAGE, PAGE)).equals(bytes.subarray(PAGE, 2 * PAGE))).toBe(true);
      expect(store.requestCounts().get).toBe(before + 1);
      expect(Buffer.from(await direct.read(u, 2 * PAGE, PAGE)).equals(bytes.subarray(2 * PAGE, 3 * PAGE))).toBe(true);
      expect(store.requestCounts().get).toBe(before + 1);
      expect(direct.stats().corrupt).toBe(0);
    } finally {
      await direct.close();
      await flipped.close();
    }
  });
});

describe('a worker that sends no checksums', () => {
  let server: Server;
  const store = new MemoryUfs();
  const url = 's3://bucket/crc/old.bin';
  const data = randomBytes(300 * KiB);
  let etag = '';

  beforeAll(async () => {
    ({ etag } = await store.write(url, data));
    // Answers like a worker that predates checksums: the right bytes, no trailer.
    server = createServer((req, res) => {
      const q = new URL(req.url ?? '/', 'http://x').searchParams;
      const offset = Number(q.get('offset'));
      const length = Number(q.get('length'));
      res.setHeader('x-granary-etag', etag);
      res.setHeader('x-granary-cache', 'hit');
      res.setHeader('content-length', length);
      res.end(data.subarray(offset, offset + length));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  });

  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('is a protocol error: counted as corrupt, and the part comes from the store', async () => {
    const client = new CacheClient({ workers: [`http://127.0.0.1:${(server.address() as AddressInfo).port}`], ufs: store });
    try {
      expect(Buffer.from(await client.read(url, 10, 1000, { etag })).equals(data.subarray(10, 1010))).toBe(true);
      expect(client.stats().corrupt).toBe(1);
      expect(client.stats().fallbacks).toBe(1);
      expect(client.stats().bytesFromUfs).toBe(1000);
    } finally {
      await client.close();
    }
  });

  it('is served as it is to a client built with `checksums: false`', async () => {
    const client = new CacheClient({ workers: [`http://127.0.0.1:${(server.address() as AddressInfo).port}`], ufs: store, checksums: false });
    try {
      expect(Buffer.from(await client.read(url, 10, 1000, { etag })).equals(data.subarray(10, 1010))).toBe(true);
      expect(client.stats().corrupt).toBe(0);
      expect(client.stats().fallbacks).toBe(0);
      expect(client.stats().bytesFromCache).toBe(1000);
    } finally {
      await client.close();
    }
  });
});

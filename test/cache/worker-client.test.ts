import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { deferred } from '../support/wait.js';

const MiB = 1024 * 1024;

describe('cache worker and client over a memory store', () => {
  const store = new MemoryUfs();
  const data = randomBytes(5 * MiB + 123);
  const url = 's3://bucket/train/big.bin';
  let workers: CacheWorker[] = [];

  beforeAll(async () => {
    await store.write(url, data);
    for (let i = 0; i < 10; i++) await store.write(`s3://bucket/train/small-${i}.bin`, randomBytes(1000 + i));
    workers = await Promise.all([0, 1, 2].map((i) => startWorker({ id: `w${i}`, ufs: store, memoryBytes: 64 * MiB, pageSize: 256 * 1024 })));
  });

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.close()));
  });

  it('reads exact bytes through the workers, and a warm read asks the store nothing', async () => {
    const client = new CacheClient({ workers: workers.map((w) => w.url), ufs: store, blockSize: MiB, partSize: 512 * 1024 });
    try {
      const before = store.requestCounts();
      const cold = await client.read(url, 100, data.byteLength - 200);
      expect(Buffer.from(cold).equals(data.subarray(100, data.byteLength - 100))).toBe(true);
      const mid = store.requestCounts();
      expect(mid.get).toBeGreaterThan(before.get);
      const warm = await client.read(url, 0, data.byteLength);
      expect(Buffer.from(warm).equals(data)).toBe(true);
      const after = store.requestCounts();
      // The first 100 bytes were on a page already cached: a warm read makes no store request of any kind.
      expect(after).toEqual(mid);
      expect(client.stats().fallbacks).toBe(0);
      expect(client.stats().bytesFromCache).toBe(2 * data.byteLength - 200);
    } finally {
      await client.close();
    }
  });

  it('collapses concurrent misses for one page into one store read', async () => {
    const u = 's3://bucket/train/flight.bin';
    const bytes = randomBytes(200_000);
    await store.write(u, bytes);
    const client = new CacheClient({ workers: [workers[0]!.url], ufs: store });
    try {
      await client.stat(u);
      const before = store.requestCounts().get;
      const reads = await Promise.all(Array.from({ length: 20 }, (_, i) => client.read(u, i * 1000, 5000)));
      reads.forEach((r, i) => expect(Buffer.from(r).equals(bytes.subarray(i * 1000, i * 1000 + 5000))).toBe(true));
      expect(store.requestCounts().get - before).toBe(1);
    } finally {
      await client.close();
    }
  });

  it('returns the right bytes for many small reads at once, each in memory of its own', async () => {
    // Reads under 4 KiB once shared the start of Node's 8 KiB Buffer pool: concurrent ones overwrote each other.
    const client = new CacheClient({ workers: workers.map((w) => w.url), ufs: store, blockSize: MiB, partSize: 512 * 1024 });
    try {
      const small = await Promise.all(Array.from({ length: 10 }, (_, i) => store.read(`s3://bucket/train/small-${i}.bin`, 0, 1000 + i)));
      for (let round = 0; round < 2; round++) {
        const reads = await Promise.all(
          Array.from({ length: 40 }, (_, k) => {
            const i = k % 10;
            const at = (k * 7) % 500;
            return client.read(`s3://bucket/train/small-${i}.bin`, at, 300 + k).then((got) => ({ got, want: (small[i] as Uint8Array).subarray(at, at + 300 + k) }));
          }),
        );
        for (const { got, want } of reads) expect(Buffer.from(got).equals(want)).toBe(true);
        // Each result owns its memory: none shares an ArrayBuffer with another.
        expect(new Set(reads.map((r) => r.got.buffer)).size).toBe(reads.length);
      }
    } finally {
      await client.close();
    }
  });

  it('a second client (another job) is served from the cache the first one filled', async () => {
    const prefix = 's3://bucket/train/small-';
    const a = new CacheClient({ workers: workers.map((w) => w.url), ufs: store });
    const b = new CacheClient({ workers: workers.map((w) => w.url), ufs: store });
    try {
      for await (const f of a.list(prefix)) await a.read(f.url, 0, f.size);
      const before = store.requestCounts();
      let n = 0;
      for await (const f of b.list(prefix)) {
        expect((await b.read(f.url, 0, f.size)).byteLength).toBe(f.size);
        n++;
      }
      expect(n).toBe(10);
      expect(store.requestCounts()).toEqual(before);
      expect(b.stats().ufsRequests).toBe(0);
      expect(b.stats().misses).toBe(0);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('serves an overwritten object at its new version once the metadata TTL has passed', async () => {
    const u = 's3://bucket/train/changing.bin';
    await store.write(u, Buffer.from('version-one'));
    const client = new CacheClient({ workers: workers.map((w) => w.url), ufs: store, metadataTtlMs: 0 });
    try {
      expect(Buffer.from(await client.read(u, 0, 11)).toString()).toBe('version-one');
      await store.write(u, Buffer.from('VERSION-TWO'));
      expect(Buffer.from(await client.read(u, 0, 11)).toString()).toBe('VERSION-TWO');
    } finally {
      await client.close();
    }
  });

  it('falls back to the store, once per read, when the only worker refuses connections', async () => {
    const dead = await startWorker({ ufs: store });
    const deadUrl = dead.url;
    await dead.close();
    const client = new CacheClient({ workers: [deadUrl], ufs: store, breaker: { cooldownMs: 60_000 } });
    try {
      const before = store.requestCounts().get;
      const got = await client.read(url, 0, 3 * MiB);
      expect(Buffer.from(got).equals(data.subarray(0, 3 * MiB))).toBe(true);
      expect(client.stats().fallbacks).toBeGreaterThan(0);
      // One stat + one store read per part, no retries.
      expect(store.requestCounts().get - before).toBe(client.stats().ufs.get);
    } finally {
      await client.close();
    }
  });

  it('falls back when a worker answers garbage', async () => {
    const liar: Server = createServer((req, res) => {
      if (req.url?.startsWith('/v1/read')) {
        res.setHeader('x-granary-etag', 'not-the-version');
        res.end('garbage');
      } else {
        res.statusCode = 500;
        res.end('{oops');
      }
    });
    await new Promise<void>((r) => liar.listen(0, '127.0.0.1', () => r()));
    const client = new CacheClient({ workers: [`http://127.0.0.1:${(liar.address() as AddressInfo).port}`], ufs: store });
    try {
      const got = await client.read(url, 10, 1000);
      expect(Buffer.from(got).equals(data.subarray(10, 1010))).toBe(true);
      expect(client.stats().fallbacks).toBeGreaterThan(0);
    } finally {
      await client.close();
      await new Promise<void>((r) => liar.close(() => r()));
    }
  });

  it('answers bad requests with a 4xx and a JSON {code, message}, and keeps serving', async () => {
    const w = workers[0]!;
    const cases: [string, number, string][] = [
      ['/v1/read?url=ftp%3A%2F%2Fx%2Fy&offset=0&length=1', 400, 'GRANARY_ERR_UNSUPPORTED_SCHEME'],
      ['/v1/read?url=nonsense&offset=0&length=1', 400, 'GRANARY_ERR_INVALID_URL'],
      [`/v1/read?url=${encodeURIComponent(url)}&offset=-5&length=1`, 400, 'GRANARY_ERR_INVALID_ARGUMENT'],
      [`/v1/read?url=${encodeURIComponent(url)}&offset=0&length=99999999999`, 400, 'GRANARY_ERR_RANGE_TOO_LARGE'],
      [`/v1/read?url=${encodeURIComponent(url)}&offset=abc&length=1`, 400, 'GRANARY_ERR_BAD_REQUEST'],
      [`/v1/read?url=${encodeURIComponent(url)}&offset=${data.byteLength}&length=10`, 416, 'GRANARY_ERR_RANGE'],
      ['/v1/read?offset=0&length=1', 400, 'GRANARY_ERR_BAD_REQUEST'],
      ['/v1/read?%%%garbage=&&=', 400, 'GRANARY_ERR_BAD_REQUEST'],
      ['/v1/nope', 400, 'GRANARY_ERR_BAD_REQUEST'],
      [`/v1/stat?url=${encodeURIComponent('s3://bucket/missing')}`, 404, 'GRANARY_ERR_NOT_FOUND'],
    ];
    for (const [path, status, code] of cases) {
      const res = await fetch(w.url + path);
      expect(res.status, path).toBe(status);
      const body = (await res.json()) as { code: string; message: string };
      expect(body.code, path).toBe(code);
      expect(body.message.length).toBeGreaterThan(0);
    }
    expect((await fetch(`${w.url}/healthz`)).status).toBe(200);
  });

  it('enforces its token and its allowed prefixes', async () => {
    const w = await startWorker({ ufs: store, token: 's3cret', allow: ['s3://bucket/train/'] });
    try {
      expect((await fetch(`${w.url}/healthz`)).status).toBe(200);
      const noAuth = await fetch(`${w.url}/v1/info`);
      expect(noAuth.status).toBe(401);
      expect(((await noAuth.json()) as { code: string }).code).toBe('GRANARY_ERR_UNAUTHORIZED');
      const auth = { headers: { authorization: 'Bearer s3cret' } };
      expect((await fetch(`${w.url}/v1/info`, auth)).status).toBe(200);
      const denied = await fetch(`${w.url}/v1/stat?url=${encodeURIComponent('s3://bucket/secret/x')}`, auth);
      expect(denied.status).toBe(403);
      expect(((await denied.json()) as { code: string }).code).toBe('GRANARY_ERR_FORBIDDEN_PREFIX');
      const client = new CacheClient({ workers: [w.url], ufs: store, token: 's3cret' });
      try {
        expect(Buffer.from(await client.read(url, 0, 100)).equals(data.subarray(0, 100))).toBe(true);
        expect(client.stats().fallbacks).toBe(0);
      } finally {
        await client.close();
      }
    } finally {
      await w.close();
    }
  });

  it('exposes Prometheus metrics and usage', async () => {
    const w = workers[1]!;
    const text = await (await fetch(`${w.url}/metrics`)).text();
    for (const name of ['granary_worker_page_hits_total', 'granary_worker_page_misses_total', 'granary_worker_store_requests_total', 'granary_worker_cache_bytes']) {
      expect(text).toContain(name);
    }
    const info = w.info();
    expect(info.usage.memoryBytes).toBeGreaterThan(0);
    expect(info.usage.memoryBytes).toBeLessThanOrEqual(info.capacity.memoryBytes + w.pageSize);
  });
});

describe('cache client details', () => {
  it('invalidates worker and client caches when it writes or deletes through the cache', async () => {
    const store = new MemoryUfs();
    const w = await startWorker({ ufs: store, metadataTtlMs: 600_000 });
    const client = new CacheClient({ workers: [w.url], ufs: store, metadataTtlMs: 600_000 });
    try {
      const u = 's3://bucket/rw/obj.bin';
      await client.write(u, Buffer.from('first version'));
      expect(Buffer.from(await client.read(u, 0, 5)).toString()).toBe('first');
      await client.write(u, Buffer.from('SECOND VERSION!'));
      expect((await client.stat(u)).size).toBe(15);
      expect(Buffer.from(await client.read(u, 0, 6)).toString()).toBe('SECOND');
      // Another client, with nothing cached itself, sees the new version through the worker at once despite the long TTL.
      const other = new CacheClient({ workers: [w.url], ufs: store, metadataTtlMs: 600_000 });
      const third = new CacheClient({ workers: [w.url], ufs: store, metadataTtlMs: 600_000 });
      try {
        expect((await other.stat(u)).size).toBe(15);
        await client.delete(u);
        await expect(third.stat(u)).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND' });
      } finally {
        await other.close();
        await third.close();
      }
      expect(w.info().usage.memoryPages).toBe(0);
    } finally {
      await client.close();
      await w.close();
    }
  });

  it('answers repeated reads from its local page cache without asking a worker', async () => {
    const store = new MemoryUfs();
    const data = randomBytes(3 * MiB + 5);
    await store.write('s3://bucket/local/x.bin', data);
    const w = await startWorker({ ufs: store });
    const client = new CacheClient({ workers: [w.url], ufs: store, localCache: { memoryBytes: 16 * MiB } });
    try {
      const a = await client.read('s3://bucket/local/x.bin', 1000, 2 * MiB);
      expect(Buffer.from(a).equals(data.subarray(1000, 1000 + 2 * MiB))).toBe(true);
      const served = w.info().counters.bytesServed;
      const b = await client.read('s3://bucket/local/x.bin', 5000, MiB);
      expect(Buffer.from(b).equals(data.subarray(5000, 5000 + MiB))).toBe(true);
      expect(w.info().counters.bytesServed).toBe(served);
      const tail = await client.read('s3://bucket/local/x.bin', 3 * MiB, 5);
      expect(Buffer.from(tail).equals(data.subarray(3 * MiB))).toBe(true);
    } finally {
      await client.close();
      await w.close();
    }
  });

  it('never returns bytes that mix two versions while an object is overwritten during reads', async () => {
    const store = new MemoryUfs();
    const u = 's3://bucket/race/obj.bin';
    const size = 2 * MiB;
    const version = (n: number): Buffer => Buffer.alloc(size, n);
    await store.write(u, version(1));
    const ws = await Promise.all([0, 1].map(() => startWorker({ ufs: store, pageSize: 128 * 1024, metadataTtlMs: 0 })));
    const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: store, metadataTtlMs: 0, blockSize: 256 * 1024, partSize: 128 * 1024 });
    try {
      const seen = new Set<number>();
      for (let v = 2; v < 40; v++) {
        // Start a read, let it get going, then overwrite the object under it.
        const reading = client.read(u, 0, size).then(
          (got) => {
            const first = got[0]!;
            // Every byte of one read comes from one version.
            expect(got.every((b) => b === first)).toBe(true);
            seen.add(first);
          },
          (err: unknown) => {
            // An object that changed on every retry is reported, never patched together.
            expect((err as { code?: string }).code).toBe('GRANARY_ERR_VERSION_CHANGED');
          },
        );
        for (let i = 0; i < v % 5; i++) await new Promise((r) => setImmediate(r));
        await store.write(u, version(v));
        await reading;
      }
      expect(seen.size).toBeGreaterThan(1);
      expect(Buffer.from(await client.read(u, 0, size)).equals(version(39))).toBe(true);
    } finally {
      await client.close();
      await Promise.all(ws.map((w) => w.close()));
    }
  });
});

describe('cache worker edge cases', () => {
  it('refuses file:// path traversal and URLs outside its root with a coded 400', async () => {
    const root = await mkdtemp(join(tmpdir(), 'granary-worker-root-'));
    await writeFile(join(root, 'ok.bin'), 'fine');
    const w = await startWorker({ fileRoot: root });
    try {
      const ok = await fetch(`${w.url}/v1/read?url=${encodeURIComponent(pathToFileURL(join(root, 'ok.bin')).href)}&offset=0&length=4`);
      expect(ok.status).toBe(200);
      expect(await ok.text()).toBe('fine');
      for (const bad of [`file://${root}/../../etc/passwd`, `file://${root}/%2e%2e/%2e%2e/etc/passwd`, 'file:///etc/passwd']) {
        const res = await fetch(`${w.url}/v1/read?url=${encodeURIComponent(bad)}&offset=0&length=1`);
        expect(res.status, bad).toBe(400);
        expect(((await res.json()) as { code: string }).code, bad).toBe('GRANARY_ERR_PATH_ESCAPE');
      }
    } finally {
      await w.close();
      await rm(root, { recursive: true, force: true });
    }
  });

  it('reads from the next worker on the ring when replication is on and the owner is down', async () => {
    const store = new MemoryUfs();
    const data = randomBytes(4 * MiB);
    await store.write('s3://bucket/rep/x.bin', data);
    const ws = await Promise.all([0, 1, 2].map((i) => startWorker({ id: `r${i}`, ufs: store })));
    const urls = ws.map((w) => w.url);
    await ws[0]!.close();
    const client = new CacheClient({ workers: urls, ufs: store, replicas: 2, blockSize: 256 * 1024, partSize: 256 * 1024 });
    try {
      const got = await client.read('s3://bucket/rep/x.bin', 0, data.byteLength);
      expect(Buffer.from(got).equals(data)).toBe(true);
      // Every block had a live replica: nothing was read from the store by the client itself.
      expect(client.stats().fallbacks).toBe(0);
      expect(client.stats().ufs.get).toBe(0);
    } finally {
      await client.close();
      await Promise.all(ws.slice(1).map((w) => w.close()));
    }
  });
});

describe('large parts read straight into the output', () => {
  it('falls back to the store, with exact bytes, whatever a bad worker does to a large read', async () => {
    const store = new MemoryUfs();
    const data = randomBytes(3 * MiB);
    const u = 's3://bucket/raw/x.bin';
    const { etag } = await store.write(u, data);
    const behaviours: Record<string, (res: ServerResponse) => void> = {
      'wrong version': (res) => {
        res.setHeader('x-granary-etag', 'other');
        res.setHeader('content-length', 3 * MiB);
        res.end(Buffer.alloc(3 * MiB));
      },
      'short body, then close': (res) => {
        res.setHeader('x-granary-etag', etag);
        res.setHeader('content-length', 3 * MiB);
        res.write(Buffer.alloc(1000));
        res.destroy();
      },
      'chunked, no content-length': (res) => {
        res.setHeader('x-granary-etag', etag);
        res.write(data.subarray(0, MiB));
        res.end(data.subarray(MiB));
      },
      '500 with a JSON body': (res) => {
        res.statusCode = 500;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ code: 'GRANARY_ERR_INTERNAL', message: 'boom' }));
      },
      'connection dropped at once': (res) => {
        res.socket?.destroy();
      },
    };
    for (const [name, behave] of Object.entries(behaviours)) {
      const server = createServer((req, res) => {
        if (req.url?.startsWith('/v1/read')) behave(res);
        else {
          res.statusCode = 500;
          res.end('{}');
        }
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      const client = new CacheClient({ workers: [`http://127.0.0.1:${(server.address() as AddressInfo).port}`], ufs: store });
      try {
        const got = await client.read(u, 0, data.byteLength, { etag });
        expect(Buffer.from(got).equals(data), name).toBe(true);
        expect(client.stats().fallbacks, name).toBeGreaterThan(0);
      } finally {
        await client.close();
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      }
    }
  });

  it("passes a worker's coded answer to the caller, on large and small reads alike, without reading the store", async () => {
    const store = new MemoryUfs();
    const u = 's3://bucket/raw/coded.bin';
    const { etag } = await store.write(u, randomBytes(3 * MiB));
    const body = JSON.stringify({ code: 'GRANARY_ERR_NOT_FOUND', message: `no ${u}` });
    const server = createServer((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const client = new CacheClient({ workers: [`http://127.0.0.1:${(server.address() as AddressInfo).port}`], ufs: store });
    try {
      await expect(client.read(u, 0, 2 * MiB, { etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND', url: u });
      await expect(client.read(u, 0, 1000, { etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND', url: u });
      expect(client.stats().fallbacks).toBe(0);
      expect(client.stats().ufsRequests).toBe(0);
    } finally {
      await client.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('rejects with the signal reason when a large read is aborted', async () => {
    const store = new MemoryUfs();
    await store.write('s3://bucket/raw/y.bin', randomBytes(4 * MiB));
    const asked = deferred();
    const server = createServer(() => asked.resolve()); // never answers
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const client = new CacheClient({ workers: [`http://127.0.0.1:${(server.address() as AddressInfo).port}`], ufs: store });
    try {
      const ac = new AbortController();
      const info = await store.stat('s3://bucket/raw/y.bin');
      const p = client.read('s3://bucket/raw/y.bin', 0, 4 * MiB, { etag: info.etag, signal: ac.signal });
      await asked.promise;
      ac.abort(new Error('caller gave up'));
      await expect(p).rejects.toThrow('caller gave up');
    } finally {
      await client.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { ufsFromSpec, ufsSpecOf, type UfsSpec } from '../../src/loader/portable-fs.js';
import { registerRebuilder, toPortable, type PortableSpec } from '../../src/ufs/portable.js';
import { HttpUfs } from '../../src/ufs/http.js';
import { LocalUfs } from '../../src/ufs/local.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { createUfs } from '../../src/ufs/router.js';
import { S3Ufs } from '../../src/ufs/s3.js';
import type { UnderFileSystem } from '../../src/ufs/types.js';
import { startHttpServer, type TestHttpServer } from '../support/http-server.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';

const KiB = 1024;
/** What a cache client's spec carries besides its options: the hub of the state its copies here share. */
const share = { channel: expect.stringMatching(/^granary:hub:/) as unknown, pid: process.pid };
const data = randomBytes(300 * KiB + 17);

/** spec -> structuredClone (as postMessage would) -> a new client; the spec is checked first. */
function rebuild(fs: UnderFileSystem): { spec: UfsSpec; copy: UnderFileSystem } {
  const spec = ufsSpecOf(fs);
  expect(spec).toBeDefined();
  const cloned = structuredClone(spec!);
  expect(cloned).toEqual(spec);
  return { spec: cloned, copy: ufsFromSpec(cloned) };
}

/** The rebuilt client reads the same bytes and stats the same version as the original. */
async function expectEquivalent(original: UnderFileSystem, copy: UnderFileSystem, url: string): Promise<void> {
  const [a, b] = await Promise.all([original.stat(url), copy.stat(url)]);
  expect(b.size).toBe(a.size);
  expect(b.etag).toBe(a.etag);
  const want = data.subarray(1234, 1234 + 200 * KiB);
  const fromCopy = await copy.read(url, 1234, 200 * KiB);
  const fromOriginal = await original.read(url, 1234, 200 * KiB);
  expect(Buffer.from(fromCopy).equals(want)).toBe(true);
  expect(Buffer.from(fromOriginal).equals(want)).toBe(true);
}

describe('portable store specs', () => {
  let dir: string;
  let fileUrl: string;
  let s3: S3rverHandle;
  let http: TestHttpServer;
  let worker: CacheWorker;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'granary-portable-'));
    await writeFile(join(dir, 'data.bin'), data);
    fileUrl = pathToFileURL(join(dir, 'data.bin')).href;
    s3 = await startS3rver();
    http = await startHttpServer({ root: dir });
    worker = await startWorker({ fileRoot: dir, memoryBytes: 16 * 1024 * KiB, pageSize: 64 * KiB });
  }, 60_000);

  afterAll(async () => {
    await worker?.close();
    await http?.close();
    await s3?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('rebuilds a LocalUfs that reads the same bytes, with its jail resolved', async () => {
    const fs = new LocalUfs({ root: dir, fsync: false });
    const { spec, copy } = rebuild(fs);
    try {
      expect(spec).toEqual({ kind: 'local', options: { root: dir, fsync: false } });
      expect(copy).toBeInstanceOf(LocalUfs);
      await expectEquivalent(fs, copy, fileUrl);
    } finally {
      await copy.close();
      await fs.close();
    }
  });

  it('rebuilds an S3Ufs against s3rver with its static credentials', async () => {
    const opts = {
      endpoint: s3.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      partSize: 64 * KiB,
      parallelism: 3,
    };
    const fs = new S3Ufs(opts);
    const url = 's3://test/portable/data.bin';
    await fs.write(url, data);
    const { spec, copy } = rebuild(fs);
    try {
      expect(spec).toEqual({ kind: 's3', options: opts });
      expect(copy).toBeInstanceOf(S3Ufs);
      await expectEquivalent(fs, copy, url);
    } finally {
      await copy.close();
      await fs.close();
    }
  });

  it('rebuilds an HttpUfs over a loopback server, headers included', async () => {
    const fs = new HttpUfs({ headers: { 'X-Job': 'portable' }, maxAttempts: 2, timeoutMs: 10_000 });
    const { spec, copy } = rebuild(fs);
    try {
      expect(spec).toEqual({ kind: 'http', options: { headers: { 'X-Job': 'portable' }, maxAttempts: 2, timeoutMs: 10_000 } });
      expect(copy).toBeInstanceOf(HttpUfs);
      await expectEquivalent(fs, copy, `${http.url}data.bin`);
    } finally {
      await copy.close();
      await fs.close();
    }
  });

  it('rebuilds the router from createUfs, serving every scheme it was configured for', async () => {
    const fs = createUfs({
      s3: { endpoint: s3.endpoint, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, sessionToken: 'unused' } },
      file: { root: dir },
      http: { retryBaseMs: 5 },
    });
    const { spec, copy } = rebuild(fs);
    try {
      expect(spec.kind).toBe('router');
      await expectEquivalent(fs, copy, fileUrl);
      await expectEquivalent(fs, copy, 's3://test/portable/data.bin');
      await expectEquivalent(fs, copy, `${http.url}data.bin`);
    } finally {
      await copy.close();
      await fs.close();
    }
  });

  it('rebuilds a CacheClient in front of a real worker, reading from the cache', async () => {
    const fs = new CacheClient({
      workers: [worker.url],
      ufs: { file: { root: dir } },
      blockSize: 128 * KiB,
      partSize: 64 * KiB,
      concurrency: 4,
      metadataTtlMs: 5000,
      requestTimeoutMs: 8000,
      breaker: { cooldownMs: 500 },
      replicas: 1,
    });
    const { spec, copy } = rebuild(fs);
    try {
      expect(spec).toEqual({
        kind: 'cache',
        options: {
          workers: [worker.url],
          ufs: { file: { root: dir } },
          blockSize: 128 * KiB,
          partSize: 64 * KiB,
          concurrency: 4,
          metadataTtlMs: 5000,
          requestTimeoutMs: 8000,
          breaker: { cooldownMs: 500 },
          replicas: 1,
        },
        share,
      });
      expect(copy).toBeInstanceOf(CacheClient);
      await expectEquivalent(fs, copy, fileUrl);
      const stats = (copy as CacheClient).stats();
      expect(stats.bytesFromCache).toBe(200 * KiB);
      expect(stats.fallbacks).toBe(0);
    } finally {
      await copy.close();
      await fs.close();
    }
  });

  it('describes a CacheClient given a live store client by that client’s spec, and the copy closes the store it built', async () => {
    const store = new LocalUfs({ root: dir });
    const fs = new CacheClient({ workers: [worker.url], ufs: store, token: 't', etcd: undefined });
    const { spec, copy } = rebuild(fs);
    try {
      expect(spec).toEqual({ kind: 'cache', options: { workers: [worker.url], ufs: { kind: 'local', options: { root: dir, fsync: true } }, token: 't' }, share });
      // The copy describes itself the same way (its store is a client it owns).
      expect(ufsSpecOf(copy)).toEqual(spec);
      await expectEquivalent(fs, copy, fileUrl);
    } finally {
      await copy.close();
      await copy.close();
      await fs.close();
      await store.close();
    }
    await expect(copy.read(fileUrl, 0, 1)).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
  });

  it('keeps the local cache memory tier but drops its disk directory', async () => {
    const fs = new CacheClient({
      workers: [],
      ufs: { file: { root: dir } },
      localCache: { memoryBytes: 4 * 1024 * KiB, pageSize: 64 * KiB, diskDir: join(dir, 'disk'), diskBytes: 1024 * 1024 * KiB },
    });
    const { spec, copy } = rebuild(fs);
    try {
      expect(spec).toEqual({ kind: 'cache', options: { workers: [], ufs: { file: { root: dir } }, localCache: { memoryBytes: 4 * 1024 * KiB, pageSize: 64 * KiB } }, share });
      await expectEquivalent(fs, copy, fileUrl);
    } finally {
      await copy.close();
      await fs.close();
    }
  });

  it('carries etcd membership options', async () => {
    const fs = new CacheClient({ etcd: { endpoints: ['http://127.0.0.1:1'], cluster: 'c1' }, ufs: { file: { root: dir } } });
    try {
      expect(ufsSpecOf(fs)).toEqual({ kind: 'cache', options: { etcd: { endpoints: ['http://127.0.0.1:1'], cluster: 'c1' }, ufs: { file: { root: dir } } }, share });
    } finally {
      await fs.close();
    }
  });

  it('gives no spec for what cannot be rebuilt elsewhere', async () => {
    const memory = new MemoryUfs();
    const routed = createUfs({ adapters: [memory] });
    const dispatcher = new Agent();
    const withDispatcher = new HttpUfs({ dispatcher });
    const routedDispatcher = createUfs({ http: { dispatcher } });
    const cacheOverMemory = new CacheClient({ workers: [], ufs: memory });
    const cacheOverAdapters = new CacheClient({ workers: [], ufs: { adapters: [memory] } });
    const withClock = new CacheClient({ workers: [], breaker: { now: () => 0 } });
    class Custom extends LocalUfs {}
    const sub = new Custom({ root: dir });
    try {
      expect(ufsSpecOf(memory)).toBeUndefined();
      expect(ufsSpecOf(routed)).toBeUndefined();
      expect(ufsSpecOf(withDispatcher)).toBeUndefined();
      expect(ufsSpecOf(routedDispatcher)).toBeUndefined();
      expect(ufsSpecOf(cacheOverMemory)).toBeUndefined();
      expect(ufsSpecOf(cacheOverAdapters)).toBeUndefined();
      expect(ufsSpecOf(withClock)).toBeUndefined();
      expect(ufsSpecOf(sub)).toBeUndefined();
      expect(ufsSpecOf({ read: () => new Uint8Array(), portableSpec: () => ({ kind: 'local', options: {} }) })).toBeUndefined();
      expect(ufsSpecOf(undefined)).toBeUndefined();
      expect(ufsSpecOf('file:///')).toBeUndefined();
    } finally {
      await Promise.all([memory, routed, withDispatcher, routedDispatcher, cacheOverMemory, cacheOverAdapters, withClock, sub].map((c) => c.close()));
      await dispatcher.close();
    }
  });

  it('gives no spec for S3 credentials given as a provider function', async () => {
    const provider = async (): Promise<{ accessKeyId: string; secretAccessKey: string }> => ({ accessKeyId: 'a', secretAccessKey: 'b' });
    // Typed options only take static keys; a JS caller can still pass the SDK's provider shape.
    const routed = createUfs({ s3: { credentials: provider as unknown as { accessKeyId: string; secretAccessKey: string } } });
    try {
      expect(ufsSpecOf(routed)).toBeUndefined();
    } finally {
      await routed.close();
    }
  });

  it('rebuilds a client of a kind registered from outside the loader, and a subclass that describes itself', async () => {
    /** A store the loader has never heard of: a jail under `root`, described as its own kind. */
    class Jailed extends LocalUfs {
      override [toPortable](): PortableSpec {
        return { kind: 'test:jailed', options: { root: this.root } };
      }
    }
    registerRebuilder('test:jailed', (s) => new Jailed(s.options as { root: string }));
    const fs = new Jailed({ root: dir });
    const { spec, copy } = rebuild(fs);
    try {
      expect(spec).toEqual({ kind: 'test:jailed', options: { root: dir } });
      expect(copy).toBeInstanceOf(Jailed);
      await expectEquivalent(fs, copy, fileUrl);
      // A cache client in front of it describes it by its own spec.
      const cache = new CacheClient({ workers: [worker.url], ufs: fs });
      try {
        expect(ufsSpecOf(cache)).toEqual({ kind: 'cache', options: { workers: [worker.url], ufs: spec }, share });
      } finally {
        await cache.close();
      }
    } finally {
      await copy.close();
      await fs.close();
    }
  });

  it('builds a cache client of its own from a spec taken to another process', async () => {
    const fs = new CacheClient({ workers: [worker.url], ufs: { file: { root: dir } } });
    const spec = ufsSpecOf(fs)!;
    // Another process has no hub of that name: the copy must not wait for one.
    const elsewhere = { ...spec, share: { ...(spec.share as object), pid: process.pid + 1 } };
    const copy = ufsFromSpec(elsewhere) as CacheClient;
    try {
      await copy.ready();
      expect(copy.workers().map((w) => w.url)).toEqual([worker.url]);
      // It has a hub of its own for its own copies.
      expect((ufsSpecOf(copy)?.share as { channel: string }).channel).not.toBe((spec.share as { channel: string }).channel);
      await expectEquivalent(fs, copy, fileUrl);
      expect(copy.stats().fallbacks).toBe(0);
    } finally {
      await copy.close();
      await fs.close();
    }
  });

  it('refuses a spec of an unknown kind with a coded error', () => {
    expect(() => ufsFromSpec({ kind: 'ftp', options: {} })).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_INVALID_ARGUMENT' }));
  });
});

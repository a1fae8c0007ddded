/**
 * One conformance suite for every UnderFileSystem backend: each backend's test
 * file calls `describeConformance` with a factory that starts the real server.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileInfo, StoreAdapter, UnderFileSystem } from '../../src/ufs/types.js';

export interface ConformanceBackend {
  ufs: UnderFileSystem;
  /** A prefix URL, ending in '/', that this suite owns (empty at start). */
  base: string;
  /** The canonical URL of a key under `base` (defaults to `base + rel`). */
  urlFor?(rel: string): string;
  /** Create an object behind the adapter's back; defaults to `ufs.write`. Needed for read-only adapters. */
  put?(rel: string, bytes: Uint8Array): Promise<void>;
  /** Replace an object's content (a new version); defaults to `put`. */
  overwrite?(rel: string, bytes: Uint8Array): Promise<void>;
  /** A client for the same store with wrong credentials; omitted where the store has none. */
  badCredentials?(): UnderFileSystem;
  /** A URL in a bucket that does not exist; omitted where the store has no buckets. */
  missingBucketUrl?: string;
  /** Whether `list` works through the adapter. */
  listable: boolean;
  /** Keys to create for the pagination test (default 1,050, more than one 1,000-key page). */
  paginationKeys?: number;
  close(): Promise<void>;
}

async function collect(it: AsyncIterable<FileInfo>): Promise<FileInfo[]> {
  const out: FileInfo[] = [];
  for await (const f of it) out.push(f);
  return out;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return String((err as { code?: unknown }).code ?? (err as { name?: unknown }).name);
  }
  return 'resolved';
}

/**
 * What a backend can do, known before it starts. Tests of what it cannot do are not
 * defined at all (rather than skipped), so a skip always means a missing server.
 */
export interface ConformanceCapabilities {
  /** `write` and `delete` work through the adapter. */
  writable: boolean;
  /** The store has buckets (a missing bucket is its own error). */
  buckets: boolean;
  /** The store checks credentials (`badCredentials` is given). */
  credentials: boolean;
}

export function describeConformance(
  name: string,
  caps: ConformanceCapabilities,
  start: () => Promise<ConformanceBackend | undefined>,
): void {
  describe(`UFS conformance: ${name}`, () => {
    let b: ConformanceBackend;
    let skip = false;
    const url = (rel: string): string => (b.urlFor ? b.urlFor(rel) : b.base + rel);
    const put = async (rel: string, bytes: Uint8Array): Promise<void> => {
      if (b.put) await b.put(rel, bytes);
      else await b.ufs.write(url(rel), bytes);
    };
    const big = randomBytes(3 * 1024 * 1024 + 17);

    beforeAll(async () => {
      const started = await start();
      if (!started) {
        skip = true;
        return;
      }
      b = started;
      await put('data/big.bin', big);
      await put('data/empty.bin', new Uint8Array(0));
    }, 120_000);

    afterAll(async () => {
      if (!skip) await b.close();
    }, 60_000);

    it('stats an object with its size and a version tag', async (ctx) => {
      if (skip) return ctx.skip();
      const info = await b.ufs.stat(url('data/big.bin'));
      expect(info.size).toBe(big.byteLength);
      expect(info.etag.length).toBeGreaterThan(0);
      expect(info.url).toBe(url('data/big.bin'));
    });

    it('reads exact bytes at the start, middle and end of an object', async (ctx) => {
      if (skip) return ctx.skip();
      const u = url('data/big.bin');
      for (const [off, len] of [
        [0, 1],
        [0, 4096],
        [1_000_003, 777_777],
        [big.byteLength - 1, 1],
        [big.byteLength - 100_000, 100_000],
        [0, big.byteLength],
      ] as const) {
        const got = await b.ufs.read(u, off, len);
        expect(got.byteLength).toBe(len);
        expect(Buffer.from(got).equals(big.subarray(off, off + len))).toBe(true);
      }
    });

    it('returns empty arrays for zero-length reads, including at EOF and of an empty object', async (ctx) => {
      if (skip) return ctx.skip();
      expect((await b.ufs.read(url('data/big.bin'), 5, 0)).byteLength).toBe(0);
      expect((await b.ufs.read(url('data/big.bin'), big.byteLength, 0)).byteLength).toBe(0);
      expect((await b.ufs.read(url('data/empty.bin'), 0, 0)).byteLength).toBe(0);
      expect((await b.ufs.stat(url('data/empty.bin'))).size).toBe(0);
    });

    it('rejects reads past EOF with GRANARY_ERR_RANGE', async (ctx) => {
      if (skip) return ctx.skip();
      const u = url('data/big.bin');
      expect(await codeOf(b.ufs.read(u, big.byteLength - 10, 11))).toBe('GRANARY_ERR_RANGE');
      expect(await codeOf(b.ufs.read(u, big.byteLength + 10, 5))).toBe('GRANARY_ERR_RANGE');
      expect(await codeOf(b.ufs.read(u, big.byteLength + 1, 0))).toBe('GRANARY_ERR_RANGE');
      expect(await codeOf(b.ufs.read(url('data/empty.bin'), 0, 1))).toBe('GRANARY_ERR_RANGE');
    });

    it('rejects negative, fractional and NaN offsets and lengths with GRANARY_ERR_INVALID_ARGUMENT', async (ctx) => {
      if (skip) return ctx.skip();
      const u = url('data/big.bin');
      for (const [off, len] of [
        [-1, 10],
        [0, -5],
        [Number.NaN, 1],
        [0, Number.NaN],
        [1.5, 2],
        [0, Number.POSITIVE_INFINITY],
      ] as const) {
        expect(await codeOf(b.ufs.read(u, off, len))).toBe('GRANARY_ERR_INVALID_ARGUMENT');
      }
    });

    it('reports missing objects as GRANARY_ERR_NOT_FOUND naming the URL', async (ctx) => {
      if (skip) return ctx.skip();
      const u = url('data/does-not-exist.bin');
      await expect(b.ufs.stat(u)).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND' });
      await expect(b.ufs.read(u, 0, 1)).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND' });
      const err = await b.ufs.stat(u).catch((e: unknown) => e as Error);
      expect((err as Error).message).toContain('does-not-exist.bin');
    });

    it('handles keys with spaces and non-ASCII characters', async (ctx) => {
      if (skip) return ctx.skip();
      const rels = ['odd/with space.bin', 'odd/ünïcødé-文件.bin', 'odd/plus+and%percent.bin'];
      for (const [i, rel] of rels.entries()) await put(rel, Buffer.from(`payload-${i}-${rel}`));
      for (const [i, rel] of rels.entries()) {
        const info = await b.ufs.stat(url(rel));
        const bytes = await b.ufs.read(url(rel), 0, info.size);
        expect(Buffer.from(bytes).toString()).toBe(`payload-${i}-${rel}`);
      }
      if (b.listable) {
        const listed = await collect(b.ufs.list(url('odd/')));
        expect(listed.map((f) => f.url).sort()).toEqual(rels.map(url).sort());
        for (const f of listed) expect((await b.ufs.read(f.url, 0, f.size)).byteLength).toBe(f.size);
      }
    });

    it('lists more than 1,000 keys recursively and in sorted order', async (ctx) => {
      if (skip || !b.listable) return ctx.skip();
      const n = b.paginationKeys ?? 1050;
      const rels: string[] = [];
      for (let i = 0; i < n; i++) rels.push(`many/${String(i % 7)}/k-${String(i).padStart(5, '0')}`);
      const queue = [...rels];
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let r = queue.shift(); r !== undefined; r = queue.shift()) await put(r, Buffer.from(r));
        }),
      );
      const listed = await collect(b.ufs.list(url('many/')));
      expect(listed.length).toBe(n);
      const urls = listed.map((f) => f.url);
      expect(new Set(urls).size).toBe(n);
      const sorted = [...urls].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
      expect(urls).toEqual(sorted);
      expect(urls.sort()).toEqual(rels.map(url).sort());
    }, 180_000);

    it('detects a changed version when reading with an old ETag', async (ctx) => {
      if (skip) return ctx.skip();
      await put('ver/obj.bin', Buffer.from('version one, some bytes'));
      const v1 = await b.ufs.stat(url('ver/obj.bin'));
      expect(Buffer.from(await b.ufs.read(url('ver/obj.bin'), 0, 7, { etag: v1.etag })).toString()).toBe('version');
      // Different content and size, so every backend's version tag must change.
      const next = Buffer.from('VERSION TWO, other bytes, longer');
      await (b.overwrite ? b.overwrite('ver/obj.bin', next) : put('ver/obj.bin', next));
      const v2 = await b.ufs.stat(url('ver/obj.bin'));
      expect(v2.etag).not.toBe(v1.etag);
      await expect(b.ufs.read(url('ver/obj.bin'), 0, 7, { etag: v1.etag })).rejects.toMatchObject({
        code: 'GRANARY_ERR_VERSION_CHANGED',
      });
      expect(Buffer.from(await b.ufs.read(url('ver/obj.bin'), 0, 7, { etag: v2.etag })).toString()).toBe('VERSION');
    });

    it('reads a whole object when offset and length are omitted, pinned to a version when one is given', async (ctx) => {
      if (skip) return ctx.skip();
      const whole = await b.ufs.read(url('data/big.bin'));
      expect(Buffer.from(whole).equals(big)).toBe(true);
      expect((await b.ufs.read(url('data/empty.bin'))).byteLength).toBe(0);
      await put('whole/obj.bin', Buffer.from('first version of the object'));
      const v1 = await b.ufs.stat(url('whole/obj.bin'));
      expect(Buffer.from(await b.ufs.read(url('whole/obj.bin'), undefined, undefined, { etag: v1.etag })).toString()).toBe('first version of the object');
      const next = Buffer.from('SECOND VERSION, a longer body than the first');
      await (b.overwrite ? b.overwrite('whole/obj.bin', next) : put('whole/obj.bin', next));
      expect(Buffer.from(await b.ufs.read(url('whole/obj.bin'))).toString()).toBe(next.toString());
      expect(await codeOf(b.ufs.read(url('whole/obj.bin'), undefined, undefined, { etag: v1.etag }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect(await codeOf(b.ufs.read(url('whole/obj.bin'), 0))).toBe('GRANARY_ERR_INVALID_ARGUMENT');
      expect(await codeOf(b.ufs.read(url('whole/obj.bin'), undefined, 4))).toBe('GRANARY_ERR_INVALID_ARGUMENT');
      expect(await codeOf(b.ufs.read(url('whole/missing.bin')))).toBe('GRANARY_ERR_NOT_FOUND');
    });

    it('checks the size a caller expects against the object, for whole and ranged reads', async (ctx) => {
      if (skip) return ctx.skip();
      const body = Buffer.from('sized object, version one');
      await put('sized/obj.bin', body);
      const v1 = await b.ufs.stat(url('sized/obj.bin'));
      const u = url('sized/obj.bin');
      expect(Buffer.from(await b.ufs.read(u, undefined, undefined, { etag: v1.etag, size: v1.size })).equals(body)).toBe(true);
      expect(Buffer.from(await b.ufs.read(u, undefined, undefined, { size: v1.size })).equals(body)).toBe(true);
      expect(Buffer.from(await b.ufs.read(u, 6, 6, { etag: v1.etag, size: v1.size })).toString()).toBe('object');
      expect(await codeOf(b.ufs.read(u, undefined, undefined, { size: v1.size + 1 }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect(await codeOf(b.ufs.read(u, undefined, undefined, { size: v1.size - 1 }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect(await codeOf(b.ufs.read(u, 0, 4, { size: v1.size + 100 }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect(await codeOf(b.ufs.read(u, 0, 0, { size: v1.size + 100 }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect(await codeOf(b.ufs.read(url('data/empty.bin'), undefined, undefined, { size: 5 }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect((await b.ufs.read(url('data/empty.bin'), undefined, undefined, { size: 0 })).byteLength).toBe(0);
      expect(await codeOf(b.ufs.read(u, undefined, undefined, { size: 0 }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      const whole = await b.ufs.read(url('data/big.bin'), undefined, undefined, { size: big.byteLength });
      expect(Buffer.from(whole).equals(big)).toBe(true);
      expect(await codeOf(b.ufs.read(url('data/big.bin'), undefined, undefined, { size: big.byteLength + 1 }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect(await codeOf(b.ufs.read(u, undefined, undefined, { size: -1 }))).toBe('GRANARY_ERR_INVALID_ARGUMENT');
      // The object replaced by one of another size: the size and the old version both tell.
      const next = Buffer.from('sized object, VERSION TWO, longer');
      await (b.overwrite ? b.overwrite('sized/obj.bin', next) : put('sized/obj.bin', next));
      expect(await codeOf(b.ufs.read(u, undefined, undefined, { size: v1.size }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect(await codeOf(b.ufs.read(u, undefined, undefined, { etag: v1.etag, size: v1.size }))).toBe('GRANARY_ERR_VERSION_CHANGED');
      expect(Buffer.from(await b.ufs.read(u, undefined, undefined, { size: next.byteLength })).equals(next)).toBe(true);
    });

    it('reads a small whole object with a single request', async (ctx) => {
      if (skip) return ctx.skip();
      const counts = (b.ufs as Partial<StoreAdapter>).requestCounts?.bind(b.ufs);
      if (!counts) return ctx.skip();
      const body = Buffer.from('one request for all of me');
      await put('single/obj.bin', body);
      const info = await b.ufs.stat(url('single/obj.bin'));
      for (const options of [{}, { etag: info.etag }, { etag: info.etag, size: info.size }]) {
        const before = counts();
        expect(Buffer.from(await b.ufs.read(url('single/obj.bin'), undefined, undefined, options)).equals(body)).toBe(true);
        const after = counts();
        expect({ get: after.get - before.get, stat: after.stat - before.stat, bytesRead: after.bytesRead - before.bytesRead }).toEqual({
          get: 1,
          stat: 0,
          bytesRead: body.byteLength,
        });
      }
    });

    it('aborts a read through its signal', async (ctx) => {
      if (skip) return ctx.skip();
      const ac = new AbortController();
      ac.abort(new Error('stop now'));
      await expect(b.ufs.read(url('data/big.bin'), 0, 1024, { signal: ac.signal })).rejects.toThrow('stop now');
      const ac2 = new AbortController();
      const p = b.ufs.read(url('data/big.bin'), 0, big.byteLength, { signal: ac2.signal });
      ac2.abort(new Error('stop later'));
      // Either the read finished before the abort landed, or it rejected with the reason.
      const r = await p.then(
        (v) => v.byteLength,
        (e: unknown) => (e as Error).message,
      );
      expect([big.byteLength, 'stop later']).toContain(r);
      if (b.listable) {
        const ac3 = new AbortController();
        ac3.abort(new Error('no listing'));
        await expect(collect(b.ufs.list(url('data/'), { signal: ac3.signal }))).rejects.toThrow('no listing');
      }
    });

    it('serves many concurrent reads with exact bytes', async (ctx) => {
      if (skip) return ctx.skip();
      const u = url('data/big.bin');
      const reads = Array.from({ length: 64 }, (_, i) => {
        const off = (i * 48_611) % (big.byteLength - 70_000);
        const len = 1 + ((i * 7919) % 65_536);
        return b.ufs.read(u, off, len).then((got) => Buffer.from(got).equals(big.subarray(off, off + len)));
      });
      expect((await Promise.all(reads)).every(Boolean)).toBe(true);
    });

    if (caps.writable) it('writes, overwrites and deletes through the adapter', async (ctx) => {
      if (skip) return ctx.skip();
      const u = url('rw/one.bin');
      const w1 = await b.ufs.write(u, Buffer.from('first'));
      expect(w1.size).toBe(5);
      const w2 = await b.ufs.write(
        u,
        (async function* () {
          yield Buffer.from('second, ');
          yield Buffer.from('streamed');
        })(),
      );
      expect(w2.size).toBe(16);
      expect(Buffer.from(await b.ufs.read(u, 0, 16)).toString()).toBe('second, streamed');
      await b.ufs.delete(u);
      await expect(b.ufs.stat(u)).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND' });
      await b.ufs.delete(u);
    });

    if (caps.credentials) it('rejects wrong credentials with GRANARY_ERR_ACCESS_DENIED', async (ctx) => {
      if (skip) return ctx.skip();
      if (!b.badCredentials) throw new Error(`${name} declares credentials but gives no badCredentials()`);
      const bad = b.badCredentials();
      try {
        await expect(bad.stat(url('data/big.bin'))).rejects.toMatchObject({ code: 'GRANARY_ERR_ACCESS_DENIED' });
        await expect(bad.read(url('data/big.bin'), 0, 10)).rejects.toMatchObject({ code: 'GRANARY_ERR_ACCESS_DENIED' });
      } finally {
        await bad.close();
      }
    });

    if (caps.buckets) it('reports a missing bucket with its own code', async (ctx) => {
      if (skip) return ctx.skip();
      if (b.missingBucketUrl === undefined) throw new Error(`${name} declares buckets but gives no missingBucketUrl`);
      await expect(b.ufs.stat(b.missingBucketUrl)).rejects.toMatchObject({ code: 'GRANARY_ERR_NO_SUCH_BUCKET' });
      await expect(b.ufs.read(b.missingBucketUrl, 0, 1)).rejects.toMatchObject({ code: 'GRANARY_ERR_NO_SUCH_BUCKET' });
    });

    it('rejects invalid URLs and unknown schemes with coded errors', async (ctx) => {
      if (skip) return ctx.skip();
      await expect(b.ufs.stat('ftp://example/x')).rejects.toMatchObject({ code: 'GRANARY_ERR_UNSUPPORTED_SCHEME' });
      await expect(b.ufs.stat('not a url')).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    });
  });
}

import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { LruPolicy } from '../../src/cache/eviction.js';
import type { AccessHint, EvictionPolicy, EvictionPolicyName } from '../../src/cache/eviction.js';
import { PAGE_HEADER_BYTES, pageFileBytes } from '../../src/cache/page-file.js';
import { pageFileName, pageKey, pagesForRange, parsePageKey } from '../../src/cache/page-key.js';
import type { PageKey } from '../../src/cache/page-key.js';
import { PageStore } from '../../src/cache/page-store.js';

const PAGE = 1024;
const dirs: string[] = [];

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'granary-pages-'));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** Deterministic page contents, different for every (url, etag, index). */
function pageBytes(key: PageKey, length = PAGE): Uint8Array {
  const out = new Uint8Array(length);
  let x = 0;
  for (let i = 0; i < key.length; i++) x = (Math.imul(x, 31) + key.charCodeAt(i)) | 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    out[i] = x >>> 24;
  }
  return out;
}

function keyOf(file: number, page: number, etag = 'v1'): PageKey {
  return pageKey(`s3://bucket/data/file-${file}.bin`, etag, page);
}

function pagePath(dir: string, key: PageKey): string {
  const name = pageFileName(key);
  return join(dir, 'pages', name.slice(0, 2), name);
}

async function filesUnder(dir: string): Promise<{ count: number; bytes: number }> {
  let count = 0;
  let bytes = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    count++;
    bytes += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return { count, bytes };
}

describe('pageKey', () => {
  it('is stable, unambiguous, and parses back', () => {
    const key = pageKey('s3://b/a"b\\c', 'etag"x', 7);
    expect(key).toBe(pageKey('s3://b/a"b\\c', 'etag"x', 7));
    expect(parsePageKey(key)).toEqual({ url: 's3://b/a"b\\c', etag: 'etag"x', pageIndex: 7 });
    expect(pageKey('s3://b/k', 'a', 1)).not.toBe(pageKey('s3://b/k', 'a', 2));
    expect(pageKey('s3://b/k', 'a', 1)).not.toBe(pageKey('s3://b/k', 'b', 1));
    expect(pageFileName(key)).toMatch(/^[0-9a-f]{32}\.page$/);
    expect(() => pageKey('s3://b/k', 'e', -1)).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_ARGUMENT }));
    expect(() => parsePageKey('["s3://b/k", "e", 1]')).toThrow(/Not a page key/);
  });

  it('maps byte ranges to pages', () => {
    expect(pagesForRange(0, 0, PAGE)).toEqual({ first: 0, count: 0 });
    expect(pagesForRange(0, 1, PAGE)).toEqual({ first: 0, count: 1 });
    expect(pagesForRange(PAGE - 1, 2, PAGE)).toEqual({ first: 0, count: 2 });
    expect(pagesForRange(1.5 * PAGE, PAGE, PAGE)).toEqual({ first: 1, count: 2 });
  });
});

describe('PageStore in memory', () => {
  it('returns what was put, counts hits and misses, and keeps a copy', async () => {
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 4 * PAGE });
    const key = keyOf(1, 0);
    const bytes = pageBytes(key);
    expect(await store.get(key)).toBeUndefined();
    await store.put(key, bytes);
    bytes.fill(0);
    expect(await store.get(key)).toEqual(pageBytes(key));
    expect(store.has(key)).toBe(true);
    expect(store.has(keyOf(1, 1))).toBe(false);
    expect(store.stats()).toMatchObject({ hits: 1, memoryHits: 1, misses: 1, memoryPages: 1, memoryBytes: PAGE, diskPages: 0 });
  });

  it('stores a short last page and refuses a page longer than the page size', async () => {
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 4 * PAGE });
    await store.put(keyOf(1, 3), pageBytes(keyOf(1, 3), 10));
    expect(await store.get(keyOf(1, 3))).toHaveLength(10);
    await expect(store.put(keyOf(1, 0), new Uint8Array(PAGE + 1))).rejects.toMatchObject({
      code: ErrorCodes.INVALID_ARGUMENT,
      message: expect.stringContaining('s3://bucket/data/file-1.bin') as string,
    });
  });

  it('evicts the least recently used page under the default policy', async () => {
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 3 * PAGE });
    const [a, b, c, d] = [keyOf(1, 0), keyOf(1, 1), keyOf(1, 2), keyOf(1, 3)];
    for (const k of [a, b, c]) await store.put(k, pageBytes(k));
    await store.get(a);
    await store.put(d, pageBytes(d));
    expect([a, b, c, d].map((k) => store.has(k))).toEqual([true, false, true, true]);
    expect(store.stats()).toMatchObject({ evictions: 1, memoryEvictions: 1, memoryBytes: 3 * PAGE });
  });

  it.each(['lru', 's3fifo'] as const)('under %s, keeps the hot set through a one-time scan only if scan resistant', async (policy) => {
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 20 * PAGE, policy });
    const hot = Array.from({ length: 10 }, (_, i) => keyOf(0, i));
    for (let round = 0; round < 3; round++) {
      for (const k of hot) if ((await store.get(k)) === undefined) await store.put(k, pageBytes(k));
    }
    for (let i = 0; i < 100; i++) {
      const k = keyOf(1, i);
      if ((await store.get(k)) === undefined) await store.put(k, pageBytes(k));
    }
    const kept = hot.filter((k) => store.has(k)).length;
    expect(kept).toBe(policy === 'lru' ? 0 : hot.length);
  });

  it('passes access hints to a pluggable policy', async () => {
    const seen: [string, string, AccessHint | undefined][] = [];
    const recording = (): EvictionPolicy => {
      const inner = new LruPolicy();
      return {
        name: 'recording',
        get size() {
          return inner.size;
        },
        insert: (key, bytes, hint) => {
          seen.push(['insert', key, hint]);
          inner.insert(key);
        },
        touch: (key, hint) => {
          seen.push(['touch', key, hint]);
          inner.touch(key);
        },
        remove: (key) => inner.remove(key),
        evict: () => inner.evict(),
      };
    };
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 2 * PAGE, policy: recording });
    await store.put(keyOf(1, 0), pageBytes(keyOf(1, 0)), { hint: { nextUse: 5 } });
    await store.get(keyOf(1, 0), { hint: { nextUse: 9 } });
    expect(seen).toEqual([
      ['insert', keyOf(1, 0), { nextUse: 5 }],
      ['touch', keyOf(1, 0), { nextUse: 9 }],
    ]);
  });

  it('refuses bad options and unknown policies with coded errors naming them', async () => {
    await expect(PageStore.open({ memoryBytes: -1 })).rejects.toThrow(/`memoryBytes`.*-1/);
    await expect(PageStore.open({ memoryBytes: 1, pageSize: 0 })).rejects.toThrow(/`pageSize`/);
    await expect(PageStore.open({ memoryBytes: 1, diskDir: '/tmp/x' })).rejects.toThrow(/`diskBytes`/);
    await expect(PageStore.open({ memoryBytes: 1, diskBytes: 5 })).rejects.toThrow(/without `diskDir`/);
    await expect(PageStore.open({ memoryBytes: 1, policy: 'mru' as EvictionPolicyName })).rejects.toMatchObject({
      code: ErrorCodes.INVALID_ARGUMENT,
      message: expect.stringContaining('mru') as string,
    });
  });

  it('closes idempotently and refuses use after close', async () => {
    const store = await PageStore.open({ pageSize: PAGE, memoryBytes: PAGE });
    await store.put(keyOf(1, 0), pageBytes(keyOf(1, 0)));
    await Promise.all([store.close(), store.close()]);
    await store.close();
    await expect(store.get(keyOf(1, 0))).rejects.toMatchObject({ code: ErrorCodes.CLOSED });
    await expect(store.put(keyOf(1, 0), new Uint8Array(1))).rejects.toMatchObject({ code: ErrorCodes.CLOSED });
    expect(() => store.has(keyOf(1, 0))).toThrow(expect.objectContaining({ code: ErrorCodes.CLOSED }));
    expect(store.stats().memoryPages).toBe(0);
  });

  it('rejects with the abort reason when the signal is already aborted', async () => {
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: PAGE });
    const reason = new Error('stop');
    await expect(store.get(keyOf(1, 0), { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });
});

describe('PageStore with a disk tier', () => {
  it('demotes a page leaving memory to disk when the disk had evicted it, and promotes it on a disk hit', async () => {
    const dir = await tempDir();
    const [a, b, c, d] = [0, 1, 2, 3].map((i) => keyOf(1, i)) as [PageKey, PageKey, PageKey, PageKey];
    const fileBytes = pageFileBytes(a, PAGE);
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 3 * PAGE, diskDir: dir, diskBytes: 2 * fileBytes });
    // Written through to both tiers: memory holds a, b, c; the smaller disk only b, c.
    for (const k of [a, b, c]) await store.put(k, pageBytes(k));
    expect(store.stats()).toMatchObject({ memoryPages: 3, diskPages: 2, diskEvictions: 1, demotions: 0 });
    // d pushes a out of memory; a is on no disk, so it is demoted there.
    await store.put(d, pageBytes(d));
    expect(store.stats()).toMatchObject({ memoryPages: 3, diskPages: 2, memoryEvictions: 1, demotions: 1 });
    expect(await stat(pagePath(dir, a))).toBeDefined();
    expect(await store.get(a)).toEqual(pageBytes(a));
    expect(store.stats()).toMatchObject({ diskHits: 1, memoryHits: 0, promotions: 1, memoryPages: 3 });
    expect(await store.get(a)).toEqual(pageBytes(a));
    expect(store.stats()).toMatchObject({ diskHits: 1, memoryHits: 1 });
    const st = store.stats();
    expect(st.memoryBytes).toBeLessThanOrEqual(3 * PAGE);
    expect(st.diskBytes).toBeLessThanOrEqual(2 * fileBytes);
  });

  it('serves a page from disk when memory is too small for it, and promotes it', async () => {
    const dir = await tempDir();
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: PAGE, diskDir: dir, diskBytes: 100 * PAGE });
    const [a, b] = [keyOf(1, 0), keyOf(1, 1)];
    await store.put(a, pageBytes(a));
    await store.put(b, pageBytes(b)); // a leaves memory; it is already on disk
    expect(await store.get(a)).toEqual(pageBytes(a));
    expect(store.stats()).toMatchObject({ diskHits: 1, promotions: 1, memoryPages: 1, diskPages: 2 });
    expect(await store.get(a)).toEqual(pageBytes(a));
    expect(store.stats()).toMatchObject({ memoryHits: 1 });
  });

  it('writes page files atomically: no temp files left, and leftovers cleaned at open', async () => {
    const dir = await tempDir();
    {
      await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 100 * PAGE });
      await Promise.all([0, 1, 2, 3, 4].map((i) => store.put(keyOf(1, i), pageBytes(keyOf(1, i)))));
      expect(await readdir(join(dir, 'tmp'))).toEqual([]);
      const file = await readFile(pagePath(dir, keyOf(1, 2)));
      expect(file.subarray(0, 4).toString('latin1')).toBe('GRPG');
      expect(file.byteLength).toBe(pageFileBytes(keyOf(1, 2), PAGE));
    }
    await writeFile(join(dir, 'tmp', 'deadbeef.page.123.1.tmp'), 'half a page');
    await using again = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 100 * PAGE });
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
    expect(again.stats().recoveredPages).toBe(5);
  });

  it.each([
    ['a flipped data byte', (b: Buffer) => void (b[b.length - 1] = (b[b.length - 1] ?? 0) ^ 0xff)],
    ['a flipped header byte', (b: Buffer) => void (b[9] = (b[9] ?? 0) ^ 0x01)],
    ['a flipped key byte', (b: Buffer) => void (b[PAGE_HEADER_BYTES + 3] = (b[PAGE_HEADER_BYTES + 3] ?? 0) ^ 0x01)],
    ['a truncated file', (b: Buffer) => b.subarray(0, b.length - 7)],
    ['an empty file', () => Buffer.alloc(0)],
  ])('drops, counts and misses a page file with %s, so the caller refetches', async (_what, damage) => {
    const dir = await tempDir();
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 100 * PAGE });
    const key = keyOf(7, 3);
    await store.put(key, pageBytes(key));
    await store.put(keyOf(7, 4), pageBytes(keyOf(7, 4)));
    const path = pagePath(dir, key);
    const file = await readFile(path);
    await writeFile(path, damage(file) ?? file);

    expect(await store.get(key)).toBeUndefined();
    expect(store.stats()).toMatchObject({ corruptPages: 1, misses: 1, hits: 0, diskPages: 1 });
    expect(store.has(key)).toBe(false);
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    // The neighbour is untouched, and a refetched page is served again.
    expect(await store.get(keyOf(7, 4))).toEqual(pageBytes(keyOf(7, 4)));
    await store.put(key, pageBytes(key));
    expect(await store.get(key)).toEqual(pageBytes(key));
  });

  it('recovers its disk pages when reopened on the same directory (warm restart)', async () => {
    const dir = await tempDir();
    const keys = Array.from({ length: 12 }, (_, i) => keyOf(i % 3, i, i % 2 === 0 ? 'even' : 'odd'));
    {
      const store = await PageStore.open({ pageSize: PAGE, memoryBytes: 4 * PAGE, diskDir: dir, diskBytes: 100 * PAGE });
      for (const k of keys) await store.put(k, pageBytes(k, PAGE - (keys.indexOf(k) % 5)));
      await store.close();
    }
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 4 * PAGE, diskDir: dir, diskBytes: 100 * PAGE });
    expect(store.stats()).toMatchObject({ recoveredPages: 12, diskPages: 12, memoryPages: 0, corruptPages: 0 });
    for (const [i, k] of keys.entries()) expect(await store.get(k)).toEqual(pageBytes(k, PAGE - (i % 5)));
    expect(store.stats()).toMatchObject({ diskHits: 12, misses: 0 });
    // Recovery rebuilt the URL index too.
    expect(await store.deleteFile('s3://bucket/data/file-0.bin')).toBe(4);
  });

  it('at restart, drops damaged files, ignores foreign ones, discards another page size, and fits the budget', async () => {
    const dir = await tempDir();
    const keys = Array.from({ length: 10 }, (_, i) => keyOf(1, i));
    {
      await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 100 * PAGE });
      for (const k of keys) await store.put(k, pageBytes(k));
    }
    const bad = pagePath(dir, keys[0] as PageKey);
    const b = await readFile(bad);
    b[0] = 0;
    await writeFile(bad, b);
    await writeFile(join(dir, 'pages', 'README'), 'not a page');
    const fileBytes = pageFileBytes(keys[1] as PageKey, PAGE);
    {
      await using small = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 5 * fileBytes });
      expect(small.stats()).toMatchObject({ corruptPages: 1, diskPages: 5, diskBytes: 5 * fileBytes });
      expect(small.stats().recoveredPages).toBeGreaterThanOrEqual(5);
      expect(await filesUnder(join(dir, 'pages'))).toEqual({ count: 5 + 1, bytes: 5 * fileBytes + 'not a page'.length });
    }
    await using other = await PageStore.open({ pageSize: 2 * PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 100 * PAGE });
    expect(other.stats()).toMatchObject({ recoveredPages: 0, diskPages: 0, corruptPages: 0 });
    expect((await filesUnder(join(dir, 'pages'))).count).toBe(1);
  });

  it('forgets everything with recover: false', async () => {
    const dir = await tempDir();
    {
      await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 100 * PAGE });
      await store.put(keyOf(1, 0), pageBytes(keyOf(1, 0)));
    }
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 100 * PAGE, recover: false });
    expect(store.stats().diskPages).toBe(0);
    expect(await store.get(keyOf(1, 0))).toBeUndefined();
  });

  it('deletes every page of every version of a URL from both tiers, and nothing else', async () => {
    const dir = await tempDir();
    const url = 's3://bucket/data/file-1.bin';
    {
      await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 3 * PAGE, diskDir: dir, diskBytes: 100 * PAGE });
      const mine = [pageKey(url, 'v1', 0), pageKey(url, 'v1', 1), pageKey(url, 'v2', 0), pageKey(url, 'v2', 5)];
      const others = [pageKey(`${url}.bak`, 'v1', 0), pageKey('s3://bucket/data/file-2.bin', 'v1', 0)];
      for (const k of [...mine, ...others]) await store.put(k, pageBytes(k));
      expect(await store.deleteFile(url)).toBe(4);
      for (const k of mine) {
        expect(store.has(k)).toBe(false);
        expect(await store.get(k)).toBeUndefined();
        await expect(stat(pagePath(dir, k))).rejects.toMatchObject({ code: 'ENOENT' });
      }
      for (const k of others) expect(await store.get(k)).toEqual(pageBytes(k));
      expect(await store.deleteFile(url)).toBe(0);
      expect(store.stats()).toMatchObject({ diskPages: 2, diskEvictions: 0 });
    }
    await using store = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: 100 * PAGE });
    expect(store.stats().recoveredPages).toBe(2);
  });

  it('refuses a second store on the same directory, and takes over a lock its holder stopped refreshing', async () => {
    const dir = await tempDir();
    {
      await using first = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: PAGE * 4 });
      await expect(PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: PAGE * 4 })).rejects.toMatchObject({
        code: ErrorCodes.CONFIG,
        message: expect.stringContaining(dir) as string,
      });
      expect(first.stats().diskPages).toBe(0);
    }
    // A lock an older granary left (just a pid), not refreshed for long: taken over.
    await writeFile(join(dir, 'LOCK'), String(4194305));
    const old = new Date(Date.now() - 10 * 60_000);
    await utimes(join(dir, 'LOCK'), old, old);
    await using again = await PageStore.open({ pageSize: PAGE, memoryBytes: 0, diskDir: dir, diskBytes: PAGE * 4 });
    expect(again.stats().diskPages).toBe(0);
    expect(JSON.parse(await readFile(join(dir, 'LOCK'), 'utf8'))).toMatchObject({ pid: process.pid });
  });

  it.each(['lru', 's3fifo'] as const)(
    'under %s, never exceeds either budget by more than a page and always returns the bytes that were put, under random concurrent workloads',
    async (policy) => {
      const op = fc.oneof(
        { weight: 6, arbitrary: fc.record({ kind: fc.constant('put' as const), file: fc.nat({ max: 5 }), page: fc.nat({ max: 15 }), short: fc.boolean() }) },
        { weight: 6, arbitrary: fc.record({ kind: fc.constant('get' as const), file: fc.nat({ max: 5 }), page: fc.nat({ max: 15 }) }) },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), file: fc.nat({ max: 5 }) }) },
      );
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(op, { minLength: 1, maxLength: 6 }), { maxLength: 40 }),
          fc.nat({ max: 8 }),
          fc.nat({ max: 12 }),
          async (batches, memPages, diskPages) => {
            const dir = await tempDir();
            const memoryBytes = memPages * PAGE + (memPages > 0 ? 100 : 0);
            const diskBytes = diskPages * (PAGE + 200);
            const store = await PageStore.open({ pageSize: PAGE, memoryBytes, diskDir: dir, diskBytes, policy });
            const length = (file: number, page: number, short: boolean) => (short ? 1 + ((file * 31 + page) % PAGE) : PAGE);
            const lengths = new Map<PageKey, number>();
            try {
              for (const batch of batches) {
                // One batch runs concurrently: puts, reads and invalidations interleave.
                await Promise.all(
                  batch.map(async (o) => {
                    if (o.kind === 'delete') {
                      await store.deleteFile(`s3://bucket/data/file-${o.file}.bin`);
                      return;
                    }
                    const key = keyOf(o.file, o.page);
                    if (o.kind === 'put') {
                      const n = length(o.file, o.page, o.short);
                      lengths.set(key, n);
                      await store.put(key, pageBytes(key, n));
                    } else {
                      const got = await store.get(key);
                      if (got !== undefined) expect(got).toEqual(pageBytes(key, got.byteLength));
                    }
                  }),
                );
                const st = store.stats();
                expect(st.memoryBytes).toBeLessThanOrEqual(memoryBytes + PAGE);
                expect(st.diskBytes).toBeLessThanOrEqual(diskBytes + pageFileBytes(keyOf(0, 0), PAGE));
                expect(st.corruptPages).toBe(0);
                expect(st.diskErrors).toBe(0);
              }
            } finally {
              await store.close();
            }
            // After close (all writes and deletes done), the files are exactly the index.
            const st = store.stats();
            const files = await filesUnder(join(dir, 'pages'));
            expect(files).toEqual({ count: st.diskPages, bytes: st.diskBytes });
            await rm(dir, { recursive: true, force: true });
          },
        ),
        { numRuns: 25 },
      );
    },
  );
});

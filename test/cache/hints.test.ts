import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BeladyPolicy } from '../../src/cache/belady.js';
import { CacheClient } from '../../src/cache/client.js';
import { HintRegistry, parseHintRequest, routeAccesses, type HintAccess } from '../../src/cache/hints.js';
import { pageKey } from '../../src/cache/page-key.js';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { MemoryUfs } from '../../src/ufs/memory.js';

const KiB = 1024;
const PS = 64 * KiB;

function access(url: string, page: number, pos: number, pages = 1): HintAccess {
  return { url, etag: 'e1', offset: page * PS, length: pages * PS, pos };
}

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('HintRegistry', () => {
  it('ranks pages by the distance of their next hinted use from the job cursor, across jobs', () => {
    const reg = new HintRegistry({ pageSize: PS });
    const u = 's3://b/f';
    reg.apply({ job: 'a', cursor: 0, accesses: [access(u, 0, 0), access(u, 1, 5), access(u, 2, 9)] });
    reg.apply({ job: 'b', cursor: 10, accesses: [access(u, 2, 12), access(u, 3, 30)] });
    expect(reg.nextUse(pageKey(u, 'e1', 0))).toBe(0);
    expect(reg.nextUse(pageKey(u, 'e1', 1))).toBe(5);
    expect(reg.nextUse(pageKey(u, 'e1', 2))).toBe(2); // job b reads it 2 positions ahead, job a 9
    expect(reg.nextUse(pageKey(u, 'e1', 3))).toBe(20);
    expect(reg.nextUse(pageKey(u, 'e1', 4))).toBe(Infinity);
    expect(reg.nextUse(pageKey(u, 'e2', 0))).toBe(Infinity); // another version is another page
  });

  it('forgets uses the cursor has passed, and never moves the cursor back', () => {
    const reg = new HintRegistry({ pageSize: PS });
    const u = 's3://b/f';
    reg.apply({ job: 'a', cursor: 0, accesses: [access(u, 0, 0), access(u, 0, 4), access(u, 1, 2)] });
    expect(reg.stats().pages).toBe(3);
    reg.apply({ job: 'a', cursor: 3 });
    expect(reg.nextUse(pageKey(u, 'e1', 0))).toBe(1);
    expect(reg.nextUse(pageKey(u, 'e1', 1))).toBe(Infinity);
    reg.apply({ job: 'a', cursor: 1 });
    expect(reg.nextUse(pageKey(u, 'e1', 0))).toBe(1);
    expect(reg.stats().pages).toBe(1);
  });

  it('counts a range as every page it touches, and deduplicates resent hints', () => {
    const reg = new HintRegistry({ pageSize: PS });
    const a = { url: 's3://b/f', etag: 'e1', offset: PS - 1, length: PS + 2, pos: 0 };
    reg.apply({ job: 'a', accesses: [a] });
    reg.apply({ job: 'a', accesses: [a] });
    expect(reg.stats().pages).toBe(3);
  });

  it('drops a job on end, replaces it on reset, and expires it after its TTL unless renewed', () => {
    let now = 1000;
    const reg = new HintRegistry({ pageSize: PS, now: () => now });
    const u = 's3://b/f';
    reg.apply({ job: 'a', ttlMs: 500, accesses: [access(u, 0, 0)] });
    reg.apply({ job: 'a', reset: true, accesses: [access(u, 1, 0)] });
    expect(reg.nextUse(pageKey(u, 'e1', 0))).toBe(Infinity);
    expect(reg.nextUse(pageKey(u, 'e1', 1))).toBe(0);
    reg.apply({ job: 'a', end: true });
    expect(reg.jobs()).toEqual([]);
    reg.apply({ job: 'b', ttlMs: 500, accesses: [access(u, 2, 0)] });
    now += 400;
    reg.apply({ job: 'b', ttlMs: 500 }); // renewed
    now += 400;
    reg.expire();
    expect(reg.jobs()).toEqual(['b']);
    now += 101;
    reg.expire();
    expect(reg.jobs()).toEqual([]);
    expect(reg.stats()).toMatchObject({ pages: 0, expiredJobs: 1 });
  });

  it('drops accesses beyond its limits and says how many', () => {
    const reg = new HintRegistry({ pageSize: PS, maxPagesPerJob: 4, maxJobs: 1 });
    const u = 's3://b/f';
    const r = reg.apply({ job: 'a', accesses: [access(u, 0, 0, 3), access(u, 3, 1, 3), access(u, 6, 2, 1)] });
    expect(r).toMatchObject({ accepted: 2, dropped: 1, pages: 4 });
    expect(reg.apply({ job: 'b', accesses: [access(u, 0, 0)] })).toMatchObject({ accepted: 0, dropped: 1 });
  });

  it('offers the pages in each job lookahead window from readFrom, soonest first', () => {
    const reg = new HintRegistry({ pageSize: PS });
    const u = 's3://b/f';
    reg.apply({ job: 'a', cursor: 0, readFrom: 1, lookahead: 2, accesses: [0, 1, 2, 3].map((i) => access(u, 10 + i, i)) });
    expect(reg.prefetchCandidates().map((c) => [c.page, c.nextUse])).toEqual([
      [11, 1],
      [12, 2],
    ]);
  });

  it('refuses malformed requests with GRANARY_ERR_BAD_REQUEST naming the field', () => {
    expect(() => parseHintRequest({})).toThrow(/job/);
    expect(() => parseHintRequest({ job: 'a', cursor: -1 })).toThrow(/cursor/);
    expect(() => parseHintRequest({ job: 'a', accesses: [{ url: 's3://b/f', etag: 'e', offset: 0, length: 1, pos: 1.5 }] })).toThrow(/pos/);
    expect(() => parseHintRequest({ job: 'a', end: 'yes' })).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_BAD_REQUEST' }));
  });

  it('names the exact field, what it expected and what came in', () => {
    const access = { url: 's3://b/f', etag: 'e', offset: 0, length: 1, pos: 0 };
    expect(() => parseHintRequest({ job: 'a', accesses: [access, { ...access, pos: -3 }] })).toThrow(
      /`accesses\[1\]\.pos` must be an integer from 0 and up, got `-3` \(number\)/,
    );
    expect(() => parseHintRequest({ job: 'a', accesses: [{ ...access, etag: 7 }] })).toThrow(/`accesses\[0\]\.etag` must be a string, got `7`/);
    expect(() => parseHintRequest({ job: 'x'.repeat(201) })).toThrow(/`job` must be a string of 1-200 characters/);
    expect(() => parseHintRequest({ job: 'a', accesses: 'all' })).toThrow(/`accesses` must be an array/);
    for (const body of [null, [], 'job', 42]) {
      expect(() => parseHintRequest(body)).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_BAD_REQUEST', message: expect.stringMatching(/JSON body/) as unknown }));
    }
  });

  it('refuses more than 100,000 accesses in one request, asking for chunks', () => {
    const access = { url: 's3://b/f', etag: 'e', offset: 0, length: 1, pos: 0 };
    const accesses = Array.from({ length: 100_001 }, () => access);
    expect(() => parseHintRequest({ job: 'a', accesses })).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_BAD_REQUEST', message: expect.stringMatching(/chunks/) as unknown }));
  });

  it('keeps the known fields of a valid request and drops unknown ones', () => {
    const access = { url: 's3://b/f', etag: 'e', offset: 4, length: 8, pos: 2, extra: true };
    expect(parseHintRequest({ job: 'j', cursor: 1, readFrom: 2, lookahead: 3, ttlMs: 4, reset: true, end: false, other: 1, accesses: [access] })).toEqual({
      job: 'j',
      cursor: 1,
      readFrom: 2,
      lookahead: 3,
      ttlMs: 4,
      reset: true,
      end: false,
      accesses: [{ url: 's3://b/f', etag: 'e', offset: 4, length: 8, pos: 2 }],
    });
  });

  it('routes each block of an access to its owner', () => {
    const routed = routeAccesses([{ url: 's3://b/f', etag: 'e', offset: 10, length: 250, pos: 3 }], 100, (_u, _e, block) => `w${block % 2}`);
    expect(routed.get('w0')).toEqual([
      { url: 's3://b/f', etag: 'e', offset: 10, length: 90, pos: 3 },
      { url: 's3://b/f', etag: 'e', offset: 200, length: 60, pos: 3 },
    ]);
    expect(routed.get('w1')).toEqual([{ url: 's3://b/f', etag: 'e', offset: 100, length: 100, pos: 3 }]);
  });
});

describe('BeladyPolicy', () => {
  it('is LRU when nothing is hinted', () => {
    const p = new BeladyPolicy(() => Infinity);
    for (const k of ['a', 'b', 'c']) p.insert(k);
    p.touch('a');
    expect([p.evict(), p.evict(), p.evict(), p.evict()]).toEqual(['b', 'c', 'a', undefined]);
  });

  it('evicts unhinted pages first (least recent first), then the one used furthest ahead', () => {
    const uses: Record<string, number> = { a: 3, b: Infinity, c: 9, d: 1, e: Infinity };
    const p = new BeladyPolicy((k) => uses[k] ?? Infinity);
    for (const k of ['a', 'b', 'c', 'd', 'e']) p.insert(k);
    p.touch('b');
    expect(p.victim()).toEqual({ key: 'e', nextUse: Infinity });
    expect([p.evict(), p.evict(), p.evict(), p.evict(), p.evict()]).toEqual(['e', 'b', 'c', 'a', 'd']);
  });
});

describe('cache worker with hints', () => {
  const store = new MemoryUfs();
  const url = 's3://bucket/hinted.bin';
  const data = randomBytes(40 * PS);
  let etag = '';
  let worker: CacheWorker;
  let client: CacheClient;

  beforeAll(async () => {
    etag = (await store.write(url, data)).etag;
    worker = await startWorker({ id: 'h0', ufs: store, pageSize: PS, memoryBytes: 8 * PS, token: 'secret' });
    client = new CacheClient({ workers: [worker.url], ufs: store, token: 'secret', blockSize: 16 * PS, partSize: 16 * PS });
  });

  afterAll(async () => {
    await client.close();
    await worker.close();
  });

  const at = (page: number, pos: number, pages = 1): HintAccess => ({ url, etag, offset: page * PS, length: pages * PS, pos });

  it('prefetches hinted pages so the read that follows asks the store nothing', async () => {
    const r = await client.hint('job-1', { reset: true, cursor: 0, readFrom: 0, lookahead: 2, accesses: [at(0, 0, 2), at(2, 1, 2), at(30, 5)] });
    expect(r).toEqual({ accepted: 3, dropped: 0, failed: 0 });
    await until(() => worker.info().hints?.prefetch.pages === 4, 'the prefetch of positions 0 and 1');
    await until(() => worker.info().usage.memoryPages === 4, 'the prefetched pages to land');
    expect(worker.info().hints?.prefetch.pages).toBe(4); // position 5 is outside the lookahead
    const before = store.requestCounts().get;
    const got = await client.read(url, 0, 4 * PS, { etag });
    expect(Buffer.from(got).equals(data.subarray(0, 4 * PS))).toBe(true);
    expect(store.requestCounts().get).toBe(before);
    expect(worker.info().hints?.reads).toMatchObject({ ready: 1, prefetchedReady: 1, waited: 0 });
    await client.hint('job-1', { end: true });
    expect(worker.info().hints?.registry.jobs).toBe(0);
  });

  it('never evicts a page needed sooner than the one it would prefetch', async () => {
    // Fill the 8-page cache with pages the job needs at positions 0..7, then hint a
    // page at position 20 inside the lookahead window: nothing may be prefetched.
    const accesses = Array.from({ length: 8 }, (_, i) => at(10 + i, i));
    await client.hint('job-2', { reset: true, cursor: 0, readFrom: 0, lookahead: 8, accesses });
    await until(() => worker.info().usage.memoryPages === 8 && worker.info().hints?.prefetch.pages === 12, 'the first eight pages');
    const resident = [...Array(8).keys()].map((i) => 10 + i);
    const refused = worker.info().hints?.prefetch.refused ?? 0;
    await client.hint('job-2', { readFrom: 0, lookahead: 30, accesses: [at(25, 20)] });
    await until(() => (worker.info().hints?.prefetch.refused ?? 0) > refused, 'the prefetcher to pass over page 25');
    const before = store.requestCounts().get;
    // All eight are still there: reading them asks the store nothing.
    for (const p of resident) await client.read(url, p * PS, PS, { etag });
    expect(store.requestCounts().get).toBe(before);
    expect(worker.info().hints?.prefetch.refused).toBeGreaterThan(0);
    await client.hint('job-2', { end: true });
  });

  it('serves but does not keep a missed page needed later than everything cached (Belady bypass)', async () => {
    const accesses = Array.from({ length: 8 }, (_, i) => at(i, i));
    await client.hint('job-3', { reset: true, cursor: 0, readFrom: 8, lookahead: 0, accesses });
    for (let i = 0; i < 8; i++) await client.read(url, i * PS, PS, { etag });
    const bypassed = worker.info().hints?.bypassed ?? 0;
    const got = await client.read(url, 39 * PS, PS, { etag }); // unhinted, cache full of hinted pages
    expect(Buffer.from(got).equals(data.subarray(39 * PS))).toBe(true);
    expect(worker.info().hints?.bypassed).toBe(bypassed + 1);
    const before = store.requestCounts().get;
    for (let i = 0; i < 8; i++) await client.read(url, i * PS, PS, { etag });
    expect(store.requestCounts().get).toBe(before);
    await client.hint('job-3', { end: true });
  });

  it('answers malformed hints with 400 and a coded error, and wants the token', async () => {
    const post = (body: string, auth = true) =>
      request(`${worker.url}/v1/hints`, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json', ...(auth ? { authorization: 'Bearer secret' } : {}) },
      });
    const bad = await post(JSON.stringify({ job: 'x', accesses: [{ url, etag, offset: 0, length: 1 }] }));
    expect(bad.statusCode).toBe(400);
    expect(await bad.body.json()).toMatchObject({ code: 'GRANARY_ERR_BAD_REQUEST', message: expect.stringMatching(/pos/) as unknown });
    const anon = await post(JSON.stringify({ job: 'x' }), false);
    expect(anon.statusCode).toBe(401);
    await anon.body.dump();
  });

  it('keeps answering reads when a hint request fails, and hints are not errors for the client', async () => {
    const other = new CacheClient({ workers: [worker.url, 'http://127.0.0.1:9'], ufs: store, token: 'secret', requestTimeoutMs: 2000 });
    try {
      const r = await other.hint('job-4', { reset: true, accesses: [at(0, 0)] });
      expect(r.failed).toBe(1);
      await other.hint('job-4', { end: true });
    } finally {
      await other.close();
    }
  });
});

describe('cache worker without hints', () => {
  it('refuses hints with 400 when started with hints: false, and reads as before', async () => {
    const store = new MemoryUfs();
    const { etag } = await store.write('s3://b/x', randomBytes(PS));
    const w = await startWorker({ ufs: store, pageSize: PS, memoryBytes: 4 * PS, hints: false });
    try {
      const res = await request(`${w.url}/v1/hints`, { method: 'POST', body: JSON.stringify({ job: 'a' }) });
      expect(res.statusCode).toBe(400);
      await res.body.dump();
      expect(w.info().hints).toBeUndefined();
      const c = new CacheClient({ workers: [w.url], ufs: store });
      expect((await c.read('s3://b/x', 0, 10, { etag })).byteLength).toBe(10);
      expect(await c.hint('a', { cursor: 0 })).toEqual({ accepted: 0, dropped: 0, failed: 1 });
      await c.close();
    } finally {
      await w.close();
    }
  });
});

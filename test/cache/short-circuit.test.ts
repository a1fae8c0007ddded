/**
 * Short-circuit reads against real workers with a tmpfs-style page tier (`shmDir`):
 * the client reads the page files itself, verifies each, and goes over HTTP for any
 * page that is absent, corrupt, or behind a nonce it cannot confirm.
 */
import { randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { pageFileName, pageKey } from '../../src/cache/page-key.js';
import { PAGE_HEADER_BYTES } from '../../src/cache/page-file.js';
import { shortCircuitEnabled } from '../../src/cache/short-circuit.js';
import { shmPagePath } from '../../src/cache/short-circuit-page.js';
import { NONCE_FILE } from '../../src/cache/short-circuit-tier.js';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { waitFor } from '../support/wait.js';

const MiB = 1024 * 1024;
const PAGE = 256 * 1024;

/** `/v1/read` requests a worker answered so far. */
async function readRequests(w: CacheWorker): Promise<number> {
  const text = await (await fetch(`${w.url}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^granary_worker_requests_total\{[^}]*endpoint="\/v1\/read"[^}]*\} (\d+)/gm)) n += Number(m[1]);
  return n;
}

/** Start the client's probes of `n` workers (a read of `url` touches them all) and wait until it trusts their tiers. */
async function primed(client: CacheClient, url: string, n: number): Promise<void> {
  await client.read(url);
  await waitFor(() => client.stats().shortCircuit.workers === n, { what: `the client to confirm ${n} short-circuit tiers` });
}

async function pageFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const sub of await readdir(join(dir, 'pages'))) for (const f of await readdir(join(dir, 'pages', sub))) out.push(join(dir, 'pages', sub, f));
  return out;
}

describe('short-circuit reads from a worker tier in shared memory', () => {
  const store = new MemoryUfs();
  const big = randomBytes(5 * MiB + 123);
  const bigUrl = 's3://bucket/sc/big.bin';
  const smalls = Array.from({ length: 6 }, (_, i) => ({ url: `s3://bucket/sc/small-${i}.bin`, bytes: randomBytes(100 * 1024 + i) }));
  let root: string;
  let workers: CacheWorker[] = [];
  const shm = (i: number): string => join(root, `w${i}`);

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'granary-sc-'));
    await store.write(bigUrl, big);
    for (const s of smalls) await store.write(s.url, s.bytes);
    workers = await Promise.all([0, 1].map((i) => startWorker({ id: `w${i}`, ufs: store, memoryBytes: 64 * MiB, pageSize: PAGE, shmDir: shm(i) })));
    // Warm every page over HTTP (the option off), so the page files exist.
    const warm = new CacheClient({ workers: workers.map((w) => w.url), ufs: store, blockSize: MiB, shortCircuit: false });
    await warm.read(bigUrl);
    for (const s of smalls) await warm.read(s.url);
    await warm.close();
  });

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.close()));
    await rm(root, { recursive: true, force: true });
  });

  async function totalReads(): Promise<number> {
    return (await Promise.all(workers.map(readRequests))).reduce((a, b) => a + b, 0);
  }

  it('advertises the directory and a nonce that is in the nonce file', async () => {
    const info = workers[0]!.info();
    expect(info.shortCircuit?.dir).toBe(shm(0));
    expect(info.shortCircuit?.pageSize).toBe(PAGE);
    expect((await readFile(join(shm(0), NONCE_FILE), 'utf8')).trim()).toBe(info.shortCircuit?.nonce);
  });

  it('reads warm pages from the files with no read request to any worker', async () => {
    const client = new CacheClient({ workers: workers.map((w) => w.url), ufs: store, blockSize: MiB });
    try {
      await primed(client, bigUrl, 2);
      const primedHits = client.stats().shortCircuit.bytes;
      const before = await totalReads();
      const storeBefore = store.requestCounts().get;
      expect(Buffer.from(await client.read(bigUrl)).equals(big)).toBe(true);
      const info = await client.stat(bigUrl);
      expect(Buffer.from(await client.read(bigUrl, 0, info.size)).equals(big)).toBe(true);
      // Unaligned: the first and last pages are cut.
      expect(Buffer.from(await client.read(bigUrl, 1000, 3 * MiB + 7)).equals(big.subarray(1000, 1000 + 3 * MiB + 7))).toBe(true);
      for (const s of smalls) expect(Buffer.from(await client.read(s.url)).equals(s.bytes)).toBe(true);
      expect(await totalReads()).toBe(before);
      expect(store.requestCounts().get).toBe(storeBefore);
      const st = client.stats();
      expect(st.shortCircuit.misses).toBe(0);
      expect(st.shortCircuit.hits).toBeGreaterThan(0);
      expect(st.shortCircuit.bytes - primedHits).toBe(2 * big.byteLength + 3 * MiB + 7 + smalls.reduce((n, s) => n + s.bytes.byteLength, 0));
      expect(st.fallbacks).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('detects a corrupt page file and reads the right bytes over HTTP', async () => {
    const s = smalls[0]!;
    const etag = (await store.stat(s.url)).etag;
    const name = pageFileName(pageKey(s.url, etag, 0));
    const paths = [0, 1].map((i) => shmPagePath(shm(i), name));
    const found = await Promise.all(paths.map((p) => stat(p).then(() => p, () => undefined)));
    const path = found.find((p) => p !== undefined);
    if (path === undefined) throw new Error(`no page file ${name} in either tier`);
    const file = await readFile(path);
    file[file.byteLength - 10] = (file[file.byteLength - 10] ?? 0) ^ 0xff;
    await writeFile(path, file);
    const client = new CacheClient({ workers: workers.map((w) => w.url), ufs: store, blockSize: MiB });
    try {
      await primed(client, bigUrl, 2);
      const sc = client.stats().shortCircuit;
      const before = await totalReads();
      expect(Buffer.from(await client.read(s.url)).equals(s.bytes)).toBe(true);
      expect(client.stats().shortCircuit).toMatchObject({ hits: sc.hits, misses: sc.misses + 1 });
      expect(await totalReads()).toBe(before + 1);
    } finally {
      await client.close();
    }
  });

  it('makes the page files and the nonce readable by the worker user only', async () => {
    expect((await stat(shm(0))).mode & 0o7777).toBe(0o700);
    expect((await stat(join(shm(0), NONCE_FILE))).mode & 0o777).toBe(0o600);
    const files = await pageFiles(shm(0));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect((await stat(f)).mode & 0o777).toBe(0o600);
  });

  it('leaves the reading to HTTP with the option off', async () => {
    const client = new CacheClient({ workers: workers.map((w) => w.url), ufs: store, shortCircuit: false });
    try {
      const before = await totalReads();
      expect(Buffer.from(await client.read(smalls[1]!.url)).equals(smalls[1]!.bytes)).toBe(true);
      expect(await totalReads()).toBe(before + 1);
      expect(client.stats().shortCircuit).toEqual({ hits: 0, misses: 0, bytes: 0, workers: 0 });
    } finally {
      await client.close();
    }
  });

  it('takes the option from GRANARY_SHORT_CIRCUIT when not given', () => {
    expect(shortCircuitEnabled(undefined, {})).toBe(true);
    expect(shortCircuitEnabled(undefined, { GRANARY_SHORT_CIRCUIT: '0' })).toBe(false);
    expect(shortCircuitEnabled(undefined, { GRANARY_SHORT_CIRCUIT: 'off' })).toBe(false);
    expect(shortCircuitEnabled(true, { GRANARY_SHORT_CIRCUIT: 'off' })).toBe(true);
    expect(() => shortCircuitEnabled(undefined, { GRANARY_SHORT_CIRCUIT: 'maybe' })).toThrow(/GRANARY_SHORT_CIRCUIT/);
  });

  it('does not short-circuit a worker whose nonce file says another host', async () => {
    const w = workers[1]!;
    const nonceFile = join(shm(1), NONCE_FILE);
    const real = await readFile(nonceFile, 'utf8');
    await writeFile(nonceFile, 'f'.repeat(32));
    const client = new CacheClient({ workers: [w.url], ufs: store });
    let onProbe: (m: unknown) => void = () => undefined;
    const probed = new Promise<unknown>((resolve) => (onProbe = resolve));
    subscribe('granary:client:short-circuit', onProbe);
    try {
      await client.read(smalls[3]!.url);
      expect(await probed).toMatchObject({ worker: w.url, usable: false, reason: expect.stringMatching(/nonce mismatch/) as string });
      const before = await readRequests(w);
      expect(Buffer.from(await client.read(smalls[2]!.url)).equals(smalls[2]!.bytes)).toBe(true);
      expect(await readRequests(w)).toBe(before + 1);
      expect(client.stats().shortCircuit).toEqual({ hits: 0, misses: 0, bytes: 0, workers: 0 });
    } finally {
      unsubscribe('granary:client:short-circuit', onProbe);
      await client.close();
      await writeFile(nonceFile, real);
    }
  });
});

describe('a short-circuit tier under its budget', () => {
  it('evicts page files to stay within memoryBytes and still reads right', async () => {
    const root = await mkdtemp(join(tmpdir(), 'granary-sc-evict-'));
    const store = new MemoryUfs();
    const budget = 4 * PAGE + 4 * 1024;
    const w = await startWorker({ ufs: store, memoryBytes: budget, pageSize: PAGE, shmDir: join(root, 'shm') });
    const client = new CacheClient({ workers: [w.url], ufs: store });
    try {
      const files = Array.from({ length: 6 }, (_, i) => ({ url: `s3://b/e-${i}.bin`, bytes: randomBytes(2 * PAGE - 100 * i) }));
      for (const f of files) await store.write(f.url, f.bytes);
      for (let round = 0; round < 2; round++) {
        for (const f of files) expect(Buffer.from(await client.read(f.url)).equals(f.bytes)).toBe(true);
      }
      const info = w.info();
      expect(info.usage.memoryBytes).toBeLessThanOrEqual(budget);
      expect(info.counters.evictions).toBeGreaterThan(0);
      let onDisk = 0;
      for (const p of await pageFiles(join(root, 'shm'))) onDisk += (await stat(p)).size;
      expect(onDisk).toBeLessThanOrEqual(budget);
      expect(onDisk).toBeGreaterThan(PAGE_HEADER_BYTES);
    } finally {
      await client.close();
      await w.close();
      await rm(root, { recursive: true, force: true });
    }
  });

  it('tells the worker which pages it read, so LRU keeps them over pages nobody read', async () => {
    const root = await mkdtemp(join(tmpdir(), 'granary-sc-touch-'));
    const store = new MemoryUfs();
    const files = Array.from({ length: 5 }, (_, i) => ({ url: `s3://b/t-${i}.bin`, bytes: randomBytes(PAGE - 1000) }));
    for (const f of files) await store.write(f.url, f.bytes);
    // Room for four pages (and their headers), not five.
    const w = await startWorker({ ufs: store, memoryBytes: 4 * PAGE + 2000, pageSize: PAGE, shmDir: join(root, 'shm'), hints: false });
    const client = new CacheClient({ workers: [w.url], ufs: store });
    const fileOf = async (i: number): Promise<string> => shmPagePath(join(root, 'shm'), pageFileName(pageKey(files[i]!.url, (await store.stat(files[i]!.url)).etag, 0)));
    const exists = async (i: number): Promise<boolean> => stat(await fileOf(i)).then(() => true, () => false);
    try {
      for (const f of files.slice(0, 4)) await client.read(f.url);
      await waitFor(() => client.stats().shortCircuit.workers === 1, { what: 'the probe' });
      const hits = w.info().counters.hits;
      // The oldest page, read again straight from its file.
      expect(Buffer.from(await client.read(files[0]!.url)).equals(files[0]!.bytes)).toBe(true);
      expect(client.stats().shortCircuit.hits).toBe(1);
      await waitFor(() => w.info().counters.hits === hits + 1, { what: 'the worker to hear of the short-circuit hit' });
      await client.read(files[4]!.url);
      await waitFor(async () => !(await exists(1)), { what: 'the least recently read page to be evicted' });
      expect(await exists(0)).toBe(true);
    } finally {
      await client.close();
      await w.close();
      await rm(root, { recursive: true, force: true });
    }
  });

  it('shares the tier with a group when shmGroup is given, and refuses it next to a disk tier', async () => {
    const root = await mkdtemp(join(tmpdir(), 'granary-sc-group-'));
    const store = new MemoryUfs();
    await store.write('s3://b/g.bin', randomBytes(1000));
    const gid = process.getgid?.() ?? 0;
    const w = await startWorker({ ufs: store, pageSize: PAGE, shmDir: join(root, 'shm'), shmGroup: gid });
    const client = new CacheClient({ workers: [w.url], ufs: store });
    try {
      await client.read('s3://b/g.bin');
      expect((await stat(join(root, 'shm'))).mode & 0o7777).toBe(0o2750);
      for (const p of await pageFiles(join(root, 'shm'))) expect((await stat(p)).mode & 0o777).toBe(0o640);
      await expect(startWorker({ ufs: store, shmDir: join(root, 'x'), diskDir: join(root, 'd') })).rejects.toMatchObject({ code: 'GRANARY_ERR_CONFIG' });
    } finally {
      await client.close();
      await w.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});

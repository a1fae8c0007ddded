/**
 * A worker's limits, against a real worker whose store reads wait at a gate the test
 * opens: concurrency in total and per connection (the excess answered 503
 * GRANARY_ERR_BUSY with Retry-After, which a client takes as a fallback without
 * tripping the worker's breaker), the largest range, and the header timeout that
 * closes a connection trickling its headers while others are served.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { startWorker, type CacheWorker, type WorkerOptions } from '../../src/cache/worker.js';
import { ErrorCodes } from '../../src/errors.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import type { UnderFileSystem } from '../../src/ufs/types.js';
import { deferred, waitFor } from '../support/wait.js';

const objects = ['a', 'b', 'c', 'd'].map((k) => ({ url: `s3://bucket/${k}.txt`, text: `object ${k} `.repeat(100) }));

/** The store, and a view of it whose reads wait while the gate is shut. */
async function gatedStore(): Promise<{ memory: MemoryUfs; gated: UnderFileSystem; waiting: () => number; open: () => void }> {
  const memory = new MemoryUfs();
  for (const o of objects) await memory.write(o.url, Buffer.from(o.text));
  let gate = deferred();
  let waiting = 0;
  let shut = true;
  const gated: UnderFileSystem = {
    stat: (url, o) => memory.stat(url, o),
    list: (prefix, o) => memory.list(prefix, o),
    read: async (url, offset, length, o) => {
      if (shut) {
        waiting++;
        await gate.promise;
      }
      return memory.read(url, offset, length, o);
    },
    write: (url, data, o) => memory.write(url, data, o),
    delete: (url, o) => memory.delete(url, o),
    close: async () => undefined,
    [Symbol.asyncDispose]: async () => undefined,
  };
  const open = (): void => {
    shut = false;
    gate.resolve();
    gate = deferred();
  };
  return { memory, gated, waiting: () => waiting, open };
}

async function readQuery(worker: CacheWorker, url: string, length: number): Promise<Response> {
  const info = await (await fetch(`${worker.url}/v1/stat?url=${encodeURIComponent(url)}`)).json() as { etag: string };
  return fetch(`${worker.url}/v1/read?${new URLSearchParams({ url, etag: info.etag, offset: '0', length: String(length) }).toString()}`);
}

async function metric(worker: CacheWorker, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const started: CacheWorker[] = [];
async function worker(options: WorkerOptions): Promise<CacheWorker> {
  const w = await startWorker({ hints: false, ...options });
  started.push(w);
  return w;
}

afterEach(async () => {
  await Promise.all(started.splice(0).map((w) => w.destroy()));
});

describe('concurrency limits', () => {
  it('answers requests over maxConcurrentRequests 503 GRANARY_ERR_BUSY with Retry-After, counts them, and keeps /healthz and /metrics', async () => {
    const store = await gatedStore();
    const w = await worker({ ufs: store.gated, maxConcurrentRequests: 2 });
    const held = [readQuery(w, objects[0]!.url, 100), readQuery(w, objects[1]!.url, 100)];
    await waitFor(() => store.waiting() >= 2, { what: 'two reads to wait at the store' });
    const busy = await readQuery(w, objects[2]!.url, 100);
    expect(busy.status).toBe(503);
    expect(busy.headers.get('retry-after')).toBe('1');
    expect(((await busy.json()) as { code: string }).code).toBe(ErrorCodes.BUSY);
    expect((await fetch(`${w.url}/healthz`)).status).toBe(200);
    expect(await metric(w, 'granary_worker_busy_total', 'limit="total"')).toBeGreaterThanOrEqual(1);
    store.open();
    for (const r of await Promise.all(held)) expect(r.status).toBe(200);
    expect((await readQuery(w, objects[2]!.url, 100)).status).toBe(200);
  });

  it('is a fallback to the store for a client, not a failure, and leaves the worker in the ring', async () => {
    const store = await gatedStore();
    const w = await worker({ ufs: store.gated, maxConcurrentRequests: 1 });
    await using client = new CacheClient({ workers: [w.url], ufs: store.memory, breaker: { cooldownMs: 60_000 } });
    const held = readQuery(w, objects[0]!.url, 100);
    await waitFor(() => store.waiting() >= 1, { what: 'a read to wait at the store' });
    expect(Buffer.from(await client.read(objects[3]!.url)).toString()).toBe(objects[3]!.text);
    const fallbacks = client.stats().fallbacks;
    expect(fallbacks).toBeGreaterThanOrEqual(1);
    store.open();
    expect((await held).status).toBe(200);
    // The breaker stayed closed (a 60 s cooldown would keep an opened one open): the worker answers the next read.
    expect(Buffer.from(await client.read(objects[3]!.url)).toString()).toBe(objects[3]!.text);
    expect(client.stats().fallbacks).toBe(fallbacks);
    expect(client.stats().bytesFromCache).toBe(objects[3]!.text.length);
  });

  it('answers pipelined requests over maxRequestsPerConnection 503 on that connection', async () => {
    const store = await gatedStore();
    const w = await worker({ ufs: store.gated, maxRequestsPerConnection: 1 });
    const etags = await Promise.all(objects.slice(0, 2).map(async (o) => (await store.memory.stat(o.url)).etag));
    const { port } = new URL(w.url);
    const socket = connect(Number(port), '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8').on('data', (d: string) => (text += d));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const get = (i: number, last: boolean): string => {
      const q = new URLSearchParams({ url: objects[i]!.url, etag: etags[i]!, offset: '0', length: '50' }).toString();
      return `GET /v1/read?${q} HTTP/1.1\r\nhost: worker\r\n${last ? 'connection: close\r\n' : ''}\r\n`;
    };
    socket.write(get(0, false) + get(1, true));
    await waitFor(() => store.waiting() >= 1, { what: 'the first read to wait at the store' });
    store.open();
    await closed;
    expect([...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]), text).toEqual(['200', '503']);
    expect(text).toMatch(/retry-after: 1/i);
    expect(text).toContain(ErrorCodes.BUSY);
    expect(await metric(w, 'granary_worker_busy_total', 'limit="connection"')).toBe(1);
  });

  it('refuses limits that make no sense', async () => {
    await expect(startWorker({ maxConcurrentRequests: 0 })).rejects.toMatchObject({ code: ErrorCodes.INVALID_ARGUMENT });
    await expect(startWorker({ maxRequestsPerConnection: 1.5 })).rejects.toMatchObject({ code: ErrorCodes.INVALID_ARGUMENT });
    await expect(startWorker({ headersTimeoutMs: 2000, requestTimeoutMs: 1000 })).rejects.toMatchObject({ code: ErrorCodes.INVALID_ARGUMENT });
  });
});

describe('the largest range', () => {
  it('answers a read over maxReadBytes 400 GRANARY_ERR_RANGE_TOO_LARGE, and a client reads that part from the store', async () => {
    const store = await gatedStore();
    store.open();
    const w = await worker({ ufs: store.gated, maxReadBytes: 64 });
    const res = await readQuery(w, objects[0]!.url, 65);
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe(ErrorCodes.RANGE_TOO_LARGE);
    expect(body.message).toContain('64');
    expect((await readQuery(w, objects[0]!.url, 64)).status).toBe(200);
    await using client = new CacheClient({ workers: [w.url], ufs: store.memory });
    expect(Buffer.from(await client.read(objects[0]!.url)).toString()).toBe(objects[0]!.text);
    expect(client.stats().fallbacks).toBeGreaterThanOrEqual(1);
    expect(Buffer.from(await client.read(objects[0]!.url, 0, 10)).toString()).toBe(objects[0]!.text.slice(0, 10));
    expect(client.stats().bytesFromCache).toBe(10);
  });
});

describe('the header timeout', () => {
  it('closes a connection that sends its headers a byte at a time, while a normal request is served', async () => {
    const w = await worker({ ufs: new MemoryUfs(), headersTimeoutMs: 500, requestTimeoutMs: 1000 });
    const { port } = new URL(w.url);
    const slow: Socket = connect(Number(port), '127.0.0.1');
    let answer = '';
    slow.setEncoding('utf8').on('data', (d: string) => (answer += d));
    slow.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => slow.once('close', () => resolve()));
    const head = `GET /healthz HTTP/1.1\r\nhost: worker\r\nx-slow: ${'a'.repeat(10_000)}`;
    let sent = 0;
    // The attack itself: one byte at a time, never finishing the headers.
    const drip = setInterval(() => {
      if (!slow.destroyed && sent < head.length) slow.write(head[sent++]!);
    }, 100);
    try {
      await waitFor(() => sent >= 3, { what: 'the slow client to start' });
      const normal = await fetch(`${w.url}/healthz`);
      expect(normal.status).toBe(200);
      expect(await normal.text()).toBe('ok\n');
      await closed;
      expect(answer).toMatch(/^HTTP\/1\.1 408/);
      expect(sent).toBeLessThan(head.length);
    } finally {
      clearInterval(drip);
      slow.destroy();
    }
  });
});

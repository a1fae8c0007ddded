import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorker } from '../../src/cache/worker.js';
import { ErrorCodes } from '../../src/errors.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import type { ReadOptions } from '../../src/ufs/types.js';

/** A store whose reads never answer until aborted; `reading` settles when the first read starts. */
class StuckStore extends MemoryUfs {
  #started: () => void = () => undefined;
  readonly reading = new Promise<void>((resolve) => (this.#started = resolve));
  override read(_url: string, _offset: number, _length: number, options: ReadOptions = {}): Promise<Uint8Array> {
    this.#started();
    return new Promise((_resolve, reject) => options.signal?.addEventListener('abort', () => reject(options.signal?.reason), { once: true }));
  }
}

/** A store whose reads wait until `release()`; `reading` settles when the first read starts. */
class GatedStore extends MemoryUfs {
  #started: () => void = () => undefined;
  #open: () => void = () => undefined;
  readonly reading = new Promise<void>((resolve) => (this.#started = resolve));
  readonly #gate = new Promise<void>((resolve) => (this.#open = resolve));
  release(): void {
    this.#open();
  }
  override async read(url: string, offset: number, length: number, options: ReadOptions = {}): Promise<Uint8Array> {
    this.#started();
    await this.#gate;
    return super.read(url, offset, length, options);
  }
}

let dir: string;
let taken: Server;
let takenPort: number;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'granary-worker-life-'));
  taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  takenPort = (taken.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => taken.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

describe('worker lifecycle', () => {
  it('fails to start on a port already taken with a coded error, releasing its page store so a retry on the same directory works', async () => {
    const diskDir = join(dir, 'disk');
    await expect(startWorker({ port: takenPort, diskDir, diskBytes: 1 << 20 })).rejects.toMatchObject({
      code: ErrorCodes.CONFIG,
      message: expect.stringContaining(`127.0.0.1:${takenPort}`) as unknown,
    });
    const w = await startWorker({ port: 0, diskDir, diskBytes: 1 << 20 });
    try {
      expect((await fetch(`${w.url}/healthz`)).status).toBe(200);
    } finally {
      await w.close();
    }
  });

  it('rejects with the signal reason when aborted while starting, releasing what it opened', async () => {
    const diskDir = join(dir, 'abort');
    const reason = new Error('stop starting');
    await expect(startWorker({ diskDir, diskBytes: 1 << 20, signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    // etcd that never answers: the start waits for registration until the signal fires.
    const ac = new AbortController();
    const starting = startWorker({ diskDir, diskBytes: 1 << 20, signal: ac.signal, etcd: { endpoints: [`http://127.0.0.1:${takenPort}`], registerTimeoutMs: 600_000 } });
    ac.abort(reason);
    await expect(starting).rejects.toBe(reason);
    const w = await startWorker({ diskDir, diskBytes: 1 << 20 });
    await w.close();
  });

  it('destroy() cuts in-flight requests and aborts their store reads at once; close() and destroy() are idempotent', async () => {
    const store = new StuckStore();
    await store.write('s3://bucket/stuck.bin', new Uint8Array(1000));
    const w = await startWorker({ ufs: store });
    const inFlight = fetch(`${w.url}/v1/read?url=${encodeURIComponent('s3://bucket/stuck.bin')}&offset=0&length=10`).then(
      (r) => r.status,
      (e: unknown) => e,
    );
    await store.reading;
    const destroyed = w.destroy(new Error('operator said stop'));
    expect(w.destroy()).toBeInstanceOf(Promise);
    await destroyed;
    const outcome = await inFlight;
    expect(outcome).not.toBe(200);
    await w.close();
    await w.close();
    await w.destroy();
    await expect(fetch(`${w.url}/healthz`)).rejects.toThrow();
  });

  it('close() drains: a read in flight is answered with its bytes before the worker stops', async () => {
    const store = new GatedStore();
    await store.write('s3://bucket/x.bin', new Uint8Array(4096).fill(7));
    const w = await startWorker({ ufs: store });
    const res = fetch(`${w.url}/v1/read?url=${encodeURIComponent('s3://bucket/x.bin')}&offset=0&length=4096`);
    await store.reading;
    const closing = w.close();
    expect(w.close()).toBe(closing);
    store.release();
    const r = await res;
    expect(r.status).toBe(200);
    expect(Buffer.from(await r.arrayBuffer()).equals(Buffer.alloc(4096, 7))).toBe(true);
    await closing;
    await w.destroy();
  });
});

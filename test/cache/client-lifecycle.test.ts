import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { encodeTrailer } from '../../src/cache/page-checksum.js';
import { ErrorCodes } from '../../src/errors.js';
import { MemoryUfs } from '../../src/ufs/memory.js';

/** Long enough for a loaded 2-core machine to start tsx; a leaked handle keeps the child alive far longer. */
const CHILD_EXIT_BOUND_MS = 45_000;

interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  exitedByItself: boolean;
}

function runChild(fixture: string): Promise<ChildRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    let exitedByItself = true;
    const bound = setTimeout(() => {
      exitedByItself = false;
      child.kill('SIGKILL');
    }, CHILD_EXIT_BOUND_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(bound);
      resolve({ code, signal, stdout, stderr, exitedByItself });
    });
  });
}

/** A stub worker on loopback: `handle` answers what it wants, or nothing. */
async function stubWorker(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; server: Server; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method ?? ''} ${(req.url ?? '').split('?')[0] ?? ''}`);
    handle(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, requests };
}

async function stop(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
}

const never = (): void => undefined;

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

describe('CacheClient lifecycle', () => {
  it('rejects 200 reads queued against a worker that never answers with GRANARY_ERR_CLOSED on close, and leaves no handle behind', async () => {
    const run = await runChild(fileURLToPath(new URL('../fixtures/closed-client-child.ts', import.meta.url)));
    expect(run.stderr).toBe('');
    expect(run.exitedByItself).toBe(true);
    expect(run.code).toBe(0);
    const out = JSON.parse(run.stdout) as { codes: string[]; settledMs: number; afterClose: string };
    expect(out.codes).toHaveLength(202);
    expect(new Set(out.codes)).toEqual(new Set([ErrorCodes.CLOSED]));
    expect(out.settledMs).toBeLessThan(1000);
    expect(out.afterClose).toBe(ErrorCodes.CLOSED);
  });

  it('removes a read aborted while queued and rejects it with the signal reason, leaving the others running', async () => {
    const held: ServerResponse[] = [];
    const w = await stubWorker((_req, res) => held.push(res));
    const client = new CacheClient({ workers: [w.url], ufs: new MemoryUfs(), concurrency: 1 });
    try {
      const first = client.read('s3://b/k', 0, 10, { etag: 'e1' });
      while (w.requests.length < 1) await new Promise((r) => setImmediate(r));
      const ac = new AbortController();
      const queued = client.read('s3://b/k', 100, 10, { etag: 'e1', signal: ac.signal });
      const reason = new Error('caller gave up');
      ac.abort(reason);
      await expect(queued).rejects.toBe(reason);
      // The first read is still in flight and completes once the worker answers.
      // The bytes and their page checksum (one piece of a 1 MiB page).
      const body = Buffer.concat([Buffer.alloc(10, 7), encodeTrailer([crc32(Buffer.alloc(10, 7))])]);
      held[0]?.writeHead(200, { 'x-granary-etag': 'e1', 'x-granary-cache': 'hit', 'x-granary-crc32': '1048576', 'content-length': String(body.byteLength) }).end(body);
      expect(Buffer.from(await first).equals(Buffer.alloc(10, 7))).toBe(true);
      expect(w.requests).toEqual(['GET /v1/read']);
    } finally {
      await client.close();
      await stop(w.server);
    }
  });

  it('rejects new calls at once after close, and close and destroy are idempotent', async () => {
    const client = new CacheClient({ workers: [], ufs: new MemoryUfs() });
    const first = client.close();
    expect(client.close()).toBe(first);
    expect(client.destroy(new Error('late'))).toBe(first);
    await first;
    for (const call of [
      client.read('s3://b/k', 0, 1),
      client.stat('s3://b/k'),
      client.write('s3://b/k', new Uint8Array(1)),
      client.delete('s3://b/k'),
      client.ready(),
      client.invalidate('s3://b/k'),
      client.hint('j', { end: true }),
      client.load('s3://b/'),
      (async () => {
        for await (const f of client.list('s3://b/')) void f;
      })(),
    ]) {
      await expect(call).rejects.toMatchObject({ code: ErrorCodes.CLOSED });
    }
    expect(client.stats().ufsRequests).toBe(0);
  });

  it('destroy(err) rejects calls in flight with err', async () => {
    const w = await stubWorker(never);
    const client = new CacheClient({ workers: [w.url], ufs: new MemoryUfs() });
    try {
      const reads = [client.read('s3://b/k', 0, 10, { etag: 'e' }), client.read('s3://b/k', 0, 2 * 1024 * 1024, { etag: 'e' }), client.stat('s3://b/k')];
      const outcomes = reads.map((r) => r.then(() => 'resolved', (e: unknown) => e));
      while (w.requests.length < 2) await new Promise((r) => setImmediate(r));
      const err = new Error('shutting down');
      await client.destroy(err);
      for (const o of outcomes) expect(await o).toBe(err);
      await expect(client.read('s3://b/k', 0, 1)).rejects.toMatchObject({ code: ErrorCodes.CLOSED });
    } finally {
      await stop(w.server);
    }
  });

  it('closes with `await using`', async () => {
    const w = await stubWorker(never);
    let pending: Promise<unknown> | undefined;
    try {
      {
        await using client = new CacheClient({ workers: [w.url], ufs: new MemoryUfs() });
        pending = client.stat('s3://b/k').catch((e: unknown) => e);
        while (w.requests.length < 1) await new Promise((r) => setImmediate(r));
      }
      expect(await pending).toMatchObject({ code: ErrorCodes.CLOSED });
    } finally {
      await stop(w.server);
    }
  });

  it('aborts ready(), invalidate(), hint() and the polling wait of load() with the signal reason', async () => {
    const w = await stubWorker((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path === '/v1/list') json(res, 200, [{ url: 's3://b/p/a.bin', size: 10, etag: 'e' }]);
      else if (path === '/v1/load') json(res, 202, { id: 'job-1' });
      else if (path === '/v1/jobs/job-1') json(res, 200, { state: 'running', bytesDone: 0 });
      // invalidate and hints: never answered
    });
    const client = new CacheClient({ workers: [w.url], ufs: new MemoryUfs() });
    try {
      const reason = new Error('stop');
      await expect(client.ready({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);

      const progress: number[] = [];
      const loading = new AbortController();
      const load = client.load('s3://b/p/', {
        signal: loading.signal,
        onProgress: (done) => {
          progress.push(done);
          // Abort during the wait between two polls.
          if (progress.length === 2) loading.abort(reason);
        },
      });
      await expect(load).rejects.toBe(reason);
      expect(w.requests.filter((r) => r === 'GET /v1/jobs/job-1')).toHaveLength(2);

      const inv = new AbortController();
      const invalidating = client.invalidate('s3://b/p/a.bin', { signal: inv.signal });
      const hinting = new AbortController();
      const hint = client.hint('job', { cursor: 0 }, { signal: hinting.signal });
      while (!w.requests.includes('POST /v1/invalidate') || !w.requests.includes('POST /v1/hints')) await new Promise((r) => setImmediate(r));
      inv.abort(reason);
      hinting.abort(reason);
      await expect(invalidating).rejects.toBe(reason);
      await expect(hint).rejects.toBe(reason);
    } finally {
      await client.close();
      await stop(w.server);
    }
  });
});

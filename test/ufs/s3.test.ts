import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Ufs, type S3UfsOptions } from '../../src/ufs/s3.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';
import { deferred } from '../support/wait.js';
import { describeConformance } from './conformance.js';

describeConformance('s3 (s3rver)', { writable: true, buckets: true, credentials: true }, async () => {
  const s3 = await startS3rver({ buckets: ['conformance'] });
  const options: S3UfsOptions = {
    endpoint: s3.endpoint,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    // Small parts so the 3 MiB conformance object is read as parallel ranged GETs.
    partSize: 1024 * 1024,
    parallelism: 4,
  };
  // The adapter itself, not the router: this suite is about the adapter's contract.
  const ufs = new S3Ufs(options);
  return {
    ufs,
    base: 's3://conformance/suite/',
    listable: true,
    missingBucketUrl: 's3://no-such-bucket-here/x.bin',
    // s3rver checks that the access key exists but does not verify SigV4 signatures, so a
    // wrong secret would pass: use an unknown key id (Swift's suite checks a wrong secret).
    badCredentials: () => new S3Ufs({ ...options, credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: 'S3RVER' } }),
    async close() {
      await ufs.close();
      await s3.close();
    },
  };
});

// Reads through the AWS SDK, as configurations with the SDK's credential chain (profiles, SSO, IMDS) have them.
describeConformance('s3 (s3rver, reads through the AWS SDK)', { writable: true, buckets: true, credentials: true }, async () => {
  const s3 = await startS3rver({ buckets: ['conformance'] });
  const options: S3UfsOptions = {
    endpoint: s3.endpoint,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    partSize: 1024 * 1024,
    parallelism: 4,
    leanReads: false,
  };
  const ufs = new S3Ufs(options);
  return {
    ufs,
    base: 's3://conformance/sdk/',
    listable: true,
    missingBucketUrl: 's3://no-such-bucket-here/x.bin',
    badCredentials: () => new S3Ufs({ ...options, credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: 'S3RVER' } }),
    async close() {
      await ufs.close();
      await s3.close();
    },
  };
});

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; endpoint: string; close(): Promise<void> }> {
  const server = createServer(handler);
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Forward a request to s3rver unchanged (the signature stays valid: same Host is not required by s3rver). */
function proxy(target: S3rverHandle, req: IncomingMessage, res: ServerResponse): void {
  const up = httpRequest(
    { host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers: req.headers },
    (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    },
  );
  up.on('error', () => res.destroy());
  req.pipe(up);
}

describe('S3Ufs against s3rver', () => {
  let s3: S3rverHandle;
  let ufs: S3Ufs;
  const big = randomBytes(5 * 1024 * 1024 + 123);
  const opts = (s: S3rverHandle, extra: S3UfsOptions = {}): S3UfsOptions => ({
    endpoint: s.endpoint,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    ...extra,
  });

  beforeAll(async () => {
    s3 = await startS3rver({ buckets: ['unit'] });
    ufs = new S3Ufs(opts(s3, { partSize: 1024 * 1024, parallelism: 4 }));
    await ufs.write('s3://unit/big.bin', big);
  });

  afterAll(async () => {
    await ufs.close();
    await s3.close();
  });

  it('reads a large range as several parallel ranged GETs with exact bytes', async () => {
    const before = ufs.requestCounts();
    const off = 12_345;
    const len = big.byteLength - off - 7;
    const got = await ufs.read('s3://unit/big.bin', off, len);
    const after = ufs.requestCounts();
    expect(Buffer.from(got).equals(big.subarray(off, off + len))).toBe(true);
    expect(after.get - before.get).toBe(Math.ceil(len / (1024 * 1024)));
    expect(after.bytesRead - before.bytesRead).toBe(len);
  });

  it('reads a whole large object of unknown size as a first GET and parallel ranged GETs, with no HEAD', async () => {
    const before = ufs.requestCounts();
    const got = await ufs.read('s3://unit/big.bin');
    const after = ufs.requestCounts();
    expect(Buffer.from(got).equals(big)).toBe(true);
    expect({ get: after.get - before.get, stat: after.stat - before.stat, bytesRead: after.bytesRead - before.bytesRead }).toEqual({
      get: Math.ceil(big.byteLength / (1024 * 1024)),
      stat: 0,
      bytesRead: big.byteLength,
    });
  });

  it('writes a large buffer and a stream as multipart uploads that read back exactly', async () => {
    const data = randomBytes(11 * 1024 * 1024 + 5);
    const w = new S3Ufs(opts(s3, { partSize: 5 * 1024 * 1024 }));
    try {
      const before = w.requestCounts();
      const info = await w.write('s3://unit/multi.bin', data);
      expect(info.size).toBe(data.byteLength);
      // create + 3 parts + complete
      expect(w.requestCounts().put - before.put).toBe(5);
      expect(Buffer.from(await w.read('s3://unit/multi.bin', 0, data.byteLength)).equals(data)).toBe(true);
      const streamed = await w.write(
        's3://unit/streamed.bin',
        (async function* () {
          for (let at = 0; at < data.byteLength; at += 1_000_000) yield data.subarray(at, at + 1_000_000);
        })(),
      );
      expect(streamed.size).toBe(data.byteLength);
      expect((await w.stat('s3://unit/streamed.bin')).etag).toBe(streamed.etag);
      expect(Buffer.from(await w.read('s3://unit/streamed.bin', 0, data.byteLength)).equals(data)).toBe(true);
      expect(w.requestCounts().bytesWritten).toBe(2 * data.byteLength);
    } finally {
      await w.close();
    }
  });

  it('lists with the bucket root as prefix and stats listed objects identically', async () => {
    const listed = [];
    for await (const f of ufs.list('s3://unit/')) listed.push(f);
    const bigInfo = listed.find((f) => f.url === 's3://unit/big.bin');
    expect(bigInfo?.size).toBe(big.byteLength);
    expect(bigInfo?.etag).toBe((await ufs.stat('s3://unit/big.bin')).etag);
  });

  it('detects an object replaced between the parts of one read', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    await ufs.write('s3://unit/racy.bin', data);
    const v1 = await ufs.stat('s3://unit/racy.bin');
    await ufs.write('s3://unit/racy.bin', randomBytes(4 * 1024 * 1024));
    await expect(ufs.read('s3://unit/racy.bin', 0, data.byteLength, { etag: v1.etag })).rejects.toMatchObject({
      code: 'GRANARY_ERR_VERSION_CHANGED',
    });

    // Swap the object after the first part's response: later parts must not mix versions.
    const other = randomBytes(4 * 1024 * 1024);
    let gets = 0;
    let swapped: Promise<unknown> | undefined;
    const front = await listen((req, res) => {
      if (req.method === 'GET' && req.url?.includes('racy.bin') && ++gets === 2) {
        swapped ??= ufs.write('s3://unit/racy.bin', other);
        void swapped.then(() => proxy(s3, req, res));
        return;
      }
      proxy(s3, req, res);
    });
    const viaFront = new S3Ufs(opts(s3, { endpoint: front.endpoint, partSize: 1024 * 1024, parallelism: 1 }));
    try {
      await expect(viaFront.read('s3://unit/racy.bin', 0, data.byteLength)).rejects.toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
    } finally {
      await viaFront.close();
      await front.close();
    }
  });

  it('retries 503 SlowDown and 500 a bounded number of times, then succeeds', async () => {
    let failuresLeft = 2;
    let seen = 0;
    const front = await listen((req, res) => {
      seen++;
      if (failuresLeft > 0) {
        failuresLeft--;
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.end('<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
        return;
      }
      proxy(s3, req, res);
    });
    const f = new S3Ufs(opts(s3, { endpoint: front.endpoint, maxAttempts: 4, retryBaseDelayMs: 1 }));
    try {
      const got = await f.read('s3://unit/big.bin', 100, 1000);
      expect(Buffer.from(got).equals(big.subarray(100, 1100))).toBe(true);
      expect(seen).toBe(3);
      expect(f.requestCounts().get).toBe(3);
    } finally {
      await f.close();
      await front.close();
    }
  });

  it('gives up after maxAttempts with GRANARY_ERR_UNAVAILABLE', async () => {
    let seen = 0;
    const front = await listen((_req, res) => {
      seen++;
      res.writeHead(500);
      res.end();
    });
    const f = new S3Ufs(opts(s3, { endpoint: front.endpoint, maxAttempts: 3, retryBaseDelayMs: 1 }));
    try {
      const err = (await f.stat('s3://unit/big.bin').then(
        () => new Error('resolved'),
        (e: unknown) => e,
      )) as Error;
      expect(err).toMatchObject({ code: 'GRANARY_ERR_UNAVAILABLE' });
      expect(err.message).toContain('s3://unit/big.bin');
      expect(seen).toBe(3);
      expect(f.requestCounts().stat).toBe(3);
    } finally {
      await f.close();
      await front.close();
    }
  });

  it('retries connection resets, including a body cut short, and resumes the missing bytes', async () => {
    let seen = 0;
    const front = await listen((req, res) => {
      seen++;
      if (seen === 1) {
        req.socket.destroy();
        return;
      }
      if (seen === 2) {
        // Headers and half the body, then a reset.
        const up = httpRequest({ host: '127.0.0.1', port: s3.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          let sent = 0;
          r.on('data', (c: Buffer) => {
            if (sent >= 500) return;
            const part = c.subarray(0, 500 - sent);
            sent += part.byteLength;
            // Reset once the last of the 500 bytes is flushed, so the client gets them before the cut.
            if (sent >= 500) res.write(part, () => req.socket.destroy());
            else res.write(part);
          });
        });
        req.pipe(up);
        return;
      }
      proxy(s3, req, res);
    });
    const f = new S3Ufs(opts(s3, { endpoint: front.endpoint, maxAttempts: 4, retryBaseDelayMs: 1 }));
    try {
      const got = await f.read('s3://unit/big.bin', 1000, 100_000);
      expect(Buffer.from(got).equals(big.subarray(1000, 101_000))).toBe(true);
      expect(seen).toBe(3);
      expect(f.requestCounts().bytesRead).toBe(100_000);
    } finally {
      await f.close();
      await front.close();
    }
  });

  it('does not retry 404 or 403', async () => {
    let seen = 0;
    const front = await listen((req, res) => {
      seen++;
      proxy(s3, req, res);
    });
    const f = new S3Ufs(opts(s3, { endpoint: front.endpoint, maxAttempts: 4, retryBaseDelayMs: 1 }));
    const bad = new S3Ufs(opts(s3, { endpoint: front.endpoint, maxAttempts: 4, credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: 'S3RVER' } }));
    try {
      await expect(f.read('s3://unit/missing.bin', 0, 10)).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND' });
      expect(seen).toBe(1);
      seen = 0;
      await expect(bad.read('s3://unit/big.bin', 0, 10)).rejects.toMatchObject({ code: 'GRANARY_ERR_ACCESS_DENIED' });
      expect(seen).toBe(1);
    } finally {
      await f.close();
      await bad.close();
      await front.close();
    }
  });

  it('times out a store that never answers with GRANARY_ERR_TIMEOUT', async () => {
    let seen = 0;
    const front = await listen(() => {
      seen++; // never respond
    });
    const f = new S3Ufs(opts(s3, { endpoint: front.endpoint, timeoutMs: 300, maxAttempts: 2, retryBaseDelayMs: 1 }));
    try {
      const err = (await f.read('s3://unit/big.bin', 0, 10).then(
        () => new Error('resolved'),
        (e: unknown) => e,
      )) as Error;
      expect(err).toMatchObject({ code: 'GRANARY_ERR_TIMEOUT' });
      expect(err.message).toContain('s3://unit/big.bin');
      // Two attempts sent; on a loaded machine the second may time out before the server sees it.
      expect(f.requestCounts().get).toBe(2);
      expect(seen).toBeLessThanOrEqual(2);
    } finally {
      await f.close();
      await front.close();
    }
  });

  it('aborts a stalled read through its signal with the signal reason', async () => {
    const stalled = deferred();
    const front = await listen(() => {
      stalled.resolve(); // and never respond
    });
    const f = new S3Ufs(opts(s3, { endpoint: front.endpoint, timeoutMs: 60_000 }));
    try {
      const ac = new AbortController();
      const p = f.read('s3://unit/big.bin', 0, 10, { signal: ac.signal });
      await stalled.promise;
      ac.abort(new Error('caller gave up'));
      await expect(p).rejects.toThrow('caller gave up');
    } finally {
      await f.close();
      await front.close();
    }
  });

  it('aborts a parallel read whose later parts stall, with the signal reason', async () => {
    let gets = 0;
    const threeParts = deferred();
    const front = await listen((req, res) => {
      if (req.method === 'GET' && ++gets === 3) threeParts.resolve();
      if (req.method === 'GET' && gets > 1) return; // later parts never answer
      proxy(s3, req, res);
    });
    const f = new S3Ufs(opts(s3, { endpoint: front.endpoint, partSize: 1024 * 1024, parallelism: 3, timeoutMs: 60_000 }));
    try {
      const ac = new AbortController();
      const p = f.read('s3://unit/big.bin', 0, big.byteLength, { signal: ac.signal });
      await threeParts.promise;
      ac.abort(new Error('epoch cancelled'));
      await expect(p).rejects.toThrow('epoch cancelled');
    } finally {
      await f.close();
      await front.close();
    }
  });

  it('rejects use after close with GRANARY_ERR_CLOSED and closes idempotently', async () => {
    const f = new S3Ufs(opts(s3));
    await f.close();
    await f.close();
    await expect(f.stat('s3://unit/big.bin')).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
    await expect(f.read('s3://unit/big.bin', 0, 1)).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
  });

  it('validates its options with coded errors', () => {
    expect(() => new S3Ufs({ partSize: 0 })).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_INVALID_ARGUMENT' }) as Error);
    expect(() => new S3Ufs({ parallelism: 1.5 })).toThrow(/parallelism/);
    expect(() => new S3Ufs({ endpoint: 'localhost:9000' })).toThrow(/endpoint/);
  });
});

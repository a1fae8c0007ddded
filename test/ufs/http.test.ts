import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HttpUfs, canonicalHttpUrl, parseHrefs } from '../../src/ufs/http.js';
import { createUfs } from '../../src/ufs/router.js';
import type { FileInfo } from '../../src/ufs/types.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { startFaultProxy } from '../support/fault-proxy.js';
import { requireOrSkip, whichBinary } from '../support/services.js';
import { startHttpServer, type TestHttpServer } from '../support/http-server.js';
import { deferred } from '../support/wait.js';
import { describeConformance } from './conformance.js';

const encodeRel = (rel: string): string => rel.split('/').map(encodeURIComponent).join('/');

async function collect(it: AsyncIterable<FileInfo>): Promise<FileInfo[]> {
  const out: FileInfo[] = [];
  for await (const f of it) out.push(f);
  return out;
}

async function putFile(root: string, rel: string, bytes: Uint8Array): Promise<void> {
  const p = join(root, ...rel.split('/'));
  await mkdir(dirname(p), { recursive: true });
  // Write then rename, so the server never serves a half-written file.
  const tmp = `${p}.tmp-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, bytes);
  await rename(tmp, p);
}

describeConformance('HTTP over a loopback file server', { writable: false, buckets: false, credentials: true }, async () => {
  const root = await mkdtemp(join(tmpdir(), 'granary-http-conf-'));
  const server = await startHttpServer({ root, auth: 'Bearer good-token' });
  const ufs = new HttpUfs({ headers: { Authorization: 'Bearer good-token' }, retryBaseMs: 10 });
  return {
    ufs,
    base: `${server.url}c/`,
    urlFor: (rel) => `${server.url}c/${encodeRel(rel)}`,
    put: (rel, bytes) => putFile(root, `c/${rel}`, bytes),
    badCredentials: () => new HttpUfs({ headers: { Authorization: 'Bearer wrong' }, maxAttempts: 1 }),
    listable: true,
    async close() {
      await ufs.close();
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

describe('HttpUfs', () => {
  let root: string;
  let server: TestHttpServer;
  let ufs: HttpUfs;
  const big = randomBytes(40 * 1024 * 1024 + 5);
  const small = randomBytes(100_000);
  const url = (rel: string): string => `${server.url}${encodeRel(rel)}`;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'granary-http-'));
    await putFile(root, 'big.bin', big);
    await putFile(root, 'small.bin', small);
    server = await startHttpServer({ root });
    ufs = new HttpUfs({ retryBaseMs: 5, timeoutMs: 10_000 });
  }, 60_000);

  afterAll(async () => {
    await ufs.close();
    await server.close();
    await rm(root, { recursive: true, force: true });
  });

  beforeEach(async () => {
    await server.idle();
    Object.assign(server.options, { ignoreRange: false, etag: true, lastModified: true, ignoreIfMatch: false });
    server.intercept = undefined;
    server.requests.length = 0;
  });

  describe('against a server that ignores Range', () => {
    it('reads exact bytes with one GET, never downloading the body twice', async () => {
      server.options.ignoreRange = true;
      const h = new HttpUfs();
      try {
        const off = small.byteLength - 100;
        const got = await h.read(url('small.bin'), off, 100);
        expect(Buffer.from(got).equals(small.subarray(off, off + 100))).toBe(true);
        await server.idle();
        expect(server.requests.map((r) => [r.method, r.status])).toEqual([['GET', 200]]);
        expect(server.requests[0]?.bytesSent).toBeLessThanOrEqual(small.byteLength);
        expect(h.ignoresRange(url('small.bin'))).toBe(true);
        expect(h.httpStats()).toMatchObject({ rangeIgnoringOrigins: [new URL(server.url).origin], rangeIgnoredResponses: 1, bytesDiscarded: off });
        expect(h.requestCounts()).toMatchObject({ get: 1, stat: 0 });
        for (const [o, l] of [
          [0, 1],
          [12_345, 54_321],
          [0, small.byteLength],
        ] as const) {
          expect(Buffer.from(await h.read(url('small.bin'), o, l)).equals(small.subarray(o, o + l))).toBe(true);
        }
      } finally {
        await h.close();
      }
    });

    it('cuts the transfer once the range is in hand', async () => {
      server.options.ignoreRange = true;
      const got = await ufs.read(url('big.bin'), 1000, 10);
      expect(Buffer.from(got).equals(big.subarray(1000, 1010))).toBe(true);
      await server.idle();
      const [req] = server.requests;
      expect(req).toMatchObject({ method: 'GET', status: 200, bodyBytes: big.byteLength, completed: false });
      expect(req?.bytesSent).toBeLessThan(big.byteLength);
    });

    it('rejects ranges past the end with GRANARY_ERR_RANGE, without reading the body', async () => {
      server.options.ignoreRange = true;
      const h = new HttpUfs();
      try {
        await expect(h.read(url('small.bin'), small.byteLength - 10, 11)).rejects.toMatchObject({ code: 'GRANARY_ERR_RANGE' });
        await expect(h.read(url('small.bin'), small.byteLength + 5, 1)).rejects.toMatchObject({ code: 'GRANARY_ERR_RANGE' });
        expect(h.requestCounts()).toMatchObject({ get: 2, bytesRead: 0 });
        expect(server.requests.map((r) => [r.method, r.status])).toEqual([
          ['GET', 200],
          ['GET', 200],
        ]);
      } finally {
        await h.close();
      }
    });

    it('detects a changed version from the response ETag when the server also ignores If-Match', async () => {
      Object.assign(server.options, { ignoreRange: true, ignoreIfMatch: true });
      await putFile(root, 'v/a.bin', Buffer.from('first version'));
      const v1 = await ufs.stat(url('v/a.bin'));
      await putFile(root, 'v/a.bin', Buffer.from('second version!'));
      await expect(ufs.read(url('v/a.bin'), 0, 5, { etag: v1.etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
      const v2 = await ufs.stat(url('v/a.bin'));
      expect(Buffer.from(await ufs.read(url('v/a.bin'), 0, 6, { etag: v2.etag })).toString()).toBe('second');
    });
  });

  it('sends If-Match and maps 412 to GRANARY_ERR_VERSION_CHANGED', async () => {
    await putFile(root, 'v/b.bin', Buffer.from('one'));
    const v1 = await ufs.stat(url('v/b.bin'));
    await putFile(root, 'v/b.bin', Buffer.from('two!'));
    server.requests.length = 0;
    await expect(ufs.read(url('v/b.bin'), 0, 3, { etag: v1.etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
    expect(server.requests.map((r) => [r.ifMatch, r.status])).toEqual([[`"${v1.etag}"`, 412]]);
  });

  it('derives versions from size and Last-Modified when the server sends no ETag, and never sends them as If-Match', async () => {
    server.options.etag = false;
    await putFile(root, 'v/c.bin', Buffer.from('no etag here'));
    const v1 = await ufs.stat(url('v/c.bin'));
    expect(v1.etag).toContain('12-');
    expect(v1.mtimeMs).toBeGreaterThan(0);
    expect(Buffer.from(await ufs.read(url('v/c.bin'), 0, 2, { etag: v1.etag })).toString()).toBe('no');
    expect(server.requests.every((r) => r.ifMatch === undefined)).toBe(true);
    await putFile(root, 'v/c.bin', Buffer.from('no etag here, longer'));
    await expect(ufs.read(url('v/c.bin'), 0, 2, { etag: v1.etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
  });

  it('retries 5xx a bounded number of times, then fails with GRANARY_ERR_UNAVAILABLE', async () => {
    const h = new HttpUfs({ maxAttempts: 4, retryBaseMs: 1 });
    try {
      server.intercept = (_req, res) => {
        res.writeHead(503, { 'Content-Length': '4' }).end('busy');
        return true;
      };
      await expect(h.read(url('small.bin'), 0, 10)).rejects.toMatchObject({ code: 'GRANARY_ERR_UNAVAILABLE' });
      expect(server.requests.length).toBe(4);
      expect(h.requestCounts().get).toBe(4);
      expect(h.httpStats().retries).toBe(3);

      server.requests.length = 0;
      let failures = 2;
      server.intercept = (_req, res) => {
        if (failures-- <= 0) return false;
        res.writeHead(502, { 'Content-Length': '0' }).end();
        return true;
      };
      expect(Buffer.from(await h.read(url('small.bin'), 5, 10)).equals(small.subarray(5, 15))).toBe(true);
      expect(server.requests.map((r) => r.status)).toEqual([502, 502, 206]);
    } finally {
      await h.close();
    }
  });

  it('does not retry 404s and 403s', async () => {
    await expect(ufs.read(url('nope.bin'), 0, 1)).rejects.toMatchObject({ code: 'GRANARY_ERR_NOT_FOUND' });
    server.intercept = (_req, res) => {
      res.writeHead(403, { 'Content-Length': '0' }).end();
      return true;
    };
    await expect(ufs.stat(url('small.bin'))).rejects.toMatchObject({ code: 'GRANARY_ERR_ACCESS_DENIED', url: url('small.bin') });
    expect(server.requests.length).toBe(2);
  });

  it('retries a connection reset and returns exact bytes', async () => {
    let resets = 1;
    server.intercept = (req) => {
      if (resets-- <= 0) return false;
      req.socket.resetAndDestroy();
      return true;
    };
    expect(Buffer.from(await ufs.read(url('small.bin'), 10, 20)).equals(small.subarray(10, 30))).toBe(true);
    expect(server.requests.length).toBe(2);
  });

  it('times out a server that never answers, without hanging or retrying', async () => {
    const h = new HttpUfs({ timeoutMs: 300, maxAttempts: 3 });
    try {
      server.intercept = () => true;
      await expect(h.read(url('small.bin'), 0, 10)).rejects.toMatchObject({ code: 'GRANARY_ERR_TIMEOUT' });
      await expect(h.stat(url('small.bin'))).rejects.toMatchObject({ code: 'GRANARY_ERR_TIMEOUT' });
      expect(server.requests.length).toBe(2);
      // Headers arrive, the body stalls half way.
      server.intercept = (_req, res) => {
        res.writeHead(206, { 'Content-Length': '100', 'Content-Range': `bytes 0-99/${small.byteLength}` });
        res.write(small.subarray(0, 50));
        return true;
      };
      await expect(h.read(url('small.bin'), 0, 100)).rejects.toMatchObject({ code: 'GRANARY_ERR_TIMEOUT' });
    } finally {
      server.intercept = undefined;
      await h.close();
    }
  });

  it('aborts a hanging request through its signal', async () => {
    const hanging = deferred();
    server.intercept = () => {
      hanging.resolve();
      return true;
    };
    const ac = new AbortController();
    const p = ufs.read(url('small.bin'), 0, 10, { signal: ac.signal });
    await hanging.promise;
    ac.abort(new Error('caller gave up'));
    await expect(p).rejects.toThrow('caller gave up');
  });

  it('fails with GRANARY_ERR_UNAVAILABLE through a proxy that refuses, and with GRANARY_ERR_TIMEOUT through one that stalls', async () => {
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: server.port } });
    const h = new HttpUfs({ timeoutMs: 400, maxAttempts: 2, retryBaseMs: 1 });
    try {
      const via = `${proxy.url}/small.bin`;
      expect(Buffer.from(await h.read(via, 0, 10)).equals(small.subarray(0, 10))).toBe(true);
      proxy.stall();
      await expect(h.read(via, 0, 10)).rejects.toMatchObject({ code: 'GRANARY_ERR_TIMEOUT' });
      proxy.resume();
      proxy.resetAll();
      await proxy.refuse(true);
      await expect(h.read(via, 0, 10)).rejects.toMatchObject({ code: 'GRANARY_ERR_UNAVAILABLE' });
      await proxy.refuse(false);
      expect(Buffer.from(await h.read(via, 0, 10)).equals(small.subarray(0, 10))).toBe(true);
    } finally {
      await h.close();
      await proxy.close();
    }
  });

  it('falls back to a one-byte GET for the size when HEAD is not allowed', async () => {
    server.intercept = (req, res) => {
      if (req.method !== 'HEAD') return false;
      res.writeHead(405, { Allow: 'GET' }).end();
      return true;
    };
    const h = new HttpUfs();
    const info = await h.stat(url('small.bin'));
    await h.close();
    expect(info.size).toBe(small.byteLength);
    expect(h.requestCounts().stat).toBe(2);
    expect(server.requests.map((r) => [r.method, r.range])).toEqual([
      ['HEAD', undefined],
      ['GET', 'bytes=0-0'],
    ]);
  });

  it('reports one canonical URL however the path is spelled', async () => {
    await putFile(root, 'names/a b+c.bin', Buffer.from('x'));
    const spellings = [`${server.url}names/a%20b+c.bin`, `${server.url}names/a b%2Bc.bin`, `${server.url}names/a%20b%2bc.bin#frag`];
    const urls = await Promise.all(spellings.map(async (s) => (await ufs.stat(s)).url));
    expect(new Set(urls)).toEqual(new Set([`${server.url}names/a%20b%2Bc.bin`]));
    expect(canonicalHttpUrl(`${server.url}names/%C3%BC`)).toBe(canonicalHttpUrl(`${server.url}names/ü`));
    expect((await collect(ufs.list(`${server.url}names/`))).map((f) => f.url)).toEqual(urls.slice(0, 1));
  });

  it('lists keys under a prefix that is not a directory, and nothing under a missing directory', async () => {
    for (const rel of ['p/ab', 'p/abc/d', 'p/ab-x', 'p/b']) await putFile(root, rel, Buffer.from(rel));
    expect((await collect(ufs.list(url('p/ab')))).map((f) => f.url)).toEqual([url('p/ab'), url('p/ab-x'), url('p/abc/d')]);
    expect(await collect(ufs.list(url('no-such-dir/')))).toEqual([]);
    server.options.autoindex = false;
    try {
      await expect(collect(ufs.list(url('p/')))).rejects.toMatchObject({ code: 'GRANARY_ERR_ACCESS_DENIED' });
    } finally {
      server.options.autoindex = true;
    }
  });

  it('parses hrefs from nginx, Apache and python http.server indexes', () => {
    const nginx = `<html><head><title>Index of /d/</title></head><body><h1>Index of /d/</h1><hr><pre><a href="../">../</a>
<a href="a%20b.txt">a b.txt</a>                                        01-Jan-2024 00:00    3
<a href="sub/">sub/</a>                                               01-Jan-2024 00:00       -
</pre><hr></body></html>`;
    const apache = `<tr><td><a href="?C=N;O=D">Name</a></td></tr><tr><td><a href='x&amp;y.bin'>x&amp;y.bin</a></td></tr><A HREF=plain.bin>plain</A>`;
    const python = `<li><a href="caf%C3%A9.txt">café.txt</a></li><li><a href="&#x6d;.bin">m.bin</a></li>`;
    expect(parseHrefs(nginx)).toEqual(['../', 'a%20b.txt', 'sub/']);
    expect(parseHrefs(apache)).toEqual(['?C=N;O=D', 'x&y.bin', 'plain.bin']);
    expect(parseHrefs(python)).toEqual(['caf%C3%A9.txt', 'm.bin']);
  });

  it('is read-only: write and delete fail with GRANARY_ERR_UNSUPPORTED_OPERATION', async () => {
    await expect(ufs.write(url('new.bin'), Buffer.from('x'))).rejects.toMatchObject({ code: 'GRANARY_ERR_UNSUPPORTED_OPERATION', url: url('new.bin') });
    await expect(ufs.delete(url('small.bin'))).rejects.toMatchObject({ code: 'GRANARY_ERR_UNSUPPORTED_OPERATION' });
    expect(server.requests.length).toBe(0);
  });

  it('rejects other schemes, credentials in URLs and bad options with coded errors', async () => {
    await expect(ufs.stat('s3://bucket/key')).rejects.toMatchObject({ code: 'GRANARY_ERR_UNSUPPORTED_SCHEME' });
    await expect(ufs.stat(`http://user:pw@127.0.0.1:${server.port}/small.bin`)).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    await expect(ufs.stat('http://')).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_URL' });
    expect(() => new HttpUfs({ maxAttempts: 0 })).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_INVALID_ARGUMENT' }) as Error);
    expect(() => new HttpUfs({ timeoutMs: -1 })).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_INVALID_ARGUMENT' }) as Error);
  });

  it('is routed to by createUfs, counts requests, and throws GRANARY_ERR_CLOSED after close', async () => {
    const router = createUfs({ http: { retryBaseMs: 1 } });
    expect(Buffer.from(await router.read(url('small.bin'), 0, 4)).equals(small.subarray(0, 4))).toBe(true);
    await router.stat(url('small.bin'));
    expect(router.requestCounts()).toMatchObject({ get: 1, stat: 1, bytesRead: 4 });
    await router.close();
    const h = new HttpUfs();
    await h.close();
    await h.close();
    await expect(h.stat(url('small.bin'))).rejects.toMatchObject({ code: 'GRANARY_ERR_CLOSED' });
  });
});

const python = whichBinary('/usr/bin/python3') ?? whichBinary('python3');
const hasPython = requireOrSkip('python3', python !== undefined, 'no python3 to run `python3 -m http.server` (apt-get install python3)');

describe.runIf(hasPython)('HttpUfs against python3 -m http.server (no ETag, no Range before Python 3.13, HTTP/1.0)', () => {
  let root: string;
  let child: ChildProcess;
  let base: string;
  const data = randomBytes(300_000);

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'granary-pyhttp-'));
    await putFile(root, 'set/b/2.bin', data.subarray(0, 1000));
    await putFile(root, 'set/a b/1.bin', data);
    await putFile(root, 'set/ü.bin', data.subarray(0, 10));
    child = spawn(python as string, ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory', root], { stdio: ['ignore', 'pipe', 'pipe'] });
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout?.on('data', (b: Buffer) => {
        out += b.toString();
        const m = /port (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', (code) => reject(new Error(`python3 -m http.server exited with ${String(code)}: ${out}`)));
    });
    base = `http://127.0.0.1:${port}/`;
  }, 30_000);

  afterAll(async () => {
    if (child.pid !== undefined && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      process.kill(child.pid, 'SIGTERM');
      await exited;
    }
    await rm(root, { recursive: true, force: true });
  });

  it('lists, stats and reads exact bytes', async () => {
    const h = new HttpUfs();
    try {
      const listed = await collect(h.list(`${base}set/`));
      // Sorted by URL bytes: '%' sorts before letters.
      expect(listed.map((f) => f.url)).toEqual([`${base}set/%C3%BC.bin`, `${base}set/a%20b/1.bin`, `${base}set/b/2.bin`]);
      expect(listed.map((f) => f.size)).toEqual([10, data.byteLength, 1000]);
      const info = listed[1] as FileInfo;
      for (const [o, l] of [
        [0, 10],
        [123_456, 1000],
        [data.byteLength - 1, 1],
      ] as const) {
        expect(Buffer.from(await h.read(info.url, o, l, { etag: info.etag })).equals(data.subarray(o, o + l))).toBe(true);
      }
      await expect(h.read(info.url, data.byteLength - 1, 2)).rejects.toMatchObject({ code: 'GRANARY_ERR_RANGE' });
      await putFile(root, 'set/a b/1.bin', data.subarray(1));
      await expect(h.read(info.url, 0, 10, { etag: info.etag })).rejects.toMatchObject({ code: 'GRANARY_ERR_VERSION_CHANGED' });
    } finally {
      await h.close();
    }
  });
});

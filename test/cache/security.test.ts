import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { checkBind, isLoopbackHost, isNonPublicAddress } from '../../src/cache/worker-access.js';
import { startWorker } from '../../src/cache/worker.js';
import { ErrorCodes } from '../../src/errors.js';
import { LocalUfs } from '../../src/ufs/local.js';
import { spawnWorker, type WorkerProcess } from '../support/workers.js';

const SECRET = 'top-secret-outside-the-root';
const INSIDE = 'bytes inside the file root';
const SERVED = 'bytes from an explicitly allowed http store';

/** A real HTTP store on loopback that records every request it sees. */
function startOrigin(): Promise<{ server: Server; port: number; seen: string[] }> {
  const seen: string[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    seen.push(`${req.method ?? 'GET'} ${req.url ?? ''}`);
    if (req.url !== '/data/x.bin') {
      res.statusCode = 404;
      res.end();
      return;
    }
    const body = Buffer.from(SERVED);
    res.setHeader('etag', `"${createHash('sha256').update(body).digest('hex').slice(0, 16)}"`);
    res.setHeader('accept-ranges', 'bytes');
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (m) {
      const [s, e] = [Number(m[1]), Math.min(Number(m[2]), body.length - 1)];
      res.statusCode = 206;
      res.setHeader('content-range', `bytes ${s}-${e}/${body.length}`);
      res.setHeader('content-length', e - s + 1);
      res.end(req.method === 'HEAD' ? undefined : body.subarray(s, e + 1));
      return;
    }
    res.setHeader('content-length', body.length);
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port, seen })));
}

async function get(worker: string, path: string, params: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${worker}${path}?${new URLSearchParams(params).toString()}`, { headers });
}

/** A refusal: the status, and a JSON body `{ code, message }` naming the URL. */
async function expectRefused(res: Response, status: number, code: string, url?: string): Promise<void> {
  expect(res.status, url).toBe(status);
  expect(res.headers.get('content-type')).toBe('application/json');
  const body = (await res.json()) as { code: string; message: string };
  expect(body.code, url).toBe(code);
  expect(typeof body.message).toBe('string');
  if (url !== undefined) expect(body.message).toContain(url);
  expect(body.message).not.toContain(SECRET);
}

/** The value of one sample of a Prometheus counter, 0 when absent. */
async function metric(worker: string, name: string, labels: Record<string, string> = {}, headers: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${worker}/metrics`, { headers })).text();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

let dir: string;
let root: string;
let origin: { server: Server; port: number; seen: string[] };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'granary-security-'));
  root = join(dir, 'root');
  await mkdir(join(root, 'sub'), { recursive: true });
  await writeFile(join(root, 'sub', 'inside.bin'), INSIDE);
  await writeFile(join(dir, 'secret.txt'), SECRET);
  await symlink(join(dir, 'secret.txt'), join(root, 'link-out'));
  origin = await startOrigin();
});

afterAll(async () => {
  await new Promise<void>((resolve) => origin.server.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

describe('a worker process started with defaults', () => {
  let worker: WorkerProcess;
  beforeAll(async () => {
    worker = await spawnWorker({});
  });
  afterAll(async () => {
    await worker.stop();
  });

  it('refuses file:///etc/passwd and any file:// URL with a coded 403, reading nothing', async () => {
    for (const url of ['file:///etc/passwd', pathToFileURL(join(root, 'sub', 'inside.bin')).href, pathToFileURL(join(dir, 'secret.txt')).href]) {
      await expectRefused(await get(worker.url, '/v1/read', { url, offset: '0', length: '10' }), 403, ErrorCodes.FORBIDDEN_PREFIX, url);
      await expectRefused(await get(worker.url, '/v1/stat', { url }), 403, ErrorCodes.FORBIDDEN_PREFIX, url);
    }
    await expectRefused(await get(worker.url, '/v1/list', { prefix: 'file:///etc/' }), 403, ErrorCodes.FORBIDDEN_PREFIX, 'file:///etc/');
    const info = (await (await fetch(`${worker.url}/v1/info`)).json()) as { counters: { storeRequests: number; bytesFromStore: number } };
    expect(info.counters).toMatchObject({ storeRequests: 0, bytesFromStore: 0 });
    expect(await metric(worker.url, 'granary_worker_refused_total', { reason: 'file_disabled' })).toBe(7);
    expect(await metric(worker.url, 'granary_worker_store_requests_total')).toBe(0);
  });

  it('refuses http://169.254.169.254 and http://127.0.0.1 without sending them a request', async () => {
    const before = await metric(worker.url, 'granary_worker_refused_total', { reason: 'http_not_allowed' });
    const urls = ['http://169.254.169.254/latest/meta-data/iam/security-credentials/', `http://127.0.0.1:${origin.port}/data/x.bin`, `https://127.0.0.1:${origin.port}/x`];
    for (const url of urls) {
      await expectRefused(await get(worker.url, '/v1/read', { url, offset: '0', length: '4' }), 403, ErrorCodes.FORBIDDEN_PREFIX, url);
      await expectRefused(await get(worker.url, '/v1/stat', { url }), 403, ErrorCodes.FORBIDDEN_PREFIX, url);
    }
    const load = await fetch(`${worker.url}/v1/load`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ranges: [{ url: `http://127.0.0.1:${origin.port}/data/x.bin`, offset: 0, length: 4 }] }),
    });
    await expectRefused(load, 403, ErrorCodes.FORBIDDEN_PREFIX);
    expect(origin.seen).toEqual([]);
    expect(await metric(worker.url, 'granary_worker_refused_total', { reason: 'http_not_allowed' })).toBe(before + 7);
  });

  it('refuses to start on a non-loopback address without a token, before it listens', async () => {
    const err = await spawnWorker({ host: '0.0.0.0', port: 0 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.CONFIG, message: expect.stringMatching(/0\.0\.0\.0.*token/) as unknown });
    await expect(startWorker({ host: '0.0.0.0', port: 0 })).rejects.toMatchObject({ code: ErrorCodes.CONFIG });
  });

  it('lets a client read file:// through its own store when the worker refuses', async () => {
    const client = new CacheClient({ workers: [worker.url], ufs: new LocalUfs({ root }) });
    try {
      const url = pathToFileURL(join(root, 'sub', 'inside.bin')).href;
      expect(Buffer.from(await client.read(url, 0, INSIDE.length)).toString()).toBe(INSIDE);
      expect(client.stats().fallbacks).toBeGreaterThan(0);
    } finally {
      await client.close();
    }
  });
});

describe('a worker process with a file root', () => {
  let worker: WorkerProcess;
  beforeAll(async () => {
    worker = await spawnWorker({ fileRoot: root });
  });
  afterAll(async () => {
    await worker.stop();
  });

  it('serves a file inside the root', async () => {
    const url = pathToFileURL(join(root, 'sub', 'inside.bin')).href;
    const res = await get(worker.url, '/v1/read', { url, offset: '0', length: String(INSIDE.length) });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(INSIDE);
  });

  it('refuses .., encoded .., a symlink out and paths outside the root, with a coded error and no secret', async () => {
    const bad = [
      `file://${root}/sub/../../secret.txt`,
      `file://${root}/sub/%2e%2e/%2E%2E/secret.txt`,
      `file://${root}/sub/%2e%2e%2fsecret.txt`,
      pathToFileURL(join(root, 'link-out')).href,
      pathToFileURL(join(dir, 'secret.txt')).href,
      'file:///etc/passwd',
    ];
    const bytesFromStore = async (): Promise<number> =>
      ((await (await fetch(`${worker.url}/v1/info`)).json()) as { counters: { bytesFromStore: number } }).counters.bytesFromStore;
    const before = await bytesFromStore();
    for (const url of bad) {
      const res = await get(worker.url, '/v1/read', { url, offset: '0', length: '5' });
      expect(res.status, url).toBeGreaterThanOrEqual(400);
      expect(res.status, url).toBeLessThan(500);
      const body = (await res.json()) as { code: string; message: string };
      expect([ErrorCodes.PATH_ESCAPE, ErrorCodes.NOT_FOUND, ErrorCodes.INVALID_URL], url).toContain(body.code);
      expect(body.message).not.toContain(SECRET);
    }
    expect(await metric(worker.url, 'granary_worker_refused_total', { reason: 'path_escape' })).toBeGreaterThanOrEqual(4);
    expect(await bytesFromStore()).toBe(before);
  });

  it('lets a client read a file outside the worker\'s root through its own store', async () => {
    const client = new CacheClient({ workers: [worker.url], ufs: new LocalUfs({ root: dir }) });
    try {
      for (const url of [pathToFileURL(join(dir, 'secret.txt')).href, pathToFileURL(join(root, 'link-out')).href]) {
        expect(Buffer.from(await client.read(url, 0, SECRET.length)).toString(), url).toBe(SECRET);
      }
      expect(client.stats().fallbacks).toBeGreaterThanOrEqual(2);
    } finally {
      await client.close();
    }
  });
});

describe('a worker process with http(s) allow prefixes', () => {
  let broad: WorkerProcess;
  let named: WorkerProcess;
  beforeAll(async () => {
    [broad, named] = await Promise.all([
      spawnWorker({ allow: ['http://', 'https://'] }),
      spawnWorker({ allow: [`http://127.0.0.1:${origin.port}/data/`], token: 'tok' }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([broad.stop(), named.stop()]);
  });

  it('refuses loopback, link-local and private addresses, and names resolving to them, under a scheme-wide prefix', async () => {
    origin.seen.length = 0;
    const p = origin.port;
    const urls = [
      'http://169.254.169.254/latest/meta-data/',
      `http://127.0.0.1:${p}/data/x.bin`,
      `http://127.1.2.3:${p}/data/x.bin`,
      `http://2130706433:${p}/data/x.bin`,
      `http://0x7f.1:${p}/data/x.bin`,
      `http://localhost:${p}/data/x.bin`,
      `http://[::1]:${p}/data/x.bin`,
      `http://[::ffff:127.0.0.1]:${p}/data/x.bin`,
      'http://10.0.0.1/x',
      'http://172.16.5.4/x',
      'http://192.168.1.1/x',
      'http://[fc00::1]/x',
      'http://[fe80::1]/x',
      'http://0.0.0.0/x',
    ];
    for (const url of urls) {
      await expectRefused(await get(broad.url, '/v1/read', { url, offset: '0', length: '4' }), 403, ErrorCodes.FORBIDDEN_PREFIX);
    }
    expect(origin.seen).toEqual([]);
    expect(await metric(broad.url, 'granary_worker_refused_total', { reason: 'private_address' })).toBe(urls.length);
  });

  it('reads a private host that an allow prefix names, and nothing outside that prefix', async () => {
    origin.seen.length = 0;
    const auth = { authorization: 'Bearer tok' };
    const ok = await get(named.url, '/v1/read', { url: `http://127.0.0.1:${origin.port}/data/x.bin`, offset: '0', length: String(SERVED.length) }, auth);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe(SERVED);
    expect(origin.seen.length).toBeGreaterThan(0);
    origin.seen.length = 0;
    for (const url of [
      `http://127.0.0.1:${origin.port}/other/x.bin`,
      `http://127.0.0.1:${origin.port}/data/../other/x.bin`,
      `http://127.0.0.1:${origin.port}/data/%2e%2e/other/x.bin`,
      `http://127.0.0.1:${origin.port}@169.254.169.254/data/x.bin`,
      `http://127.0.0.1:${origin.port + 1}/data/x.bin`,
      'http://169.254.169.254/data/x.bin',
    ]) {
      const res = await get(named.url, '/v1/read', { url, offset: '0', length: '4' }, auth);
      expect(res.status, url).toBeGreaterThanOrEqual(400);
      expect(res.status, url).toBeLessThan(500);
      expect([ErrorCodes.FORBIDDEN_PREFIX, ErrorCodes.PATH_ESCAPE], url).toContain(((await res.json()) as { code: string }).code);
    }
    expect(origin.seen).toEqual([]);
  });

  it('answers a missing or wrong token with a coded 401, compared whatever its length, and counts it', async () => {
    const url = `http://127.0.0.1:${origin.port}/data/x.bin`;
    for (const headers of [{}, { authorization: 'Bearer to' }, { authorization: 'Bearer tok-and-more' }, { authorization: 'tok' }] as Record<string, string>[]) {
      await expectRefused(await get(named.url, '/v1/stat', { url }, headers), 401, ErrorCodes.UNAUTHORIZED);
    }
    expect(await metric(named.url, 'granary_worker_refused_total', { reason: 'unauthorized' }, { authorization: 'Bearer tok' })).toBe(4);
  });
});

describe('the address and bind rules', () => {
  it('classifies addresses', () => {
    for (const a of ['127.0.0.1', '10.1.2.3', '172.31.255.255', '192.168.0.1', '169.254.169.254', '0.0.0.0', '100.64.0.1', '::1', '::', 'fc00::1', 'fd00:ec2::254', 'fe80::1', '::ffff:127.0.0.1', '::ffff:169.254.169.254']) {
      expect(isNonPublicAddress(a), a).toBe(true);
    }
    for (const a of ['8.8.8.8', '172.32.0.1', '1.1.1.1', '2606:4700::1111', 'example.com']) expect(isNonPublicAddress(a), a).toBe(false);
    for (const h of ['127.0.0.1', 'localhost', '::1', '[::1]', '127.9.9.9']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.5', 'worker.example']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('starts on a non-loopback address with a token, or with insecure (and says so loudly), and refuses otherwise', () => {
    expect(checkBind('127.0.0.1', undefined, undefined)).toBeUndefined();
    expect(checkBind('0.0.0.0', 'tok', undefined)).toBeUndefined();
    expect(checkBind('0.0.0.0', undefined, true)).toMatch(/^WARNING: .*0\.0\.0\.0.*no token/);
    expect(() => checkBind('10.0.0.5', undefined, false)).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });

  it('refuses a non-loopback `granary worker` without --token, exiting with a usage error', async () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GRANARY_')));
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'worker', '--host', '0.0.0.0', '--port', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    expect(code).toBe(2);
    expect(stderr).toMatch(/GRANARY_ERR_CONFIG: Refusing to serve on 0\.0\.0\.0 without a token/);
  });
});

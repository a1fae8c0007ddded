/**
 * Workers over TLS, against certificates made at test time with openssl: a client that
 * trusts the CA reads through the worker (the raw-socket path for large parts and the
 * pooled one for the rest), while a plain-HTTP client and a client that does not trust
 * the certificate each fall back to the store, at once, with a reason that says so.
 */
import { spawn } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { RAW_READ_MIN } from '../../src/cache/raw-read.js';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { ErrorCodes } from '../../src/errors.js';
import { makeTestCerts, type TestCerts } from '../support/etcd-tls.js';
import { etcdAvailable, startEtcd } from '../support/etcd.js';
import { runGranary } from '../support/run.js';
import { waitFor } from '../support/wait.js';

const MiB = 1024 * 1024;
const TOKEN = 'tls-test-token';
/** Keep the developer's own GRANARY_* settings out of the children. */
const CLEAN_ENV: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GRANARY_')));

let certs: TestCerts;
let dir: string;
let big: { url: string; bytes: Buffer };
let small: { url: string; bytes: Buffer };
let worker: CacheWorker;

/** Byte-equality without a deep-equal walk (and diff) over megabytes. */
function expectBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.byteLength).toBe(want.byteLength);
  expect(Buffer.compare(got, want)).toBe(0);
}

/** The reasons of the client's fallbacks while `fn` runs. */
async function fallbackReasons(fn: () => Promise<void>): Promise<string[]> {
  const reasons: string[] = [];
  const onFallback = (msg: unknown): void => {
    reasons.push(String((msg as { reason?: unknown }).reason));
  };
  subscribe('granary:client:fallback', onFallback);
  try {
    await fn();
  } finally {
    unsubscribe('granary:client:fallback', onFallback);
  }
  return reasons;
}

beforeAll(async () => {
  certs = makeTestCerts();
  dir = await mkdtemp(join(tmpdir(), 'granary-tls-'));
  big = { url: pathToFileURL(join(dir, 'big.bin')).href, bytes: randomBytes(3 * MiB + 123) };
  small = { url: pathToFileURL(join(dir, 'small.bin')).href, bytes: randomBytes(10_000) };
  await writeFile(join(dir, 'big.bin'), big.bytes);
  await writeFile(join(dir, 'small.bin'), small.bytes);
  await writeFile(join(dir, 'hello.txt'), 'hello over TLS\n');
  worker = await startWorker({ tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile }, fileRoot: dir, token: TOKEN, memoryBytes: 64 * MiB });
});

afterAll(async () => {
  await worker.close();
  await rm(dir, { recursive: true, force: true });
  certs.remove();
});

describe('a worker with a certificate', () => {
  it('serves HTTPS at an https:// URL', async () => {
    expect(worker.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('is read through by a client that trusts its CA, over raw sockets and the pool alike', async () => {
    expect(big.bytes.byteLength).toBeGreaterThanOrEqual(RAW_READ_MIN);
    await using client = new CacheClient({ workers: [worker.url], token: TOKEN, tlsCa: certs.caFile, partSize: 4 * MiB });
    for (let pass = 0; pass < 2; pass++) {
      expectBytes(await client.read(big.url), big.bytes);
      expectBytes(await client.read(small.url), small.bytes);
      expectBytes(await client.read(big.url, 5, 1000), big.bytes.subarray(5, 1005));
    }
    const s = client.stats();
    expect(s.fallbacks).toBe(0);
    expect(s.hits).toBeGreaterThan(0);
    expect(s.bytesFromUfs).toBe(0);
    expect(worker.info().counters.bytesServed).toBeGreaterThanOrEqual(2 * (big.bytes.byteLength + small.bytes.byteLength));
  });

  it('answers a plain-HTTP client with a closed connection, and a CacheClient falls back to the store', async () => {
    const plain = worker.url.replace('https://', 'http://');
    await expect(fetch(`${plain}/healthz`)).rejects.toThrow();
    const served = worker.info().counters.bytesServed;
    await using client = new CacheClient({ workers: [plain], token: TOKEN, breaker: { cooldownMs: 1 } });
    const reasons = await fallbackReasons(async () => {
      expectBytes(await client.read(big.url), big.bytes);
      expectBytes(await client.read(small.url), small.bytes);
    });
    expect(client.stats().fallbacks).toBeGreaterThanOrEqual(1);
    expect(reasons.length).toBeGreaterThanOrEqual(1);
    expect(worker.info().counters.bytesServed).toBe(served);
  });

  it('is refused by a client that does not trust its certificate: the store answers, and the reason says certificate', async () => {
    for (const tlsCa of [certs.otherCaFile, undefined]) {
      const served = worker.info().counters.bytesServed;
      await using client = new CacheClient({ workers: [worker.url], token: TOKEN, breaker: { cooldownMs: 1 }, ...(tlsCa ? { tlsCa } : {}) });
      const reasons = await fallbackReasons(async () => {
        expectBytes(await client.read(big.url), big.bytes);
        expectBytes(await client.read(small.url), small.bytes);
      });
      expect(client.stats().fallbacks).toBeGreaterThanOrEqual(2);
      expect(reasons.length).toBeGreaterThanOrEqual(2);
      for (const r of reasons) expect(r).toMatch(/certificate/);
      expect(worker.info().counters.bytesServed).toBe(served);
    }
  });
});

describe('a TLS handshake', () => {
  it('that never comes is cut off after the headers timeout, while others are served', async () => {
    const w = await startWorker({ tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile }, fileRoot: dir, headersTimeoutMs: 300, requestTimeoutMs: 1000 });
    try {
      const silent = connect(Number(new URL(w.url).port), '127.0.0.1');
      silent.on('error', () => undefined);
      const closed = new Promise<void>((resolve) => silent.once('close', () => resolve()));
      await new Promise<void>((resolve) => silent.once('connect', () => resolve()));
      await using client = new CacheClient({ workers: [w.url], tlsCa: certs.caFile });
      expectBytes(await client.read(small.url), small.bytes);
      expect(client.stats().fallbacks).toBe(0);
      await closed;
    } finally {
      await w.close();
    }
  });
});

describe('TLS options', () => {
  it('refuses a certificate without a key, and files that cannot be read, naming the file', async () => {
    await expect(startWorker({ tls: { certFile: certs.serverCertFile } as never })).rejects.toMatchObject({ code: ErrorCodes.INVALID_ARGUMENT });
    const missing = join(dir, 'no-such.key');
    const err = await startWorker({ tls: { certFile: certs.serverCertFile, keyFile: missing } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.CONFIG });
    expect((err as Error).message).toContain(missing);
    expect(() => new CacheClient({ workers: [worker.url], tlsCa: missing })).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }) as Error);
  });

  it('refuses a key that does not match the certificate, without echoing the key', async () => {
    const err = await startWorker({ tls: { certFile: certs.serverCertFile, keyFile: certs.clientKeyFile } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.CONFIG });
    expect((err as Error).message).not.toContain('PRIVATE KEY');
  });
});

describe('the command line', () => {
  it('serves HTTPS with --tls-cert/--tls-key, and `granary cat --tls-ca` reads through it', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'worker', '--port', '0', '--json', '--file-root', dir, '--tls-cert', certs.serverCertFile, '--tls-key', certs.serverKeyFile], {
        env: { ...CLEAN_ENV, GRANARY_TOKEN: TOKEN },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    try {
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      await waitFor(() => out.includes('\n') || child.exitCode !== null, { timeoutMs: 30_000 });
      const { url } = JSON.parse(out.split('\n')[0] ?? '') as { url: string };
      expect(url).toMatch(/^https:\/\//);
      const env = { GRANARY_TOKEN: TOKEN, GRANARY_WORKERS: url };
      const cat = await runGranary(['cat', pathToFileURL(join(dir, 'hello.txt')).href, '--tls-ca', certs.caFile], env);
      expect(cat.code, cat.stderr).toBe(0);
      expect(cat.stdout).toBe('hello over TLS\n');
      const listed = await runGranary(['workers', '--json'], { ...env, GRANARY_TLS_CA: certs.caFile });
      expect(listed.code, listed.stderr).toBe(0);
      const rows = JSON.parse(listed.stdout) as { url: string; info?: unknown; error?: unknown }[];
      expect(rows[0]?.error).toBeUndefined();
      expect(rows[0]?.info).toBeDefined();
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once('exit', resolve)));
    }
  }, 180_000);
});

describe.runIf(etcdAvailable())('an https:// worker in etcd', () => {
  it('registers its https:// URL, and a client found through etcd reads through it', async () => {
    const etcd = await startEtcd();
    if (etcd === undefined) throw new Error('etcd reported available but did not start');
    try {
      const cluster = `tls-${Date.now()}`;
      const w = await startWorker({ tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile }, fileRoot: dir, token: TOKEN, etcd: { endpoints: [etcd.endpoint], cluster, ttlSeconds: 2 } });
      try {
        const kv = new Etcd3({ hosts: etcd.endpoint });
        const stored = await kv.get(`/granary/${cluster}/workers/${w.id}`).string();
        kv.close();
        expect(JSON.parse(stored ?? '{}')).toMatchObject({ url: w.url });
        expect(w.url).toMatch(/^https:\/\//);
        await using client = new CacheClient({ etcd: { endpoints: [etcd.endpoint], cluster }, token: TOKEN, tlsCa: certs.caFile });
        await client.ready();
        expectBytes(await client.read(big.url), big.bytes);
        expect(client.stats().fallbacks).toBe(0);
      } finally {
        await w.close();
      }
    } finally {
      await etcd.close();
    }
  });
});

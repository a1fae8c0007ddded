/**
 * etcd with `auth enable` (user and password) and with `--client-cert-auth` TLS: a
 * worker registers and a CacheClient sees it when the credentials are right; wrong
 * ones end in a coded error at once (no retry loop), and the password appears in no
 * message, error or diagnostics event.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { EtcdMembership } from '../../src/cache/membership.js';
import { registerWorker } from '../../src/cache/registration.js';
import { startWorker } from '../../src/cache/worker.js';
import { ErrorCodes, type GranaryError } from '../../src/errors.js';
import { makeTestCerts, type TestCerts } from '../support/etcd-tls.js';
import { enableEtcdAuth, etcdAvailable, startEtcd, type EtcdServer } from '../support/etcd.js';
import { waitFor } from '../support/wait.js';

const PASSWORD = 'pw-s3cr3t-7f3a9c';
const CHANNELS = [
  'granary:registration:registered',
  'granary:registration:lost',
  'granary:registration:keepalive-failed',
  'granary:registration:error',
  'granary:registration:closed',
  'granary:membership:error',
  'granary:membership:change',
];

/** Everything emitted on granary's diagnostics channels and stderr while `fn` runs, as text. */
async function captureEmitted<T>(fn: () => Promise<T>): Promise<{ result: T; text: string }> {
  const seen: string[] = [];
  const onMessage = (msg: unknown): void => {
    seen.push(JSON.stringify(msg, (_k, v: unknown) => (v instanceof Error ? { message: v.message, stack: v.stack } : typeof v === 'bigint' ? v.toString() : v)));
  };
  for (const c of CHANNELS) subscribe(c, onMessage);
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
    seen.push(String(chunk));
    return write(chunk, ...rest);
  });
  try {
    const result = await fn();
    return { result, text: seen.join('\n') };
  } finally {
    process.stderr.write = write;
    for (const c of CHANNELS) unsubscribe(c, onMessage);
  }
}

function errorText(err: unknown): string {
  const e = err as Error & { cause?: unknown };
  return `${e.message}\n${e.stack ?? ''}\n${e.cause instanceof Error ? `${e.cause.message}\n${e.cause.stack ?? ''}` : ''}`;
}

describe.runIf(etcdAvailable())('etcd with auth enable', () => {
  let etcd: EtcdServer;

  beforeAll(async () => {
    etcd = (await startEtcd())!;
    await enableEtcdAuth(etcd, PASSWORD);
  }, 30_000);
  afterAll(async () => {
    await etcd?.close();
  });

  it('a worker registers and a CacheClient sees it with the right password', async () => {
    const auth = { username: 'root', password: PASSWORD };
    const { text } = await captureEmitted(async () => {
      await using worker = await startWorker({ etcd: { endpoints: [etcd.endpoint], cluster: 'auth-ok', auth } });
      const client = new CacheClient({ etcd: { endpoints: [etcd.endpoint], cluster: 'auth-ok', auth } });
      try {
        await client.ready();
        await waitFor(() => client.workers().some((w) => w.id === worker.id));
      } finally {
        await client.close();
      }
    });
    expect(text).not.toContain(PASSWORD);
  });

  it('a wrong password fails the worker and the client with a coded error, naming no password', async () => {
    const auth = { username: 'root', password: 'wrong-pass-91b2' };
    const { text } = await captureEmitted(async () => {
      const werr = (await startWorker({ etcd: { endpoints: [etcd.endpoint], cluster: 'auth-bad', auth } }).catch((e: unknown) => e)) as GranaryError;
      expect(werr.code).toBe(ErrorCodes.ACCESS_DENIED);
      expect(errorText(werr)).not.toContain('wrong-pass-91b2');
      const m = new EtcdMembership({ endpoints: [etcd.endpoint], cluster: 'auth-bad', auth });
      const merr = (await m.ready().catch((e: unknown) => e)) as GranaryError;
      await m.close();
      expect(merr.code).toBe(ErrorCodes.ACCESS_DENIED);
      expect(errorText(merr)).not.toContain('wrong-pass-91b2');
      const client = new CacheClient({ etcd: { endpoints: [etcd.endpoint], cluster: 'auth-bad', auth } });
      const cerr = (await client.ready().catch((e: unknown) => e)) as GranaryError;
      await client.close();
      expect(cerr.code).toBe(ErrorCodes.ACCESS_DENIED);
      expect(errorText(cerr)).not.toContain('wrong-pass-91b2');
    });
    expect(text).not.toContain('wrong-pass-91b2');
    expect(text).not.toContain(PASSWORD);
  });

  it('no credentials against an etcd with auth: a coded error', async () => {
    const err = (await registerWorker({ endpoints: [etcd.endpoint], cluster: 'auth-none', info: { id: 'w1', url: 'http://127.0.0.1:1' } }).catch(
      (e: unknown) => e,
    )) as GranaryError;
    expect(err.code).toBe(ErrorCodes.ACCESS_DENIED);
  });
});

describe.runIf(etcdAvailable())('etcd with --client-cert-auth TLS', () => {
  let etcd: EtcdServer;
  let certs: TestCerts;

  beforeAll(async () => {
    certs = makeTestCerts();
    etcd = (await startEtcd({
      tls: {
        caFile: certs.caFile,
        certFile: certs.serverCertFile,
        keyFile: certs.serverKeyFile,
        clientCertAuth: true,
        clientCertFile: certs.clientCertFile,
        clientKeyFile: certs.clientKeyFile,
      },
    }))!;
  }, 30_000);
  afterAll(async () => {
    await etcd?.close();
    certs?.remove();
  });

  it('with the client certificate: a worker registers and a CacheClient sees it', async () => {
    expect(etcd.endpoint.startsWith('https://')).toBe(true);
    const tls = { caFile: certs.caFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile };
    await using worker = await startWorker({ etcd: { endpoints: [etcd.endpoint], cluster: 'tls-ok', tls } });
    const client = new CacheClient({ etcd: { endpoints: [etcd.endpoint], cluster: 'tls-ok', tls } });
    try {
      await client.ready();
      await waitFor(() => client.workers().some((w) => w.id === worker.id));
    } finally {
      await client.close();
    }
  });

  it('without a client certificate: a coded error, no retry loop', async () => {
    const tls = { caFile: certs.caFile };
    const err = (await startWorker({ etcd: { endpoints: [etcd.endpoint], cluster: 'tls-nocert', tls } }).catch((e: unknown) => e)) as GranaryError;
    expect(err.code).toBe(ErrorCodes.ACCESS_DENIED);
    const m = new EtcdMembership({ endpoints: [etcd.endpoint], cluster: 'tls-nocert', tls });
    const merr = (await m.ready().catch((e: unknown) => e)) as GranaryError;
    await m.close();
    expect(merr.code).toBe(ErrorCodes.ACCESS_DENIED);
  });

  it('a CA that did not sign etcd: a coded error, no retry loop', async () => {
    const tls = { caFile: certs.otherCaFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile };
    const m = new EtcdMembership({ endpoints: [etcd.endpoint], cluster: 'tls-badca', tls });
    const merr = (await m.ready().catch((e: unknown) => e)) as GranaryError;
    await m.close();
    expect(merr.code).toBe(ErrorCodes.ACCESS_DENIED);
  });

  it('a missing certificate file: GRANARY_ERR_CONFIG naming it, at construction', () => {
    const missing = `${certs.dir}/nope.crt`;
    expect(() => new EtcdMembership({ endpoints: [etcd.endpoint], cluster: 'x', tls: { caFile: missing } })).toThrow(
      expect.objectContaining({ code: ErrorCodes.CONFIG, message: expect.stringContaining(missing) as unknown }),
    );
  });

  it('tls with an http:// endpoint is refused', () => {
    expect(() => new EtcdMembership({ endpoints: ['http://127.0.0.1:2379'], cluster: 'x', tls: { caFile: certs.caFile } })).toThrow(
      expect.objectContaining({ code: ErrorCodes.INVALID_ARGUMENT }),
    );
  });
});

/**
 * No secret leaves through what granary emits. A worker process and client commands run
 * with a bearer token, S3 keys (which the store refuses) and an etcd password; the test
 * provokes errors (no token, a wrong token, refused store credentials, a missing
 * object, malformed requests, bad options, a wrong etcd password), gathers every line
 * the processes print, every answer body, `/metrics`, `/v1/info` and every error
 * message thrown in process, and finds none of the secrets in any of it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheClient } from '../../src/cache/client.js';
import { startWorker } from '../../src/cache/worker.js';
import { ErrorCodes, isGranaryError } from '../../src/errors.js';
import { createUfs } from '../../src/ufs/router.js';
import { enableEtcdAuth, etcdAvailable, startEtcd, type EtcdServer } from '../support/etcd.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';

const TOKEN = 'tok-7c1e0b5a-SECRET-token';
const WRONG_TOKEN = 'tok-9f2d44e1-SECRET-wrong';
const KEY_ID = 'AKIDSECRET7Q2W9E4R';
const SECRET_KEY = 'sk-3f9a1c7e-SECRET-s3-key';
const ETCD_PASSWORD = 'pw-51b8d2e0-SECRET-etcd';
const WRONG_ETCD_PASSWORD = 'pw-0a7c93f4-SECRET-wrong';
const SECRETS = [TOKEN, WRONG_TOKEN, KEY_ID, SECRET_KEY, ETCD_PASSWORD, WRONG_ETCD_PASSWORD];

/** Keep the developer's own GRANARY_* settings out of the children. */
const CLEAN_ENV: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GRANARY_') && !k.startsWith('AWS_')));

/** Everything emitted, by where it came from, for the final grep. */
const emitted: { where: string; text: string }[] = [];
const record = (where: string, text: string): void => {
  emitted.push({ where, text });
};

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause === undefined ? '' : `\ncause: ${errorText(err.cause)}`;
  return `${err.name}: ${err.message}\n${err.stack ?? ''}\n${JSON.stringify(isGranaryError(err) ? err.toJSON() : {})}${cause}`;
}

interface Cli {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function cli(args: string[], env: NodeJS.ProcessEnv): Cli {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { env: { ...CLEAN_ENV, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  const c = cli(args, env);
  const code = await c.exited;
  record(`granary ${args.join(' ')}`, c.output());
  return { code, output: c.output() };
}

let s3: S3rverHandle;
let etcd: EtcdServer | undefined;
let worker: Cli;
let workerUrl: string;
const badStoreEnv = (): NodeJS.ProcessEnv => ({
  AWS_ACCESS_KEY_ID: KEY_ID,
  AWS_SECRET_ACCESS_KEY: SECRET_KEY,
  AWS_REGION: 'us-east-1',
  GRANARY_S3_ENDPOINT: s3.endpoint,
  GRANARY_S3_PATH_STYLE: 'true',
});

beforeAll(async () => {
  s3 = await startS3rver({ buckets: ['data'] });
  const ufs = createUfs({ s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } });
  await ufs.write('s3://data/obj.txt', Buffer.from('some bytes'));
  await ufs.close();
  if (etcdAvailable()) {
    etcd = await startEtcd();
    if (etcd) await enableEtcdAuth(etcd, ETCD_PASSWORD);
  }
  worker = cli(['worker', '--port', '0', '--json', '--max-read', '1k'], { ...badStoreEnv(), GRANARY_TOKEN: TOKEN });
  await new Promise<void>((resolve, reject) => {
    worker.child.stdout?.on('data', () => {
      const line = worker.output().split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined) {
        workerUrl = (JSON.parse(line) as { url: string }).url;
        resolve();
      }
    });
    void worker.exited.then((code) => reject(new Error(`granary worker exited with ${String(code)}: ${worker.output()}`)));
  });
}, 120_000);

afterAll(async () => {
  if (worker.child.exitCode === null) worker.child.kill('SIGTERM');
  await worker.exited;
  record('granary worker (whole run)', worker.output());
  await etcd?.close();
  await s3.close();
});

async function ask(path: string, params: Record<string, string>, token?: string): Promise<number> {
  const res = await fetch(`${workerUrl}${path}?${new URLSearchParams(params).toString()}`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  record(`${path} ${JSON.stringify(params)}`, `${res.status} ${JSON.stringify([...res.headers])}\n${await res.text()}`);
  return res.status;
}

describe('secrets', () => {
  it('never appear in worker answers, /metrics, /v1/info, process output or error messages', async () => {
    // The worker's answers, including its refusals and errors.
    expect(await ask('/v1/stat', { url: 's3://data/obj.txt' })).toBe(401);
    expect(await ask('/v1/stat', { url: 's3://data/obj.txt' }, WRONG_TOKEN)).toBe(401);
    expect(await ask('/v1/stat', { url: 's3://data/obj.txt' }, TOKEN)).toBe(403);
    expect(await ask('/v1/read', { url: 's3://data/missing.txt', offset: '0', length: '5', etag: 'x' }, TOKEN)).toBeGreaterThanOrEqual(400);
    expect(await ask('/v1/read', { url: 's3://data/obj.txt', offset: 'zero', length: '-1' }, TOKEN)).toBe(400);
    expect(await ask('/v1/read', { url: 's3://data/obj.txt', offset: '0', length: '4096', etag: 'x' }, TOKEN)).toBe(400);
    expect(await ask('/v1/nothing', {}, TOKEN)).toBe(400);
    expect(await ask('/metrics', {}, TOKEN)).toBe(200);
    expect(await ask('/v1/info', {}, TOKEN)).toBe(200);

    // Client commands: refused store keys (after the worker refused too), a missing
    // object, a wrong token, the worker list, and bad options with secrets around.
    const withWorker = { ...badStoreEnv(), GRANARY_WORKERS: workerUrl };
    const runs = await Promise.all([
      run(['cat', 's3://data/obj.txt'], { ...withWorker, GRANARY_TOKEN: TOKEN }),
      run(['stat', 's3://data/missing.txt'], { ...withWorker, GRANARY_TOKEN: WRONG_TOKEN }),
      run(['workers', '--json'], { ...withWorker, GRANARY_TOKEN: TOKEN }),
      run(['worker', '--port', 'many'], { ...badStoreEnv(), GRANARY_TOKEN: TOKEN, GRANARY_ETCD_PASSWORD: ETCD_PASSWORD }),
      run(['cat', 's3://data/obj.txt', '--etcd', 'http://127.0.0.1:1'], { ...badStoreEnv(), GRANARY_TOKEN: TOKEN, GRANARY_ETCD_PASSWORD: ETCD_PASSWORD }),
    ]);
    for (const r of runs.filter((_, i) => i !== 2)) expect(r.code).not.toBe(0);
    expect(runs[0]?.output).toContain(ErrorCodes.ACCESS_DENIED);

    // etcd with auth enabled and a wrong password: the worker refuses to start.
    if (etcd) {
      const r = await run(['worker', '--port', '0', '--etcd', etcd.endpoint, '--etcd-user', 'root'], { GRANARY_TOKEN: TOKEN, GRANARY_ETCD_PASSWORD: WRONG_ETCD_PASSWORD });
      expect(r.code).not.toBe(0);
    }

    // In process: errors thrown by the library with the same secrets configured.
    const badUfs = { s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: KEY_ID, secretAccessKey: SECRET_KEY } } };
    const thrown: unknown[] = [];
    const client = new CacheClient({ workers: [workerUrl], token: WRONG_TOKEN, ufs: badUfs });
    thrown.push(await client.read('s3://data/obj.txt').catch((e: unknown) => e));
    thrown.push(await client.stat('s3://data/missing.txt').catch((e: unknown) => e));
    await client.close();
    const goodUfs = { s3: { ...badUfs.s3, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } };
    const good = new CacheClient({ workers: [workerUrl], token: TOKEN, ufs: goodUfs });
    const missing = await good.stat('s3://data/missing.txt').catch((e: unknown) => e);
    expect(missing).toMatchObject({ code: ErrorCodes.NOT_FOUND });
    thrown.push(missing);
    await good.close();
    thrown.push(await startWorker({ host: '0.0.0.0', ufs: badUfs }).catch((e: unknown) => e));
    thrown.push(await startWorker({ token: TOKEN, maxConcurrentRequests: -1, ufs: badUfs }).catch((e: unknown) => e));
    thrown.push(await startWorker({ token: TOKEN, tls: { certFile: '/nonexistent.crt', keyFile: '/nonexistent.key' } }).catch((e: unknown) => e));
    if (etcd) {
      const auth = { username: 'root', password: WRONG_ETCD_PASSWORD };
      thrown.push(await startWorker({ token: TOKEN, etcd: { endpoints: [etcd.endpoint], cluster: 'c', auth, registerTimeoutMs: 5000 } }).catch((e: unknown) => e));
    }
    for (const e of thrown) {
      expect(e).toBeInstanceOf(Error);
      record('thrown', errorText(e));
    }
    // The worker logs on SIGTERM too: stop it here so its last lines are in the grep.
    worker.child.kill('SIGTERM');
    await worker.exited;
    record('granary worker', worker.output());

    // The grep below saw the errors it is about, not empty output.
    const all = emitted.map((e) => e.text).join('\n');
    for (const seen of [ErrorCodes.UNAUTHORIZED, ErrorCodes.ACCESS_DENIED, ErrorCodes.NOT_FOUND, ErrorCodes.BAD_REQUEST, ErrorCodes.RANGE_TOO_LARGE, ErrorCodes.CONFIG, 'granary_worker_refused_total', '"counters"']) {
      expect(all).toContain(seen);
    }
    const hits = emitted.flatMap(({ where, text }) => SECRETS.filter((s) => text.includes(s)).map((s) => `${s} in ${where}:\n${text}`));
    expect(hits).toEqual([]);
    expect(emitted.length).toBeGreaterThan(15);
  }, 240_000);
});

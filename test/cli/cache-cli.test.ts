import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerRow } from '../../src/cli/workers.js';
import { startEtcd, type EtcdServer } from '../support/etcd.js';

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

const TOKEN = 'cli-test-token';
/** Keep the developer's own GRANARY_* settings out of the children. */
const CLEAN_ENV: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GRANARY_')));

function spawnCli(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: process.cwd(),
    env: { ...CLEAN_ENV, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Run the CLI from source as a child process; stdout is kept as bytes. */
function granary(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(args, env);
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}

interface WorkerChild {
  child: ChildProcess;
  id: string;
  url: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

const children: ChildProcess[] = [];

/** Start `granary worker ... --json` and wait for its ready line. */
async function startWorkerCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<WorkerChild> {
  const child = spawnCli(['worker', '--port', '0', '--json', ...args], env);
  children.push(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = await new Promise<{ id: string; url: string }>((resolve, reject) => {
    let buf = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)) as { id: string; url: string });
    });
    void exited.then((code) => reject(new Error(`granary worker exited (${String(code)}) before it was ready: ${stderr}`)));
  });
  return { child, ...ready, stderr: () => stderr, exited };
}

/** Deterministic bytes that are not all alike, so an offset mistake shows. */
function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

let dir: string;
let dataUrl: string;
let big: Buffer;
let small: Buffer;
let worker: WorkerChild;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'granary-cache-cli-'));
  await mkdir(join(dir, 'data', 'sub'), { recursive: true });
  big = pattern(3 * 1024 * 1024 + 123, 7);
  small = pattern(5000, 11);
  await writeFile(join(dir, 'data', 'big.bin'), big);
  await writeFile(join(dir, 'data', 'sub', 'small.bin'), small);
  dataUrl = `${pathToFileURL(join(dir, 'data')).href}/`;
  worker = await startWorkerCli([
    '--id',
    'w-cli-1',
    '--memory',
    '32MiB',
    '--disk-dir',
    join(dir, 'disk'),
    '--disk',
    '64MiB',
    '--page-size',
    '256k',
    '--policy',
    's3fifo',
    '--metadata-ttl',
    '2s',
    '--allow',
    dataUrl,
    '--file-root',
    join(dir, 'data'),
    '--token',
    TOKEN,
  ]);
});

afterAll(async () => {
  for (const c of children) {
    if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
  }
  await rm(dir, { recursive: true, force: true });
});

describe('granary worker / cat / stat / load / workers', () => {
  it('lists the new commands in the help', async () => {
    const r = await granary(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['worker', 'workers', 'load', 'cat', 'stat']) expect(r.stdout.toString()).toMatch(new RegExp(`\\n\\s+${cmd} `));
  });

  it('starts a worker that reports its id and URL on one JSON line', () => {
    expect(worker.id).toBe('w-cli-1');
    expect(worker.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('cats an object through a worker byte for byte, whole and by range', async () => {
    const env = { GRANARY_WORKERS: worker.url, GRANARY_TOKEN: TOKEN };
    const whole = await granary(['cat', `${dataUrl}big.bin`], env);
    expect(whole.stderr).toBe('');
    expect(whole.code).toBe(0);
    expect(whole.stdout.equals(big)).toBe(true);

    const part = await granary(['cat', `${dataUrl}big.bin`, '--offset', '1000000', '--length', '300000'], env);
    expect(part.code).toBe(0);
    expect(part.stdout.equals(big.subarray(1_000_000, 1_300_000))).toBe(true);

    const tail = await granary(['cat', `${dataUrl}sub/small.bin`, '--offset', '4k', '--workers', worker.url, '--token', TOKEN]);
    expect(tail.code).toBe(0);
    expect(tail.stdout.equals(small.subarray(4096))).toBe(true);

    const empty = await granary(['cat', `${dataUrl}sub/small.bin`, '--offset', '5000'], env);
    expect(empty.code).toBe(0);
    expect(empty.stdout.byteLength).toBe(0);
  });

  it('refuses a range past the end with exit 1 and GRANARY_ERR_RANGE', async () => {
    const r = await granary(['cat', `${dataUrl}sub/small.bin`, '--offset', '4000', '--length', '2000', '--workers', worker.url, '--token', TOKEN]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^granary cat: GRANARY_ERR_RANGE: .*small\.bin.*5000/);
    expect(r.stdout.byteLength).toBe(0);
  });

  it('stats an object as JSON with url, size, etag and mtime', async () => {
    const r = await granary(['stat', `${dataUrl}big.bin`, '--json'], { GRANARY_WORKERS: worker.url, GRANARY_TOKEN: TOKEN });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout.toString()) as { url: string; size: number; etag: string; mtimeMs: number; mtime: string };
    const st = await stat(join(dir, 'data', 'big.bin'));
    expect(info.url).toBe(`${dataUrl}big.bin`);
    expect(info.size).toBe(big.byteLength);
    expect(info.etag.length).toBeGreaterThan(0);
    expect(Math.abs(info.mtimeMs - st.mtimeMs)).toBeLessThan(1000);
    expect(new Date(info.mtime).getTime()).toBe(Math.floor(info.mtimeMs));

    const text = await granary(['stat', `${dataUrl}big.bin`], { GRANARY_WORKERS: worker.url, GRANARY_TOKEN: TOKEN });
    expect(text.stdout.toString()).toMatch(new RegExp(`^url +${dataUrl}big\\.bin\\nsize +${big.byteLength} `));
  });

  it('loads a prefix into the worker, which then reports usage and its counters', async () => {
    const env = { GRANARY_WORKERS: worker.url, GRANARY_TOKEN: TOKEN };
    const r = await granary(['load', dataUrl, '--json'], env);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout.toString()) as { files: number; bytes: number; workers: number };
    expect(summary).toMatchObject({ files: 2, bytes: big.byteLength + small.byteLength, workers: 1 });
    // Not a terminal: progress is plain lines, ending at 100%.
    expect(r.stderr).toMatch(/granary load: 100% /);

    const w = await granary(['workers', '--json'], env);
    expect(w.code).toBe(0);
    const rows = JSON.parse(w.stdout.toString()) as WorkerRow[];
    expect(rows).toHaveLength(1);
    const row = rows[0];
    expect(row?.url).toBe(worker.url);
    expect(row?.info?.id).toBe('w-cli-1');
    expect(row?.info?.usage.memoryBytes).toBeGreaterThan(0);
    expect(row?.info?.capacity).toEqual({ memoryBytes: 32 * 1024 * 1024, diskBytes: 64 * 1024 * 1024 });
    expect(row?.info?.counters.storeRequests).toBeGreaterThan(0);
    expect(row?.hitRate).not.toBeNull();

    const table = await granary(['workers'], env);
    expect(table.code).toBe(0);
    const lines = table.stdout.toString().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^id +url +memory +disk +pages \(mem \/ disk\) +hit rate +store requests$/);
    expect(lines[1]).toContain(worker.url);
    expect(lines[1]).toMatch(/\d+\.\d%/);
  });

  it('reports a worker that refuses the token as unreachable, exiting 0', async () => {
    const r = await granary(['workers', '--workers', worker.url, '--json'], { GRANARY_TOKEN: 'wrong' });
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout.toString()) as WorkerRow[];
    expect(rows[0]?.error?.code).toBe('GRANARY_ERR_UNAUTHORIZED');
    expect(rows[0]?.info).toBeUndefined();
  });

  it('reads the store directly without workers, and says so once on stderr', async () => {
    const r = await granary(['cat', `${dataUrl}big.bin`, '--offset', '5', '--length', '1000']);
    expect(r.code).toBe(0);
    expect(r.stdout.equals(big.subarray(5, 1005))).toBe(true);
    expect(r.stderr.trim().split('\n')).toEqual([
      'granary cat: no cache workers given (--etcd, --workers, GRANARY_ETCD, GRANARY_WORKERS); reading the store directly',
    ]);
  });

  it('falls back to the store when the listed worker is down', async () => {
    const r = await granary(['cat', `${dataUrl}sub/small.bin`, '--workers', 'http://127.0.0.1:9']);
    expect(r.code).toBe(0);
    expect(r.stdout.equals(small)).toBe(true);
  });

  it('stops quietly when the reader closes the pipe early (| head)', async () => {
    const child = spawnCli(['cat', `${dataUrl}big.bin`, '--workers', worker.url], { GRANARY_TOKEN: TOKEN });
    children.push(child);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => {
      child.stdout?.once('data', () => child.stdout?.destroy());
      child.once('exit', (c) => resolve(c));
    });
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  it('exits 1 with GRANARY_ERR_NOT_FOUND for a missing object, through a worker and directly', async () => {
    const via = await granary(['cat', `${dataUrl}nope.bin`, '--workers', worker.url, '--token', TOKEN]);
    expect(via.code).toBe(1);
    expect(via.stderr).toMatch(/^granary cat: GRANARY_ERR_NOT_FOUND: .*nope\.bin/m);
    const direct = await granary(['stat', `${dataUrl}nope.bin`]);
    expect(direct.code).toBe(1);
    expect(direct.stderr).toMatch(/^granary stat: GRANARY_ERR_NOT_FOUND: .*nope\.bin/m);
  });

  it('rejects bad flags with exit 2 and a coded message', async () => {
    const cases: [string[], RegExp][] = [
      [['cat', `${dataUrl}big.bin`, '--offset', 'ten'], /GRANARY_ERR_CONFIG: .*--offset.*"ten"/],
      [['cat', 'ftp://host/x'], /^granary cat: GRANARY_ERR_UNSUPPORTED_SCHEME: /],
      [['stat', `${dataUrl}big.bin`, '--etcd', 'http://127.0.0.1:2379', '--workers', worker.url], /GRANARY_ERR_CONFIG: Give --etcd or --workers, not both/],
      [['stat', `${dataUrl}big.bin`, '--workers', 'not a url'], /GRANARY_ERR_CONFIG: .*--workers \(command line\).*"not a url"/],
      [['stat', `${dataUrl}big.bin`, '--cluster', 'c1'], /GRANARY_ERR_CONFIG: --cluster c1 needs --etcd/],
      [['load', dataUrl], /^granary load: GRANARY_ERR_CONFIG: granary load needs cache workers/],
      [['workers'], /^granary workers: GRANARY_ERR_CONFIG: granary workers needs cache workers/],
      [['worker', '--policy', 'lfu'], /GRANARY_ERR_CONFIG: .*--policy.*lru, s3fifo/],
      [['worker', '--disk', '1GiB'], /GRANARY_ERR_CONFIG: --disk 1073741824 needs --disk-dir/],
      [['worker', '--lease-ttl', '1', '--etcd', 'http://127.0.0.1:2379'], /GRANARY_ERR_CONFIG: .*--lease-ttl.*"1"/],
      [['worker', '--metadata-ttl', '10'], /GRANARY_ERR_CONFIG: .*--metadata-ttl.*"10"/],
      [['worker', '--allow', 'ftp://x/'], /^granary worker: GRANARY_ERR_UNSUPPORTED_SCHEME: /],
      [['worker', '--id', 'a/b'], /^granary worker: GRANARY_ERR_INVALID_ARGUMENT: .*--id/],
    ];
    // Four at a time: each is a fresh node process, and none of them does any I/O worth waiting on.
    for (let i = 0; i < cases.length; i += 4) {
      const batch = cases.slice(i, i + 4);
      const runs = await Promise.all(batch.map(([args]) => granary(args)));
      batch.forEach(([args, message], k) => {
        const r = runs[k] as Run;
        expect({ args, code: r.code }).toEqual({ args, code: 2 });
        expect(r.stderr).toMatch(message);
        expect(r.stdout.byteLength).toBe(0);
      });
    }
  });

  it('lets a flag on the command line win over the other source from the environment', async () => {
    const r = await granary(['stat', `${dataUrl}sub/small.bin`, '--workers', worker.url, '--json'], { GRANARY_ETCD: 'http://127.0.0.1:9', GRANARY_TOKEN: TOKEN });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout.toString()) as { size: number }).size).toBe(small.byteLength);
  });

  it('takes worker settings from a config file, the environment and flags, in that order of precedence', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'granary-worker-config-'));
    const file = join(dir, 'granary.json');
    await writeFile(file, JSON.stringify({ worker: { id: 'from-file', memory: '8MiB', metadataTtl: '3s' }, cluster: { token: 'file-token' } }));
    try {
      const w = await startWorkerCli(['--config', file, '--memory', '12MiB'], { GRANARY_WORKER_ID: 'from-env' });
      try {
        expect(w.id).toBe('from-env');
        const info = (await (await fetch(`${w.url}/v1/info`, { headers: { authorization: 'Bearer file-token' } })).json()) as {
          capacity: { memoryBytes: number };
        };
        expect(info.capacity.memoryBytes).toBe(12 * 1024 * 1024);
        expect((await fetch(`${w.url}/v1/info`)).status).toBe(401);
      } finally {
        w.child.kill('SIGTERM');
        await w.exited;
      }
      const bad = await granary(['worker', '--config', file, '--port', '0'], { GRANARY_WORKER_MEMORY: 'lots' });
      expect(bad.code).toBe(2);
      expect(bad.stderr.toString()).toContain('GRANARY_ERR_CONFIG');
      expect(bad.stderr.toString()).toContain('GRANARY_WORKER_MEMORY');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('finds its workers and token in a config file when no flag or variable names them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'granary-client-config-'));
    const file = join(dir, 'granary.json');
    await writeFile(file, JSON.stringify({ cluster: { workers: [worker.url], token: TOKEN } }));
    try {
      const r = await granary(['stat', `${dataUrl}sub/small.bin`, '--json'], { GRANARY_CONFIG: file });
      // No "reading the store directly" line: the workers came from the file.
      expect(r.stderr.toString()).toBe('');
      expect(r.code).toBe(0);
      expect((JSON.parse(r.stdout.toString()) as { size: number }).size).toBe(small.byteLength);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('closes gracefully on SIGTERM and exits 0', async () => {
    const w = await startWorkerCli(['--memory', '8MiB']);
    expect(w.child.kill('SIGTERM')).toBe(true);
    expect(await w.exited).toBe(0);
    expect(w.stderr()).toContain(`granary worker ${w.id}: SIGTERM, leaving the ring and closing`);
  });
});

describe('granary worker and workers with etcd', () => {
  let etcd: EtcdServer | undefined;
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    await etcd?.close();
  });

  it('registers a worker in etcd, lists it, reads through it, and leaves the cluster on SIGTERM', async (ctx) => {
    if (!etcd) {
      ctx.skip();
      return;
    }
    const env = { GRANARY_ETCD: etcd.endpoint, GRANARY_CLUSTER: 'cli-test' };
    const w = await startWorkerCli(['--id', 'w-etcd-1', '--lease-ttl', '2', '--memory', '16MiB', '--file-root', join(dir, 'data')], env);
    expect(w.id).toBe('w-etcd-1');

    const listed = await granary(['workers', '--etcd', etcd.endpoint, '--cluster', 'cli-test', '--json']);
    expect(listed.stderr).toBe('');
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.stdout.toString()) as WorkerRow[];
    expect(rows.map((r) => [r.id, r.url])).toEqual([['w-etcd-1', w.url]]);
    expect(rows[0]?.info?.capacity.memoryBytes).toBe(16 * 1024 * 1024);

    const other = await granary(['workers', '--json'], { GRANARY_ETCD: etcd.endpoint, GRANARY_CLUSTER: 'another-cluster' });
    expect(JSON.parse(other.stdout.toString())).toEqual([]);

    const cat = await granary(['cat', `${dataUrl}sub/small.bin`], env);
    expect(cat.code).toBe(0);
    expect(cat.stdout.equals(small)).toBe(true);
    const after = JSON.parse((await granary(['workers', '--json'], env)).stdout.toString()) as WorkerRow[];
    expect(after[0]?.info?.counters.storeRequests).toBeGreaterThan(0);

    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    // The lease was revoked on the way out: the cluster is empty at once, not after the TTL.
    const gone = await granary(['workers', '--json'], env);
    expect(gone.code).toBe(0);
    expect(JSON.parse(gone.stdout.toString())).toEqual([]);
    const load = await granary(['load', dataUrl], env);
    expect(load.code).toBe(1);
    expect(load.stderr).toMatch(/^granary load: GRANARY_ERR_UNAVAILABLE: No cache workers in cluster cli-test/);
  });
});

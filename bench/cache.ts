/**
 * The distributed cache, measured side by side in one run:
 *
 * 1. serve: cached 1 MiB reads over loopback to 8 concurrent clients, from a cache
 *    worker (its raw `/v1/read` endpoint, and through `CacheClient`) vs a bare
 *    `node:http` server answering the same bytes from memory (the machine's limit).
 * 2. prefix: a 500 MB prefix read from the emulated cloud store (s3rver behind the
 *    fault proxy) directly with `S3Ufs` (parallel ranged GETs) vs through two cache
 *    workers (separate processes, static membership), cold and warm; and s3fs-fuse
 *    (cold, then from its warm local cache) when the `s3fs` binary is installed.
 * 3. store requests per pass, cold vs warm (workers' /v1/info counters + the client's
 *    stats(); the direct adapter's request counts).
 *
 *   npx tsx bench/cache.ts [--only serve,prefix] [--runs 3] [--quick]
 *     serve:  [--serve-rounds 12] [--serve-seconds 1.5] [--serve-warmup 0.25] [--clients 8] [--serve-file-mib 64]
 *     prefix: [--prefix-mb 500] [--objects 10] [--workers 2] [--profile emulatedCloud] [--peers s3fs|none]
 *
 * Every server, the fault proxy and every load generator run in processes of their
 * own, so no two share an event loop. Prints markdown tables and writes
 * bench/results/cache.json and bench/results/cache.md.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { CacheClient } from '../src/cache/client.js';
import type { WorkerInfoResponse } from '../src/cache/worker.js';
import { LocalUfs } from '../src/ufs/local.js';
import { S3Ufs } from '../src/ufs/s3.js';
import type { UnderFileSystem } from '../src/ufs/types.js';
import { PROFILES, startFaultProxy } from '../test/support/fault-proxy.js';
import { startS3rver } from '../test/support/s3rver.js';
import { stopChild } from '../src/util/child-process.js';
import { spawnWorker, type WorkerProcess } from '../test/support/workers.js';
import { announceReady, announceResult, exitWithParent, spawnChild, type ChildHandle } from './lib/child.js';
import { MiB, fmt, machineInfo, markdownTable, median, quantile, writeResults } from './lib/report.js';

const SELF = fileURLToPath(import.meta.url);

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', default: 'serve,prefix' },
    runs: { type: 'string' },
    quick: { type: 'boolean', default: false },
    'serve-rounds': { type: 'string' },
    'serve-seconds': { type: 'string' },
    'serve-warmup': { type: 'string' },
    clients: { type: 'string', default: '8' },
    'serve-file-mib': { type: 'string', default: '64' },
    'prefix-mb': { type: 'string' },
    objects: { type: 'string', default: '10' },
    workers: { type: 'string', default: '2' },
    profile: { type: 'string', default: 'emulatedCloud' },
    peers: { type: 'string', default: 's3fs' },
    // Internal: the role of a child process.
    role: { type: 'string' },
    kind: { type: 'string' },
    target: { type: 'string' },
    file: { type: 'string' },
    etag: { type: 'string' },
    'file-size': { type: 'string' },
    'target-port': { type: 'string' },
  },
});

function num(name: string, raw: string | undefined, dflt: number): number {
  const v = raw === undefined ? dflt : Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`Expected --${name} to be a positive number, got ${String(raw)}`);
  return v;
}

const QUICK = args.quick;
const RUNS = Math.round(num('runs', args.runs, QUICK ? 1 : 3));
const SERVE_ROUNDS = Math.round(num('serve-rounds', args['serve-rounds'], QUICK ? 3 : 12));
const SERVE_SECONDS = num('serve-seconds', args['serve-seconds'], 1.5);
const SERVE_WARMUP = num('serve-warmup', args['serve-warmup'], 0.25);
const CLIENTS = Math.round(num('clients', args.clients, 8));
const SERVE_FILE = Math.round(num('serve-file-mib', args['serve-file-mib'], 64)) * MiB;
const PREFIX_BYTES = Math.round(num('prefix-mb', args['prefix-mb'], QUICK ? 100 : 500) * 1e6);
const OBJECTS = Math.round(num('objects', args.objects, 10));
const WORKERS = Math.round(num('workers', args.workers, 2));
const PROFILE_NAME = args.profile as keyof typeof PROFILES;
const profile = PROFILES[PROFILE_NAME];
if (!profile) throw new Error(`Unknown --profile ${args.profile} (known: ${Object.keys(PROFILES).join(', ')})`);
const ONLY = new Set(args.only.split(','));
const READ = 1 * MiB;

// ---------------------------------------------------------------- child roles

/** The machine's limit: `node:http` answering ranges of one file held in memory, nothing else. */
async function bareServer(path: string): Promise<void> {
  const bytes = readFileSync(path);
  const server = createServer({ keepAlive: true, keepAliveTimeout: 30_000 }, (req, res) => {
    const q = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    const offset = Number(q.get('offset'));
    const length = Number(q.get('length'));
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': length });
    res.end(bytes.subarray(offset, offset + length));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  exitWithParent();
  announceReady({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
}

async function proxyChild(targetPort: number): Promise<void> {
  const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: targetPort }, ...profile });
  exitWithParent(() => proxy.close());
  announceReady({ url: proxy.url });
}

interface LoadResult {
  kind: string;
  clients: number;
  seconds: number;
  requests: number;
  bytes: number;
  mibps: number;
  p50ms: number;
  p99ms: number;
}

/**
 * 8 clients, each a loop of 1 MiB page-aligned reads at random pages, one request
 * in flight per client. `bare` and `raw` use one undici Agent per client and drain
 * the body; `client` uses one CacheClient per client (bytes copied into the result,
 * as a user gets them). The process stays up between windows (connections stay
 * open); each `{ seconds, warmup }` message runs one window and answers a RESULT.
 * Requests that start and finish inside the measured part of a window count.
 */
async function loadgen(): Promise<void> {
  const kind = args.kind ?? 'raw';
  const target = args.target ?? '';
  const fileUrl = args.file ?? '';
  const etag = args.etag ?? '';
  const pages = Math.floor(Number(args['file-size']) / READ);
  const expected = await readFile(fileURLToPath(fileUrl));
  const readUrl = (page: number): string =>
    kind.startsWith('bare')
      ? `${target}/?offset=${page * READ}&length=${READ}`
      : `${target}/v1/read?${new URLSearchParams({ url: fileUrl, etag, offset: String(page * READ), length: String(READ), ...(kind === 'raw-crc' && { crc: 'crc32' }) }).toString()}`;
  // A page-aligned 1 MiB read with checksums ends with one 4-byte CRC per page.
  const answerBytes = kind === 'raw-crc' ? READ + 4 : READ;
  const clients = Array.from({ length: CLIENTS }, (_, i) => {
    let x = (i + 1) * 2654435761 + 1;
    return {
      nextPage: (): number => {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        return (x >>> 0) % pages;
      },
      agent: new Agent({ connections: 1, keepAliveTimeout: 60_000 }),
      cache: kind.startsWith('client') ? new CacheClient({ workers: [target], ufs: new LocalUfs(), checksums: kind !== 'client-nocrc' }) : undefined,
    };
  });
  type Client = (typeof clients)[number];
  const readPage = async (c: Client, page: number, keep: boolean): Promise<Uint8Array | number> => {
    if (c.cache) return c.cache.read(fileUrl, page * READ, READ, { etag });
    const res = await request(readUrl(page), { dispatcher: c.agent });
    if (res.statusCode !== 200) throw new Error(`${kind}: ${res.statusCode} ${await res.body.text()}`);
    if (keep) return new Uint8Array(await res.body.arrayBuffer());
    if (kind === 'bare-copy') {
      // What any client that hands the bytes to its caller must do: a fresh buffer, filled.
      const out = Buffer.allocUnsafe(READ);
      let at = 0;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        out.set(chunk, at);
        at += chunk.byteLength;
      }
      return at;
    }
    let n = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) n += chunk.byteLength;
    return n;
  };
  // Every client checks one answer byte for byte before anything is measured.
  await Promise.all(
    clients.map(async (c) => {
      const page = c.nextPage();
      const got = (await readPage(c, page, true)) as Uint8Array;
      if (got.byteLength !== answerBytes || !Buffer.from(got.buffer, got.byteOffset, READ).equals(expected.subarray(page * READ, page * READ + READ))) {
        throw new Error(`${kind}: bytes of page ${page} differ`);
      }
    }),
  );
  const window = async (seconds: number, warmup: number): Promise<LoadResult> => {
    const measureFrom = performance.now() + warmup * 1000;
    const measureTo = measureFrom + seconds * 1000;
    let bytes = 0;
    let requests = 0;
    const latencies: number[] = [];
    await Promise.all(
      clients.map(async (c) => {
        while (performance.now() < measureTo) {
          const t0 = performance.now();
          const got = await readPage(c, c.nextPage(), false);
          const t1 = performance.now();
          const n = typeof got === 'number' ? got : got.byteLength;
          if (n !== (typeof got === 'number' ? answerBytes : READ)) throw new Error(`${kind}: got ${n} bytes, expected ${answerBytes}`);
          if (t0 >= measureFrom && t1 <= measureTo) {
            bytes += n;
            requests++;
            latencies.push(t1 - t0);
          }
        }
      }),
    );
    return { kind, clients: CLIENTS, seconds, requests, bytes, mibps: bytes / MiB / seconds, p50ms: quantile(latencies, 0.5), p99ms: quantile(latencies, 0.99) };
  };
  process.on('message', (m: { seconds: number; warmup: number }) => {
    void window(m.seconds, m.warmup).then(announceResult, (err: unknown) => {
      process.stderr.write(`loadgen ${kind}: ${String(err)}\n`);
      process.exit(1);
    });
  });
  exitWithParent(async () => {
    for (const c of clients) {
      await c.cache?.close();
      await c.agent.close();
    }
  });
  announceReady({ kind });
}

// ---------------------------------------------------------------- 1. serve

interface ServeRow {
  target: string;
  kind: string;
  mibps: number[];
  /** This window's MiB/s over the bare server's in the same round. */
  vsBare: number[];
  p50ms: number[];
  p99ms: number[];
}

/**
 * Rounds of short windows, one per target, in a rotating order: the machine is
 * shared, and neighbours' load drifts over seconds, so each target's number is
 * paired with the bare server's from the same round and the ratio's median reported.
 */
async function benchServe(): Promise<{ rows: ServeRow[]; workerHits: number; workerMisses: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'granary-bench-serve-'));
  const path = join(dir, 'data.bin');
  await writeFile(path, randomBytes(SERVE_FILE));
  const fileUrl = pathToFileURL(path).href;
  const local = new LocalUfs();
  const { etag } = await local.stat(fileUrl);
  await local.close();
  let worker: WorkerProcess | undefined;
  const gens: ChildHandle<unknown>[] = [];
  const bare = await spawnChild<{ url: string }>(SELF, ['--role', 'bare-server', '--file', path]);
  try {
    worker = await spawnWorker({ memoryBytes: SERVE_FILE + 16 * MiB, fileRoot: dir });
    // Fill the worker's memory tier: every page, once, in order.
    const agent = new Agent({ connections: 4 });
    for (let off = 0; off < SERVE_FILE; off += 8 * MiB) {
      const q = new URLSearchParams({ url: fileUrl, etag, offset: String(off), length: String(Math.min(8 * MiB, SERVE_FILE - off)) });
      const res = await request(`${worker.url}/v1/read?${q.toString()}`, { dispatcher: agent });
      if (res.statusCode !== 200) throw new Error(`warming the worker: ${res.statusCode} ${await res.body.text()}`);
      await res.body.arrayBuffer();
    }
    await agent.close();

    const targets = [
      { target: 'bare node:http', kind: 'bare', url: bare.ready.url },
      { target: 'worker /v1/read (undici)', kind: 'raw', url: worker.url },
      { target: 'worker via CacheClient', kind: 'client', url: worker.url },
      // The cost of end-to-end page checksums, paired in the same rounds: the same reads without them.
      { target: 'worker via CacheClient, checksums off', kind: 'client-nocrc', url: worker.url },
      { target: 'worker /v1/read (undici), with crc=crc32', kind: 'raw-crc', url: worker.url },
      { target: 'bare node:http, bytes copied out', kind: 'bare-copy', url: bare.ready.url },
    ];
    for (const t of targets) {
      gens.push(
        await spawnChild<unknown>(SELF, [
          '--role', 'loadgen', '--kind', t.kind, '--target', t.url, '--file', fileUrl, '--etag', etag,
          '--file-size', String(SERVE_FILE), '--clients', String(CLIENTS),
        ]),
      );
    }
    const before = await workerInfo(worker.url);
    const rows: ServeRow[] = targets.map((t) => ({ target: t.target, kind: t.kind, mibps: [], vsBare: [], p50ms: [], p99ms: [] }));
    for (let round = 0; round < SERVE_ROUNDS; round++) {
      const got: LoadResult[] = [];
      for (let k = 0; k < targets.length; k++) {
        const i = (round + k) % targets.length;
        const gen = gens[i]!;
        gen.child.send({ seconds: SERVE_SECONDS, warmup: SERVE_WARMUP });
        got[i] = (await gen.nextResult()) as LoadResult;
      }
      const bareMibps = got[0]!.mibps;
      got.forEach((r, i) => {
        const row = rows[i]!;
        row.mibps.push(r.mibps);
        row.vsBare.push(r.mibps / bareMibps);
        row.p50ms.push(r.p50ms);
        row.p99ms.push(r.p99ms);
      });
      log(`serve round ${round + 1}/${SERVE_ROUNDS}: ${got.map((r, i) => `${targets[i]!.target} ${fmt(r.mibps)} MiB/s`).join(', ')}`);
    }
    const after = await workerInfo(worker.url);
    return { rows, workerHits: after.counters.hits - before.counters.hits, workerMisses: after.counters.misses - before.counters.misses };
  } finally {
    for (const g of gens) await g.stop();
    await worker?.stop();
    await bare.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- 2 + 3. prefix

interface PassResult {
  seconds: number;
  /** CPU seconds (user + system) each process group spent during the pass. */
  cpu?: Record<string, number>;
  storeRequests: number;
  clientStoreRequests?: number;
  workerStoreRequests?: number;
}

interface PrefixRow {
  path: string;
  pass: 'cold' | 'warm';
  results: PassResult[];
}

async function workerInfo(url: string): Promise<WorkerInfoResponse> {
  const res = await request(`${url}/v1/info`);
  return (await res.body.json()) as WorkerInfoResponse;
}

async function workerStoreRequests(ws: readonly WorkerProcess[]): Promise<number> {
  const infos = await Promise.all(ws.map((w) => workerInfo(w.url)));
  return infos.reduce((a, i) => a + i.counters.storeRequests, 0);
}

/** CPU seconds (user + system, all threads) a process has used, from /proc; NaN where unreadable. */
function procCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 (utime, stime) of proc(5), counted from field 3 here.
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** Measure the CPU each named group of processes (and this process, as `client`) uses between start() and stop(). */
function cpuMeter(groups: Record<string, readonly number[]>): () => Record<string, number> {
  const read = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [name, pids] of Object.entries(groups)) out[name] = pids.reduce((a, pid) => a + procCpuSeconds(pid), 0);
    const u = process.cpuUsage();
    out.client = (u.user + u.system) / 1e6;
    return out;
  };
  const before = read();
  return () => {
    const after = read();
    const d: Record<string, number> = {};
    for (const k of Object.keys(after)) d[k] = Math.round(((after[k] ?? 0) - (before[k] ?? 0)) * 100) / 100;
    return d;
  };
}

/** One pass over the prefix as a loader would make it: list, then every object, whole, in order, checked. */
async function pass(fs: UnderFileSystem, prefix: string, objects: Map<string, Buffer>): Promise<number> {
  const t0 = performance.now();
  let n = 0;
  for await (const f of fs.list(prefix)) {
    const got = await fs.read(f.url, 0, f.size);
    const want = objects.get(f.url);
    if (!want || !Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(want)) throw new Error(`bytes of ${f.url} differ`);
    n++;
  }
  if (n !== objects.size) throw new Error(`listed ${n} objects under ${prefix}, expected ${objects.size}`);
  return (performance.now() - t0) / 1000;
}

/** The same pass through a mounted directory (a FUSE peer). */
async function passFiles(mount: string, objects: Map<string, Buffer>): Promise<number> {
  const t0 = performance.now();
  for (const [url, want] of objects) {
    const key = url.replace(/^s3:\/\/[^/]+\//, '');
    const got = await readFile(join(mount, key));
    if (!got.equals(want)) throw new Error(`bytes of ${key} via the mount differ`);
  }
  return (performance.now() - t0) / 1000;
}

function run(cmd: string, argv: readonly string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', (e) => resolve({ code: -1, out: String(e) }));
    c.on('exit', (code) => resolve({ code, out }));
  });
}

function isMounted(mount: string): boolean {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mount);
}

function which(bin: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(':')) if (d && existsSync(join(d, bin))) return join(d, bin);
  return undefined;
}

/**
 * s3fs-fuse against the same proxied store, with its local disk cache: a cold pass
 * fills the cache, a warm pass reads it (s3fs still sends a HEAD per open).
 */
async function s3fsPeer(endpoint: string, bucket: string, objects: Map<string, Buffer>, rows: PrefixRow[], storePids: Record<string, number[]>): Promise<string | undefined> {
  const bin = which('s3fs');
  if (!bin) return 's3fs not installed (apt-get install -y s3fs)';
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse';
  const cold: PrefixRow = { path: 's3fs-fuse (use_cache)', pass: 'cold', results: [] };
  const warm: PrefixRow = { path: 's3fs-fuse (use_cache)', pass: 'warm', results: [] };
  for (let r = 0; r < RUNS; r++) {
    const dir = await mkdtemp(join(tmpdir(), 'granary-bench-s3fs-'));
    const mount = join(dir, 'mnt');
    const cache = join(dir, 'cache');
    await mkdir(mount);
    await mkdir(cache);
    const passwd = join(dir, 'passwd');
    await writeFile(passwd, 'S3RVER:S3RVER\n');
    await chmod(passwd, 0o600);
    const child = spawn(
      bin,
      [
        bucket, mount, '-f',
        '-o', `url=${endpoint},use_path_request_style,passwd_file=${passwd},use_cache=${cache},endpoint=us-east-1`,
        '-o', 'parallel_count=8,multipart_size=8,stat_cache_expire=600,enable_noobj_cache,max_stat_cache_size=10000',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    try {
      const deadline = Date.now() + 15_000;
      while (!isMounted(mount)) {
        if (child.exitCode !== null || Date.now() > deadline) return `s3fs did not mount: ${err.slice(0, 500)}`;
        await sleep(100);
      }
      const groups = { ...storePids, s3fs: [child.pid ?? 0] };
      let cpu = cpuMeter(groups);
      cold.results.push({ seconds: await passFiles(mount, objects), storeRequests: Number.NaN, cpu: cpu() });
      cpu = cpuMeter(groups);
      warm.results.push({ seconds: await passFiles(mount, objects), storeRequests: Number.NaN, cpu: cpu() });
      log(`prefix run ${r + 1}/${RUNS} s3fs: cold ${fmt(mbps(cold.results.at(-1)!.seconds))} MiB/s, warm ${fmt(mbps(warm.results.at(-1)!.seconds))} MiB/s`);
    } finally {
      if (isMounted(mount)) await run('fusermount', ['-u', mount]).then(async (x) => (x.code === 0 ? x : run('umount', ['-l', mount])));
      await stopChild(child, 5000);
      await rm(dir, { recursive: true, force: true });
    }
  }
  rows.push(cold, warm);
  return undefined;
}

const mbps = (seconds: number): number => PREFIX_BYTES / MiB / seconds;

async function benchPrefix(): Promise<{ rows: PrefixRow[]; peerNote?: string }> {
  const s3 = await startS3rver({ buckets: ['bench'] });
  const proxy = await spawnChild<{ url: string }>(SELF, ['--role', 'proxy', '--target-port', String(s3.port), '--profile', PROFILE_NAME]);
  const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
  const storeOpts = { endpoint: proxy.ready.url, credentials, timeoutMs: 300_000 };
  const prefix = 's3://bench/prefix/';
  const objects = new Map<string, Buffer>();
  const rows: PrefixRow[] = [];
  let direct: S3Ufs | undefined;
  let peerNote: string | undefined;
  try {
    const writer = new S3Ufs({ endpoint: s3.endpoint, credentials, partSize: 16 * MiB, timeoutMs: 300_000 });
    const each = Math.ceil(PREFIX_BYTES / OBJECTS);
    for (let i = 0; i < OBJECTS; i++) {
      const url = `${prefix}obj-${String(i).padStart(3, '0')}.bin`;
      const bytes = randomBytes(Math.min(each, PREFIX_BYTES - i * each));
      await writer.write(url, bytes);
      objects.set(url, bytes);
    }
    await writer.close();
    log(`prefix: wrote ${OBJECTS} objects, ${PREFIX_BYTES / 1e6} MB`);

    const storePids = { s3rver: [s3.pid], proxy: [proxy.pid] };
    direct = new S3Ufs(storeOpts);
    const directRow: PrefixRow = { path: 'direct S3Ufs (8 parallel 8 MiB ranged GETs)', pass: 'cold', results: [] };
    const cold: PrefixRow = { path: `granary, ${WORKERS} workers`, pass: 'cold', results: [] };
    const warm: PrefixRow = { path: `granary, ${WORKERS} workers`, pass: 'warm', results: [] };
    rows.push(directRow, cold, warm);
    // Room for the whole prefix on any one worker, so placement cannot cause evictions.
    const memoryBytes = Math.max(64 * MiB, Math.ceil(PREFIX_BYTES / MiB + 16) * MiB);
    for (let r = 0; r < RUNS; r++) {
      const c0 = direct.requestCounts();
      const directCpu = cpuMeter(storePids);
      const dt = await pass(direct, prefix, objects);
      const dCpu = directCpu();
      const c1 = direct.requestCounts();
      const directReqs = c1.get + c1.stat + c1.list - (c0.get + c0.stat + c0.list);
      directRow.results.push({ seconds: dt, storeRequests: directReqs, cpu: dCpu });

      const ws = await Promise.all(
        Array.from({ length: WORKERS }, (_, i) => spawnWorker({ id: `w${i}`, memoryBytes, metadataTtlMs: 600_000, ufs: { s3: storeOpts } })),
      );
      const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: { s3: storeOpts }, metadataTtlMs: 600_000 });
      try {
        const w0 = await workerStoreRequests(ws);
        const u0 = client.stats().ufsRequests;
        const groups = { ...storePids, workers: ws.map((w) => w.pid) };
        let cpu = cpuMeter(groups);
        const ct = await pass(client, prefix, objects);
        const cCpu = cpu();
        const w1 = await workerStoreRequests(ws);
        const u1 = client.stats().ufsRequests;
        cpu = cpuMeter(groups);
        const wt = await pass(client, prefix, objects);
        const wCpu = cpu();
        const w2 = await workerStoreRequests(ws);
        const u2 = client.stats().ufsRequests;
        if (client.stats().fallbacks !== 0) throw new Error(`client fell back to the store ${client.stats().fallbacks} times`);
        cold.results.push({ seconds: ct, storeRequests: w1 - w0 + u1 - u0, workerStoreRequests: w1 - w0, clientStoreRequests: u1 - u0, cpu: cCpu });
        warm.results.push({ seconds: wt, storeRequests: w2 - w1 + u2 - u1, workerStoreRequests: w2 - w1, clientStoreRequests: u2 - u1, cpu: wCpu });
      } finally {
        await client.close();
        await Promise.all(ws.map((w) => w.stop()));
      }
      log(
        `prefix run ${r + 1}/${RUNS}: direct ${fmt(mbps(dt))} MiB/s (${directReqs} req), cache cold ${fmt(mbps(cold.results.at(-1)!.seconds))} MiB/s (${cold.results.at(-1)!.storeRequests} req), warm ${fmt(mbps(warm.results.at(-1)!.seconds))} MiB/s (${warm.results.at(-1)!.storeRequests} req)`,
      );
    }
    if (args.peers.split(',').includes('s3fs')) {
      try {
        peerNote = await s3fsPeer(proxy.ready.url, 'bench', objects, rows, storePids);
      } catch (err) {
        peerNote = `s3fs failed: ${(err as Error).message}`;
      }
      if (peerNote) log(`peer s3fs skipped: ${peerNote}`);
    }
  } finally {
    await direct?.close();
    await proxy.stop();
    await s3.close();
  }
  return peerNote === undefined ? { rows } : { rows, peerNote };
}

// ---------------------------------------------------------------- main

function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const command = `npx tsx bench/cache.ts ${process.argv.slice(2).join(' ')}`.trim();
  const profileText = `${PROFILE_NAME}: ${profile.firstByteLatencyMs} ms to first byte, ${profile.bandwidthPerConnBps / 1e6} MB/s per connection${
    profile.totalBandwidthBps ? `, ${profile.totalBandwidthBps / 1e6} MB/s total` : ''
  }`;
  const md: string[] = [
    `Machine: ${machine.cpus} CPUs (${machine.cpuModel}), ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.platform}; load average at start ${loadavg().map((x) => x.toFixed(1)).join(' / ')}. Prefix: ${RUNS} run(s), medians. Command: \`${command}\`.`,
    '',
  ];
  const json: Record<string, unknown> = { bench: 'cache', date: new Date().toISOString(), command, machine, runs: RUNS };

  if (ONLY.has('serve')) {
    const s = await benchServe();
    md.push(
      `### Cached 1 MiB reads, ${CLIENTS} concurrent clients, loopback`,
      '',
      `A ${SERVE_FILE / MiB} MiB file, every page already in the worker's memory tier; each client reads random page-aligned 1 MiB ranges, one request in flight. ${SERVE_ROUNDS} rounds; in each, every target gets a ${SERVE_SECONDS} s window (after ${SERVE_WARMUP} s unmeasured), in a rotating order. Each server and each load generator is its own process (one load generator per target, identical code, kept alive between windows); they share the ${machine.cpus} cores. "vs bare" is the median over rounds of the ratio to the bare server's window in the same round.`,
      '',
      markdownTable(
        ['server', 'client', 'MiB/s (median)', 'vs bare (paired median)', 'p50 ms', 'p99 ms'],
        s.rows.map((r) => [
          r.kind.startsWith('bare') ? 'bare node:http (bytes in memory)' : 'granary worker (memory tier)',
          r.kind === 'client'
            ? `${CLIENTS} x CacheClient`
            : r.kind === 'client-nocrc'
              ? `${CLIENTS} x CacheClient, checksums: false`
              : r.kind === 'raw-crc'
                ? `${CLIENTS} x undici request with crc=crc32, body drained`
                : r.kind === 'bare-copy'
              ? `${CLIENTS} x undici request, body copied into a new 1 MiB buffer`
              : `${CLIENTS} x undici request, body drained`,
          fmt(median(r.mibps)),
          `${fmt(median(r.vsBare) * 100, 0)}%`,
          fmt(median(r.p50ms), 2),
          fmt(median(r.p99ms), 2),
        ]),
        ['l', 'l', 'r', 'r', 'r', 'r'],
      ),
      '',
      `Worker page hits during the measured rounds: ${s.workerHits}, misses: ${s.workerMisses}.`,
      '',
    );
    json.serve = {
      fileBytes: SERVE_FILE,
      readBytes: READ,
      clients: CLIENTS,
      rounds: SERVE_ROUNDS,
      windowSeconds: SERVE_SECONDS,
      warmupSeconds: SERVE_WARMUP,
      workerHits: s.workerHits,
      workerMisses: s.workerMisses,
      rows: s.rows.map((r) => ({ ...r, medianMiBps: median(r.mibps), medianVsBare: median(r.vsBare) })),
    };
  }

  if (ONLY.has('prefix')) {
    const p = await benchPrefix();
    const direct = median(p.rows[0]!.results.map((x) => x.seconds));
    md.push(
      `### A ${PREFIX_BYTES / 1e6} MB prefix from the emulated cloud store`,
      '',
      `${OBJECTS} objects, read as a loader would: list, then each object whole, in order, every byte checked. Store: s3rver behind the fault proxy, profile ${profileText}; s3rver, proxy, ${WORKERS} cache workers (static membership, memory tier) and the client each in its own process. Each run: a direct pass, then fresh workers and a new client for a cold pass, then a warm pass with that client; the s3fs runs (a fresh mount and cache each) follow all of those. Cold = empty cache; warm = the next pass. "paired by run" divides each pass by the direct pass of the same run.`,
      '',
      markdownTable(
        ['path', 'pass', 'median s', 'MiB/s', 'vs direct (medians)', 'vs direct (paired by run)', 'store requests / pass'],
        p.rows.map((r) => {
          const t = median(r.results.map((x) => x.seconds));
          const paired = median(r.results.map((x, i) => (p.rows[0]!.results[i]?.seconds ?? Number.NaN) / x.seconds));
          const reqs = median(r.results.map((x) => x.storeRequests));
          const split = r.results[0]?.workerStoreRequests !== undefined
            ? ` (workers ${median(r.results.map((x) => x.workerStoreRequests ?? 0))}, client ${median(r.results.map((x) => x.clientStoreRequests ?? 0))})`
            : '';
          return [r.path, r.pass, fmt(t, 2), fmt(mbps(t)), `${fmt(direct / t, 2)}x`, `${fmt(paired, 2)}x`, Number.isNaN(reqs) ? 'n/a' : `${reqs}${split}`];
        }),
        ['l', 'l', 'r', 'r', 'r', 'r', 'r'],
      ),
      '',
      ...(p.peerNote ? [`Peer s3fs-fuse not measured: ${p.peerNote}.`, ''] : []),
      `CPU seconds per pass (median; user + system from /proc, all threads; \`client\` is the bench process, which also checks every byte). The pass's wall time on ${machine.cpus} cores bounds what the processes together can use: ${machine.cpus} x wall.`,
      '',
      markdownTable(
        ['path', 'pass', 's3rver', 'proxy', 'cache (workers / s3fs)', 'client', 'total CPU s', `${machine.cpus} x wall s`],
        p.rows.map((r) => {
          const c = (k: string): number => median(r.results.map((x) => x.cpu?.[k] ?? Number.NaN));
          const cache = r.results[0]?.cpu?.workers !== undefined ? c('workers') : r.results[0]?.cpu?.s3fs !== undefined ? c('s3fs') : 0;
          const total = median(r.results.map((x) => Object.values(x.cpu ?? {}).reduce((a, b) => a + b, 0)));
          const t = median(r.results.map((x) => x.seconds));
          return [r.path, r.pass, fmt(c('s3rver'), 2), fmt(c('proxy'), 2), fmt(cache, 2), fmt(c('client'), 2), fmt(total, 2), fmt(machine.cpus * t, 2)];
        }),
        ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r'],
      ),
      '',
    );
    json.prefix = {
      bytes: PREFIX_BYTES,
      objects: OBJECTS,
      workers: WORKERS,
      profile: { name: PROFILE_NAME, ...profile },
      peerNote: p.peerNote,
      rows: p.rows.map((r) => {
        const t = median(r.results.map((x) => x.seconds));
        const paired = median(r.results.map((x, i) => (p.rows[0]!.results[i]?.seconds ?? Number.NaN) / x.seconds));
        return { ...r, medianSeconds: t, medianMiBps: mbps(t), vsDirect: direct / t, vsDirectPaired: paired, medianStoreRequests: median(r.results.map((x) => x.storeRequests)) };
      }),
    };
  }

  const text = md.join('\n');
  console.log(`\n${text}`);
  const out = writeResults('cache', json);
  const mdOut = join(dirname(out), 'cache.md');
  writeFileSync(mdOut, `${text}\n`);
  console.log(`wrote ${out} and ${mdOut}`);
}

switch (args.role) {
  case undefined:
    await main();
    break;
  case 'bare-server':
    await bareServer(args.file ?? '');
    break;
  case 'proxy':
    await proxyChild(Number(args['target-port']));
    break;
  case 'loadgen':
    await loadgen();
    break;
  default:
    throw new Error(`unknown --role ${args.role}`);
}

/**
 * The mount's own rows: `npm run bench -- mount`.
 *
 *   npm run bench -- mount [--only find,rss] [--files 100000] [--rss-seconds 300] [--readers 8]
 *
 * find: `--files` objects (1,000 per directory) in s3rver behind a proxy that counts store
 * requests by kind; `granary mount` lists them once, then `find` over the whole tree and
 * `stat` of every file are timed, with the store requests sent meanwhile (the target: 0).
 * The objects are written straight into s3rver's directory in its on-disk layout: 100,000
 * PUTs would take s3rver ten minutes.
 *
 * rss: 32 objects of 32 MiB behind two cache workers; `--readers` programs read random
 * whole files through the mount with O_DIRECT (so every read reaches the serving process,
 * whatever the page cache holds) for `--rss-seconds`; the serving process's RSS is sampled
 * every second. The bound it is held to: the block LRU (64 MiB) + the READ replies in
 * flight (8 device reads x 1 MiB) + the runtime.
 *
 * Prints markdown and writes bench/results/mount.json. `uptime` is printed: the machine is shared.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { createUfs } from '../src/ufs/router.js';
import { startFaultProxy, type StoreRequestCounts } from '../test/support/fault-proxy.js';
import { startS3rver, type S3rverHandle } from '../test/support/s3rver.js';
import { spawnWorker, type WorkerProcess } from '../test/support/workers.js';
import { cleanupMounts, mount, servingPid } from '../test/fuse/fixture.js';
import { fmt, machineInfo, markdownTable, median, MiB, writeResults } from './lib/report.js';

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', default: 'find,rss' },
    files: { type: 'string', default: '100000' },
    'rss-seconds': { type: 'string', default: '300' },
    readers: { type: 'string', default: '8' },
  },
});
const ONLY = new Set(args.only.split(','));
const FILES = Number(args.files);
const RSS_SECONDS = Number(args['rss-seconds']);
const READERS = Number(args.readers);
const STORE_ENV = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };

function uptime(): string {
  return spawnSync('uptime', { encoding: 'utf8' }).stdout.trim();
}

function total(c: StoreRequestCounts): number {
  return c.get + c.rangedGet + c.head + c.list + c.put + c.other;
}

/** Run a shell command line; resolves with its stdout once it exits 0. */
function sh(line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', line], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${line}: exit ${String(code)}`))));
  });
}

/** Objects written as s3rver's filesystem store keeps them (object, its md5, its metadata). */
async function writeObjectsDirectly(s3: S3rverHandle, bucket: string, keys: readonly string[], bytesOf: (i: number) => Buffer): Promise<void> {
  const dirs = new Map<string, Promise<unknown>>();
  for (let i = 0; i < keys.length; i += 256) {
    await Promise.all(
      keys.slice(i, i + 256).map(async (key, j) => {
        const slash = key.lastIndexOf('/');
        const dir = join(s3.dir, bucket, key.slice(0, slash));
        if (!dirs.has(dir)) dirs.set(dir, mkdir(dir, { recursive: true }));
        await dirs.get(dir);
        const base = join(dir, key.slice(slash + 1));
        const bytes = bytesOf(i + j);
        await writeFile(`${base}._S3rver_object`, bytes);
        await writeFile(`${base}._S3rver_object.md5`, createHash('md5').update(bytes).digest('hex'));
        await writeFile(`${base}._S3rver_metadata.json`, '{"content-type":"application/octet-stream"}');
      }),
    );
  }
}

interface FindResult {
  files: number;
  createS: number;
  mountS: number;
  listRequests: number;
  findS: number;
  statS: number;
  requestsDuringFindAndStat: StoreRequestCounts;
}

async function benchFind(work: string): Promise<FindResult> {
  const s3 = await startS3rver();
  const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: s3.port }, countRequests: true });
  try {
    const keys = Array.from({ length: FILES }, (_, i) => `many/d-${String(Math.floor(i / 1000)).padStart(4, '0')}/f-${String(i).padStart(7, '0')}.bin`);
    let t = performance.now();
    await writeObjectsDirectly(s3, 'test', keys, (i) => Buffer.from(`object ${i}\n`));
    const createS = (performance.now() - t) / 1000;
    const mnt = join(work, 'find-mnt');
    await mkdir(mnt);
    t = performance.now();
    await mount('s3://test/many/', mnt, ['--s3-endpoint', proxy.url, '--metadata-ttl', '1h', '--log-file', join(work, 'find.log')], STORE_ENV);
    const mountS = (performance.now() - t) / 1000;
    const before = { ...proxy.stats().requests };
    t = performance.now();
    const found = Number((await sh(`find ${mnt} -type f | wc -l`)).trim());
    const findS = (performance.now() - t) / 1000;
    t = performance.now();
    const stated = Number((await sh(`find ${mnt} -type f -exec stat -c %s {} + | wc -l`)).trim());
    const statS = (performance.now() - t) / 1000;
    const after = proxy.stats().requests;
    if (found !== FILES || stated !== FILES) throw new Error(`find saw ${found} files and stat ${stated}, expected ${FILES}`);
    const delta = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof StoreRequestCounts]])) as unknown as StoreRequestCounts;
    return { files: FILES, createS, mountS, listRequests: before.list, findS, statS, requestsDuringFindAndStat: delta };
  } finally {
    await cleanupMounts();
    await proxy.close();
    await s3.close();
  }
}

interface RssResult {
  seconds: number;
  readers: number;
  readMiB: number;
  samples: number;
  servingRssMiB: { first: number; median: number; max: number; last: number };
  holderRssMiB: number;
  perMinuteMaxMiB: number[];
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

async function benchRss(work: string): Promise<RssResult> {
  const s3 = await startS3rver();
  const ufs = createUfs({ s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } } });
  const workers: WorkerProcess[] = [];
  const readers: ChildProcess[] = [];
  try {
    const size = 32 * MiB;
    for (let i = 0; i < 32; i += 4) {
      await Promise.all([0, 1, 2, 3].map((j) => ufs.write(`s3://test/rss/f-${String(i + j).padStart(2, '0')}.bin`, Buffer.alloc(size, i + j))));
    }
    const ufsOpts = { s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } } };
    for (let i = 0; i < 2; i++) workers.push(await spawnWorker({ host: '127.0.0.1', port: 0, memoryBytes: 2048 * MiB, ufs: ufsOpts }));
    const mnt = join(work, 'rss-mnt');
    await mkdir(mnt);
    const m = await mount('s3://test/rss/', mnt, ['--s3-endpoint', s3.endpoint, '--workers', workers.map((w) => w.url).join(','), '--log-file', join(work, 'rss.log')], STORE_ENV);
    const serving = servingPid(m.holderPid);
    if (serving === undefined) throw new Error('no serving process');
    // Each reader: whole files in random order, O_DIRECT so that every byte goes through the serving process.
    const loop = `cd ${mnt}; n=0; while :; do for f in $(ls | shuf); do dd if=$f of=/dev/null bs=1M iflag=direct status=none || exit 1; n=$((n+1)); echo $n > ${work}/reader-$$; done; done`;
    for (let r = 0; r < READERS; r++) readers.push(spawn('sh', ['-c', loop], { stdio: 'ignore' }));
    const samples: number[] = [];
    const started = performance.now();
    while (performance.now() - started < RSS_SECONDS * 1000) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      samples.push(rssMiB(serving));
      if (readers.some((c) => c.exitCode !== null)) throw new Error('a reader failed');
    }
    for (const c of readers) c.kill('SIGKILL');
    const filesRead = (await sh(`cat ${work}/reader-* 2>/dev/null || true`)).split('\n').filter((l) => l !== '').reduce((n, l) => n + Number(l), 0);
    const perMinute: number[] = [];
    for (let i = 0; i < samples.length; i += 60) perMinute.push(Math.max(...samples.slice(i, i + 60)));
    return {
      seconds: RSS_SECONDS,
      readers: READERS,
      readMiB: filesRead * 32,
      samples: samples.length,
      servingRssMiB: { first: samples[0] ?? 0, median: median(samples), max: Math.max(...samples), last: samples.at(-1) ?? 0 },
      holderRssMiB: rssMiB(m.holderPid),
      perMinuteMaxMiB: perMinute,
    };
  } finally {
    for (const c of readers) if (c.exitCode === null) c.kill('SIGKILL');
    await cleanupMounts();
    for (const w of workers) await w.kill();
    await ufs.close();
    await s3.close();
  }
}

const work = await mkdtemp(join(tmpdir(), 'granary-bench-mount-'));
const results: { machine: ReturnType<typeof machineInfo>; uptimeBefore: string; find?: FindResult; rss?: RssResult; uptimeAfter?: string } = { machine: machineInfo(), uptimeBefore: uptime() };
console.log(`uptime: ${results.uptimeBefore}`);
try {
  if (ONLY.has('find')) {
    const f = await benchFind(work);
    results.find = f;
    console.log(`\n## find over ${f.files} files after the listing\n`);
    console.log(
      markdownTable(
        ['files', 'objects written (s)', 'mount + listing (s)', 'list requests', '`find -type f` (s)', '`stat` of every file (s)', 'store requests during find + stat'],
        [[f.files, fmt(f.createS), fmt(f.mountS), f.listRequests, fmt(f.findS, 2), fmt(f.statS, 2), `${total(f.requestsDuringFindAndStat)} (${JSON.stringify(f.requestsDuringFindAndStat)})`]],
      ),
    );
  }
  if (ONLY.has('rss')) {
    const r = await benchRss(work);
    results.rss = r;
    console.log(`\n## serving process RSS, ${r.readers} O_DIRECT readers for ${r.seconds} s\n`);
    console.log(
      markdownTable(
        ['read (MiB)', 'MiB/s', 'RSS first (MiB)', 'median', 'max', 'last', 'max per minute', 'holder RSS (MiB)'],
        [[fmt(r.readMiB, 0), fmt(r.readMiB / r.seconds), fmt(r.servingRssMiB.first), fmt(r.servingRssMiB.median), fmt(r.servingRssMiB.max), fmt(r.servingRssMiB.last), r.perMinuteMaxMiB.map((x) => fmt(x, 0)).join(' / '), fmt(r.holderRssMiB)]],
      ),
    );
  }
} finally {
  results.uptimeAfter = uptime();
  console.log(`\nuptime: ${results.uptimeAfter}`);
  console.log(`wrote ${writeResults('mount', results)}`);
  await rm(work, { recursive: true, force: true });
}

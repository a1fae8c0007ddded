/**
 * The cache's read path, measured the way users read: s3rver behind the fault proxy
 * (its own process), two cache workers (processes of their own, static membership)
 * and a `CacheClient` in this process with 8 concurrent readers. Each pass lists the
 * prefix, then reads every object whole in a seeded shuffled order (`stat` +
 * `read(url, 0, size)`, or `read(url)` with `--whole`). Passes: cold, warm, and warm
 * again after the metadata TTL has run out (revalidation). Per pass: wall time,
 * objects/s and MiB/s, CPU-s of this process and of the workers, store requests by
 * kind (the workers' counters plus the client's own), and new connections this
 * process opened to the workers. A direct `S3Ufs` pass runs first as the baseline.
 *
 *   npx tsx bench/read-path.ts [--objects 2000] [--kib 100] [--readers 8] [--ttl-ms 3000] [--whole] [--profile emulatedCloud]
 *   npx tsx bench/read-path.ts --objects 8 --kib 65536        # W1: 8 x 64 MiB
 *
 * Prints one markdown table; compare ratios within one run.
 */
import { subscribe } from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { CacheClient } from '../src/cache/client.js';
import { S3Ufs } from '../src/ufs/s3.js';
import type { UnderFileSystem } from '../src/ufs/types.js';
import { startS3rver } from '../test/support/s3rver.js';
import { spawnWorker, type WorkerProcess } from '../test/support/workers.js';
import { spawnChild } from './lib/child.js';

const MiB = 1024 * 1024;
const { values: args } = parseArgs({
  options: {
    objects: { type: 'string', default: '2000' },
    kib: { type: 'string', default: '100' },
    readers: { type: 'string', default: '8' },
    'ttl-ms': { type: 'string', default: '3000' },
    whole: { type: 'boolean', default: false },
    profile: { type: 'string', default: 'emulatedCloud' },
  },
});
const OBJECTS = Number(args.objects);
const SIZE = Number(args.kib) * 1024;
const READERS = Number(args.readers);
const TTL = Number(args['ttl-ms']);
const WHOLE = args.whole === true;

let connects = 0;
subscribe('net.client.socket', () => connects++);

function procCpu(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function storeRequests(ws: readonly WorkerProcess[]): Promise<Record<string, number>> {
  const out: Record<string, number> = { get: 0, stat: 0, list: 0 };
  for (const w of ws) {
    const text = await (await request(`${w.url}/metrics`)).body.text();
    for (const m of text.matchAll(/^granary_worker_store_requests_total\{[^}]*kind="(\w+)"[^}]*\} (\d+)/gm)) out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2]);
  }
  return out;
}

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const a = [...xs];
  let s = seed >>> 0;
  for (let i = a.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j] as T, a[i] as T];
  }
  return a;
}

/** List, then read every object whole with `READERS` in flight; checks every length and a sample of bytes. */
async function pass(fs: UnderFileSystem, prefix: string, want: Map<string, Buffer>, seed: number): Promise<number> {
  const t0 = performance.now();
  const files = [];
  for await (const f of fs.list(prefix)) files.push(f);
  if (files.length !== want.size) throw new Error(`listed ${files.length}, expected ${want.size}`);
  const order = shuffled(files, seed);
  let next = 0;
  await Promise.all(
    Array.from({ length: READERS }, async () => {
      while (next < order.length) {
        const f = order[next++]!;
        let bytes: Uint8Array;
        if (WHOLE) bytes = await fs.read(f.url);
        else {
          const info = await fs.stat(f.url);
          bytes = await fs.read(f.url, 0, info.size);
        }
        const w = want.get(f.url)!;
        if (bytes.byteLength !== w.byteLength || bytes[bytes.byteLength - 1] !== w[w.byteLength - 1] || bytes[0] !== w[0]) throw new Error(`wrong bytes for ${f.url}`);
      }
    }),
  );
  return (performance.now() - t0) / 1000;
}

const s3 = await startS3rver({ buckets: ['bench'] });
const proxyChild = fileURLToPath(new URL('./lib/proxy-child.ts', import.meta.url));
const proxy = await spawnChild<{ port: number }>(proxyChild, [String(s3.port), args.profile]);
const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
const storeOpts = { endpoint: `http://127.0.0.1:${proxy.ready.port}`, credentials, timeoutMs: 300_000 };
const prefix = 's3://bench/rp/';
const want = new Map<string, Buffer>();
const rows: string[] = [];
let ws: WorkerProcess[] = [];
try {
  const writer = new S3Ufs({ endpoint: s3.endpoint, credentials, partSize: 16 * MiB, timeoutMs: 300_000 });
  await Promise.all(
    Array.from({ length: 8 }, async (_, k) => {
      for (let i = k; i < OBJECTS; i += 8) {
        const url = `${prefix}obj-${String(i).padStart(5, '0')}.bin`;
        const bytes = randomBytes(SIZE);
        await writer.write(url, bytes);
        want.set(url, bytes);
      }
    }),
  );
  await writer.close();
  const total = OBJECTS * SIZE;
  const row = (name: string, secs: number, cpu: number, wcpu: number, reqs: Record<string, number>, conns: number, fallbacks = 0): void => {
    rows.push(
      `| ${name} | ${secs.toFixed(2)} | ${(OBJECTS / secs).toFixed(0)} | ${(total / MiB / secs).toFixed(0)} | ${cpu.toFixed(2)} | ${((cpu * MiB * 1024) / total).toFixed(2)} | ${wcpu.toFixed(2)} | ${reqs.get ?? 0} / ${reqs.stat ?? 0} / ${reqs.list ?? 0} | ${conns} | ${fallbacks} |`,
    );
  };

  const direct = new S3Ufs(storeOpts);
  let c0 = selfCpu();
  let k0 = connects;
  const dt = await pass(direct, prefix, want, 1);
  const dc = direct.requestCounts();
  row('direct S3Ufs', dt, selfCpu() - c0, 0, { get: dc.get, stat: dc.stat, list: dc.list }, connects - k0);
  await direct.close();

  ws = await Promise.all([0, 1].map((i) => spawnWorker({ id: `w${i}`, memoryBytes: Math.max(256 * MiB, 2 * total), metadataTtlMs: TTL, ufs: { s3: storeOpts } })));
  const client = new CacheClient({ workers: ws.map((w) => w.url), ufs: { s3: storeOpts }, metadataTtlMs: TTL });
  const names = ['granary cold', 'granary warm', 'granary warm, after the TTL'];
  for (let p = 0; p < 3; p++) {
    if (p === 2) await sleep(TTL + 100);
    const r0 = await storeRequests(ws);
    const u0 = client.stats().ufs;
    const f0 = client.stats().fallbacks;
    const w0 = ws.reduce((a, w) => a + procCpu(w.pid), 0);
    c0 = selfCpu();
    k0 = connects;
    const t = await pass(client, prefix, want, 2 + p);
    const cpu = selfCpu() - c0;
    const wcpu = ws.reduce((a, w) => a + procCpu(w.pid), 0) - w0;
    const k = connects - k0;
    const r1 = await storeRequests(ws);
    const u1 = client.stats().ufs;
    const reqs = { get: (r1.get ?? 0) - (r0.get ?? 0) + u1.get - u0.get, stat: (r1.stat ?? 0) - (r0.stat ?? 0) + u1.stat - u0.stat, list: (r1.list ?? 0) - (r0.list ?? 0) + u1.list - u0.list };
    row(names[p] as string, t, cpu, wcpu, reqs, k, client.stats().fallbacks - f0);
  }
  await client.close();
  console.log(`\n${OBJECTS} x ${SIZE / 1024} KiB, ${READERS} readers, ${WHOLE ? 'read(url)' : 'stat + read(url, 0, size)'}, metadata TTL ${TTL} ms, profile ${args.profile}\n`);
  console.log('| pass | s | objects/s | MiB/s | reader CPU-s | reader CPU-s/GiB | workers CPU-s | store GET / HEAD / LIST | new connections from the reader | fallbacks |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
} finally {
  await Promise.all(ws.map((w) => w.stop()));
  await proxy.stop();
  await s3.close();
}

/**
 * One large object read through the S3 adapter: a single GetObject vs N parallel
 * ranged GETs, side by side in one run, on the emulated cloud store (s3rver behind
 * the fault proxy: 20 ms to first byte, 50 MB/s per connection) and on bare s3rver
 * (no proxy), which shows where s3rver's own ceiling binds.
 *
 *   npx tsx bench/ufs.ts [--size-mib 256] [--parallel 4,8,16] [--part-mib 8] [--runs 3] [--profile emulatedCloud]
 *
 * Prints a markdown table and writes bench/results/ufs.json. Every read is checked
 * byte for byte against the object written.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { S3Ufs } from '../src/ufs/s3.js';
import { PROFILES } from '../src/netem/fault-proxy.js';
import { startProxyProcess } from './lib/proxy.js';
import { startS3rver } from '../test/support/s3rver.js';

const { values: args } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '256' },
    parallel: { type: 'string', default: '4,8,16' },
    'part-mib': { type: 'string', default: '8' },
    runs: { type: 'string', default: '3' },
    profile: { type: 'string', default: 'emulatedCloud' },
  },
});

const MiB = 1024 * 1024;
const SIZE = Math.round(Number(args['size-mib']) * MiB);
const PARALLEL = args.parallel.split(',').map(Number);
const PART = Math.round(Number(args['part-mib']) * MiB);
const RUNS = Number(args.runs);
const PROFILE_NAME = args.profile as keyof typeof PROFILES;
const profile = PROFILES[PROFILE_NAME];
if (!profile) throw new Error(`Unknown --profile ${args.profile} (known: ${Object.keys(PROFILES).join(', ')})`);
if (!(SIZE > 0) || !(PART > 0) || !(RUNS > 0) || PARALLEL.some((n) => !Number.isInteger(n) || n < 1)) {
  throw new Error('Expected positive --size-mib, --part-mib, --runs and a list of integers for --parallel');
}

interface Mode {
  store: 'emulated cloud' | 'bare s3rver';
  label: string;
  parallelism: number;
  ufs: S3Ufs;
  times: number[];
  gets: number[];
  /** CPU seconds this (client) process spent per read. */
  cpu: number[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

const mibps = (seconds: number): number => SIZE / MiB / seconds;


async function main(): Promise<void> {
  const s3 = await startS3rver({ buckets: ['bench'] });
  const proxy = await startProxyProcess(s3.port, PROFILE_NAME);
  const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
  const url = 's3://bench/large.bin';
  const modes: Mode[] = [];
  try {
    const data = randomBytes(SIZE);
    const writer = new S3Ufs({ endpoint: s3.endpoint, credentials, partSize: 16 * MiB, timeoutMs: 300_000 });
    await writer.write(url, data);
    await writer.close();

    for (const [store, endpoint] of [
      ['emulated cloud', proxy.url],
      ['bare s3rver', s3.endpoint],
    ] as const) {
      // partSize >= SIZE: the whole object in one GetObject on one connection.
      modes.push({ store, label: 'single GetObject', parallelism: 1, ufs: new S3Ufs({ endpoint, credentials, partSize: SIZE, timeoutMs: 300_000 }), times: [], gets: [], cpu: [] });
      for (const n of PARALLEL) {
        modes.push({
          store,
          label: `${n} parallel ranged GETs`,
          parallelism: n,
          ufs: new S3Ufs({ endpoint, credentials, partSize: PART, parallelism: n, timeoutMs: 300_000 }),
          times: [],
          gets: [],
          cpu: [],
        });
      }
    }

    // Runs interleave the modes, so a noisy neighbour on the shared machine hits them all alike.
    for (let run = 0; run < RUNS; run++) {
      for (const m of modes) {
        const before = m.ufs.requestCounts().get;
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        const got = await m.ufs.read(url, 0, SIZE);
        const seconds = (performance.now() - t0) / 1000;
        const c = process.cpuUsage(c0);
        m.cpu.push((c.user + c.system) / 1e6);
        if (!Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(data)) throw new Error(`${m.store} / ${m.label}: bytes differ`);
        m.times.push(seconds);
        m.gets.push(m.ufs.requestCounts().get - before);
        process.stderr.write(`run ${run + 1}/${RUNS} ${m.store} ${m.label}: ${mibps(seconds).toFixed(1)} MiB/s\n`);
      }
    }
  } finally {
    for (const m of modes) await m.ufs.close();
    await proxy.handle.stop();
    await s3.close();
  }

  const rows = modes.map((m) => {
    const single = modes.find((x) => x.store === m.store && x.parallelism === 1);
    const t = median(m.times);
    return {
      store: m.store,
      mode: m.label,
      parallelism: m.parallelism,
      medianSeconds: t,
      medianMiBps: mibps(t),
      vsSingle: single ? median(single.times) / t : 1,
      getsPerRead: median(m.gets),
      clientCpuSeconds: median(m.cpu),
      runsSeconds: m.times,
    };
  });
  const profileText = `${PROFILE_NAME}: ${profile.firstByteLatencyMs} ms first byte, ${profile.bandwidthPerConnBps / 1e6} MB/s per connection${
    profile.totalBandwidthBps ? `, ${profile.totalBandwidthBps / 1e6} MB/s total` : ''
  }`;
  const lines = [
    `One ${SIZE / MiB} MiB object, part size ${PART / MiB} MiB, ${RUNS} runs (median), ${availableParallelism()} CPUs. Emulated cloud = s3rver behind the fault proxy (${profileText}), proxy, s3rver and client in separate processes.`,
    '',
    '| store | read | GETs | median s | MiB/s | vs single GET | client CPU s |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) => `| ${r.store} | ${r.mode} | ${r.getsPerRead} | ${r.medianSeconds.toFixed(2)} | ${r.medianMiBps.toFixed(1)} | ${r.vsSingle.toFixed(2)}x | ${r.clientCpuSeconds.toFixed(2)} |`,
    ),
  ];
  console.log(lines.join('\n'));
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'ufs.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify({ bench: 'ufs', date: new Date().toISOString(), sizeBytes: SIZE, partBytes: PART, runs: RUNS, profile: { name: PROFILE_NAME, ...profile }, cpus: availableParallelism(), rows }, null, 2)}\n`,
  );
  console.log(`\nwrote ${out}`);
}

await main();

/**
 * The cost of end-to-end page checksums on cached reads: one cache worker (its own
 * process, memory tier holding a 64 MiB file) and, in this process, two `CacheClient`s
 * that differ only in `checksums`, read the same random 1 MiB ranges with 8 in flight.
 * Rounds alternate the two (in a rotating order) so that each round pairs them under the
 * same machine load; the table reports medians of the per-round ratios, of throughput
 * and of CPU per MiB (client: this process; worker: its /proc stat), for page-aligned
 * reads (whole pages: the worker sends its stored CRCs) and unaligned ones (two
 * partial pages per read, whose CRCs the worker computes as it answers).
 *
 *   npx tsx bench/checksums.ts [--rounds 15] [--reads 128]
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { CacheClient } from '../src/cache/client.js';
import { LocalUfs } from '../src/ufs/local.js';
import { spawnWorker } from '../test/support/workers.js';
import { MiB, fmt, machineInfo, markdownTable, median } from './lib/report.js';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '15' }, reads: { type: 'string', default: '128' } } });
const ROUNDS = Number(args.rounds);
const READS = Number(args.reads);
const FILE = 64 * MiB;
const IN_FLIGHT = 8;

/** CPU seconds (user + system) a process has used, from /proc. */
function procCpu(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(f[11]) + Number(f[12])) / 100;
}

interface Sample {
  mibps: number;
  clientCpuPerMiB: number;
  workerCpuPerMiB: number;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'granary-bench-crc-'));
  const path = join(dir, 'data.bin');
  const data = randomBytes(FILE);
  await writeFile(path, data);
  const url = pathToFileURL(path).href;
  const local = new LocalUfs();
  const { etag, size } = await local.stat(url);
  const worker = await spawnWorker({ memoryBytes: FILE + 16 * MiB, fileRoot: dir });
  const clients = { on: new CacheClient({ workers: [worker.url], ufs: local }), off: new CacheClient({ workers: [worker.url], ufs: local, checksums: false }) };
  const samples: Record<string, Sample[]> = {};
  try {
    await clients.off.read(url, 0, size, { etag, size });
    let x = 88172645463325252n;
    const rand = (n: number): number => {
      x ^= x << 13n;
      x ^= x >> 7n;
      x ^= x << 17n;
      x &= (1n << 64n) - 1n;
      return Number(x % BigInt(n));
    };
    const pass = async (c: CacheClient, aligned: boolean): Promise<Sample> => {
      const offsets = Array.from({ length: READS }, () => (aligned ? rand(FILE / MiB) * MiB : rand(FILE - MiB)));
      const cpu0 = process.cpuUsage();
      const w0 = procCpu(worker.pid);
      const t0 = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: IN_FLIGHT }, async () => {
          while (next < offsets.length) {
            const off = offsets[next++] as number;
            const got = await c.read(url, off, MiB, { etag, size });
            if (got[0] !== data[off] || got[MiB - 1] !== data[off + MiB - 1]) throw new Error(`bytes at ${off} differ`);
          }
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const mib = READS;
      return { mibps: mib / secs, clientCpuPerMiB: (cpu.user + cpu.system) / 1e6 / mib, workerCpuPerMiB: (procCpu(worker.pid) - w0) / mib };
    };
    const modes = [
      { name: 'aligned, checksums on', c: clients.on, aligned: true },
      { name: 'aligned, checksums off', c: clients.off, aligned: true },
      { name: 'unaligned, checksums on', c: clients.on, aligned: false },
      { name: 'unaligned, checksums off', c: clients.off, aligned: false },
    ];
    await pass(clients.on, true);
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < modes.length; k++) {
        const m = modes[(r + k) % modes.length]!;
        (samples[m.name] ??= []).push(await pass(m.c, m.aligned));
      }
      process.stderr.write(`round ${r + 1}/${ROUNDS}\n`);
    }
    if (clients.on.stats().corrupt !== 0 || clients.on.stats().fallbacks !== 0) throw new Error('the checksummed client fell back');
  } finally {
    await clients.on.close();
    await clients.off.close();
    await local.close();
    await worker.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const m = machineInfo();
  const rows: string[][] = [];
  for (const shape of ['aligned', 'unaligned']) {
    const on = samples[`${shape}, checksums on`]!;
    const off = samples[`${shape}, checksums off`]!;
    const ratio = (f: (s: Sample) => number): string => `${fmt(median(on.map((s, i) => f(s) / f(off[i]!))) * 100, 1)}%`;
    rows.push([shape, fmt(median(on.map((s) => s.mibps))), fmt(median(off.map((s) => s.mibps))), ratio((s) => s.mibps), ratio((s) => s.clientCpuPerMiB), ratio((s) => s.workerCpuPerMiB)]);
  }
  console.log(`Machine: ${m.cpus} CPUs, Node ${process.version}; load average ${loadavg().map((l) => l.toFixed(1)).join(' / ')}. ${ROUNDS} rounds x ${READS} reads of 1 MiB, ${IN_FLIGHT} in flight.\n`);
  console.log(markdownTable(['reads', 'MiB/s on (median)', 'MiB/s off (median)', 'throughput on/off (paired median)', 'client CPU/MiB on/off', 'worker CPU/MiB on/off'], rows));
}

await main();

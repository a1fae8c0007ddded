/**
 * granary side by side with the tools people use to read a bucket, on the same
 * emulated store: `npm run bench -- peers`.
 *
 *   npm run bench -- peers [--quick] [--only w1,w2,loader] [--profile sameRegion,crossRegion]
 *                          [--contenders ceiling,direct,granary,granary-http,granary-fuse,s3fs,rclone] [--seed 42]
 *
 * s3rver runs behind the fault proxy (each in its own process; the proxy counts store
 * requests by kind). For each profile, workload and contender: a cold pass (fresh
 * workers, fresh mounts and caches), then a warm pass; each pass lists the prefix and
 * reads every object whole in a seeded shuffled order with 8 concurrent readers, in a
 * reader process of its own; every byte is checked against its sha256 after the clock
 * stops. Peers missing on the machine are installed with apt-get where possible, or
 * reported and skipped. Writes bench/results/peers.{json,md} and one SVG per workload
 * (bench/results/ and docs/); `--quick` writes bench/results/peers-quick.* only.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PROFILES, type ProfileName } from '../src/netem/fault-proxy.js';
import { spawnChild } from './lib/child.js';
import { machineInfo, markdownTable, fmt } from './lib/report.js';
import { CONTENDERS, type BenchContext, type Contender } from './peers/contenders.js';
import { workloads, type Workload } from './peers/data.js';
import { measurePass, type PassRow } from './peers/metrics.js';
import { detailTable, evaluateTargets, headlineTable, statusLines, targetLines, type ContenderStatus } from './peers/report.js';
import { importLoader, startStore, type Store } from './peers/setup.js';
import { barChart } from './peers/svg.js';
import { Cleanups, dropPageCache, ensurePackages } from './peers/system.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const READER = join(HERE, 'peers', 'reader.ts');

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string', default: 'w1,w2,loader' },
    profile: { type: 'string' },
    contenders: { type: 'string', default: CONTENDERS.map((c) => c.id).join(',') },
    seed: { type: 'string', default: '42' },
    concurrency: { type: 'string', default: '8' },
  },
});

const QUICK = args.quick;
const ONLY = new Set(args.only.split(','));
const PROFILE_LIST = (args.profile ?? (QUICK ? 'sameRegion' : 'sameRegion,crossRegion')).split(',') as ProfileName[];
for (const p of PROFILE_LIST) if (!(p in PROFILES)) throw new Error(`Unknown --profile ${p} (known: ${Object.keys(PROFILES).join(', ')})`);
const WANTED = new Set(args.contenders.split(','));
for (const c of WANTED) if (!CONTENDERS.some((k) => k.id === c)) throw new Error(`Unknown contender ${c} (known: ${CONTENDERS.map((k) => k.id).join(', ')})`);
const SEED = Number(args.seed);
const CONCURRENCY = Number(args.concurrency);
const WORKLOADS = workloads(QUICK).filter((w) => ONLY.has(w.id));
/** A pass that takes longer than this is a failure (a hung mount or reader), not a number. */
const PASS_TIMEOUT_MS = QUICK ? 120_000 : 600_000;
const NAME = QUICK ? 'peers-quick' : 'peers';

// Every child (readers, workers) inherits it: the SDK's Node-version notice is noise here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const log = (line: string): void => void process.stderr.write(`[peers ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const cleanups = new Cleanups();
/** Set on SIGINT / SIGTERM: no further contender starts and no results are written. */
let interrupted = false;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s`)), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Cold then warm pass of one contender on one workload. */
async function runContender(ctx: BenchContext, store: Store, profile: string, w: Workload, c: Contender, rows: PassRow[]): Promise<void> {
  const session = await c.start(ctx, `${w.id}/`);
  const stopSession = cleanups.add(`stop ${c.id} session`, () => session.stop());
  try {
    const reader = await spawnChild<{ pid: number }>(READER, [JSON.stringify(session.reader)], { timeoutMs: 60_000 });
    const stopReader = cleanups.add(`stop reader ${reader.pid}`, () => reader.stop());
    try {
      for (const pass of ['cold', 'warm'] as const) {
        const row = await withTimeout(
          measurePass({ profile, workload: w, contender: c.id, pass, reader, groups: session.groups, expected: store.digests, ...(session.proxied ? { proxyStats: () => store.proxy.stats() } : {}) }),
          PASS_TIMEOUT_MS,
          `${c.id} ${w.id} ${pass} pass`,
        );
        rows.push(row);
        log(`${profile} ${w.id} ${c.id} ${pass}: ${fmt(row.wallS, 2)} s, ${fmt(row.rate, 1)} ${row.unit}, verified ${row.verified ? 'yes' : 'NO'}`);
      }
    } finally {
      await stopReader();
    }
  } finally {
    await stopSession();
  }
}

async function main(): Promise<number> {
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const load = loadavg();
  const packages = await ensurePackages(log);
  for (const p of packages) log(p);
  const canDrop = dropPageCache();
  const dropNote = canDrop ? 'the page cache was dropped before every pass' : 'the page cache could NOT be dropped (no permission to write /proc/sys/vm/drop_caches): passes after the first may read s3rver files and mount caches from memory';
  log(dropNote);
  const store = await startStore(cleanups, PROFILE_LIST[0]!, WORKLOADS, SEED, log);
  const ctx: BenchContext = { bucket: store.bucket, storeEndpoint: store.s3.endpoint, proxyEndpoint: store.proxy.url, concurrency: CONCURRENCY, seed: SEED, cleanups, log };
  const contenders = CONTENDERS.filter((c) => WANTED.has(c.id));
  const missing = new Map<string, string | undefined>();
  for (const c of contenders) missing.set(c.id, await c.unavailable());
  const rows: PassRow[] = [];
  const loaderRowsOut: PassRow[] = [];
  const statuses: ContenderStatus[] = [];
  let loaderNote: string | undefined;
  for (const profile of PROFILE_LIST) {
    await store.proxy.setProfile(profile);
    log(`profile ${profile}: ${JSON.stringify(PROFILES[profile])}`);
    for (const w of WORKLOADS) {
      for (const c of contenders) {
        if (interrupted) return 130;
        const why = missing.get(c.id);
        const base = { profile, workload: w.id, contender: c.id, label: c.label };
        if (why !== undefined) {
          statuses.push({ ...base, status: c.missingStatus, note: why });
          log(`${profile} ${w.id} ${c.id}: ${c.missingStatus}: ${why}`);
          continue;
        }
        try {
          await runContender(ctx, store, profile, w, c, rows);
          statuses.push({ ...base, status: 'ok' });
        } catch (err) {
          statuses.push({ ...base, status: 'failed', note: (err as Error).message.slice(0, 600) });
          log(`${profile} ${w.id} ${c.id}: FAILED: ${(err as Error).message}`);
        }
      }
    }
    if (ONLY.has('loader')) {
      const m = await importLoader();
      if (typeof m === 'string') loaderNote = m;
      else {
        const workDir = await mkdtemp(join(tmpdir(), 'granary-peers-loader-'));
        const removeWork = cleanups.dir(workDir);
        try {
          for (const r of await m.loaderRows({ profile, quick: QUICK, workDir, log })) loaderRowsOut.push({ ...r, profile });
        } catch (err) {
          loaderNote = `loader rows failed: ${(err as Error).message}`;
        } finally {
          await removeWork();
        }
      }
      if (loaderNote) log(`loader rows: absent: ${loaderNote}`);
    }
  }
  if (interrupted) return 130;
  const wallS = (performance.now() - t0) / 1000;
  // The loader rows carry their own target line in their notes (bench/peers-loader.ts computes it).
  const targets = evaluateTargets(rows, PROFILE_LIST);
  const machine = machineInfo();
  const failed = statuses.filter((s) => s.status === 'failed').length + [...rows, ...loaderRowsOut].filter((r) => !r.verified).length;
  const result = {
    bench: 'peers',
    quick: QUICK,
    completed: true,
    ok: failed === 0,
    startedAt,
    wallS,
    machine: { ...machine, loadavgAtStart: load },
    command: `npm run bench -- peers ${process.argv.slice(2).join(' ')}`.trim(),
    profiles: PROFILE_LIST.map((p) => ({ name: p, settings: PROFILES[p] })),
    workloads: WORKLOADS,
    concurrency: CONCURRENCY,
    seed: SEED,
    packages,
    pageCacheDropped: canDrop,
    contenders: statuses,
    rows,
    loader: { present: loaderNote === undefined && ONLY.has('loader'), note: loaderNote, rows: loaderRowsOut },
    targets,
  };
  const md = renderMarkdown(result, contenders, dropNote);
  const outDir = join(HERE, 'results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, `${NAME}.json`), `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(join(outDir, `${NAME}.md`), md);
  for (const [i, profile] of PROFILE_LIST.entries()) {
    for (const w of WORKLOADS) {
      const note = `${machine.cpus} x ${machine.cpuModel}, ${startedAt.slice(0, 16).replace('T', ' ')} UTC, load average at start ${load.map((x) => x.toFixed(1)).join(' ')}`;
      const svg = barChart({ title: w.title, unit: w.unit, profile, contenders, rows: rows.filter((r) => r.profile === profile && r.workload === w.id), note });
      const file = `${NAME}-${w.id}${i === 0 && profile === 'sameRegion' ? '' : `-${profile}`}.svg`;
      writeFileSync(join(outDir, file), svg);
      if (!QUICK) writeFileSync(join(HERE, '..', 'docs', file), svg);
    }
  }
  process.stdout.write(md);
  log(`wrote bench/results/${NAME}.json and .md in ${fmt(wallS, 0)} s${failed > 0 ? `; ${failed} failures` : ''}`);
  return failed === 0 ? 0 : 1;
}

function renderMarkdown(r: { startedAt: string; wallS: number; machine: ReturnType<typeof machineInfo> & { loadavgAtStart: number[] }; command: string; rows: PassRow[]; contenders: ContenderStatus[]; loader: { note: string | undefined; rows: PassRow[] }; targets: ReturnType<typeof evaluateTargets>; packages: string[] }, contenders: readonly Contender[], dropNote: string): string {
  const m = r.machine;
  const out: string[] = [
    `# granary vs peers${QUICK ? ' (quick: smaller workloads; checks completion and bytes, not speed)' : ''}`,
    '',
    `\`${r.command}\` on ${m.cpus} x ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}; ${r.startedAt}; load average at start ${r.machine.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')}; took ${fmt(r.wallS, 0)} s.`,
    `s3rver behind the fault proxy (each its own process); ${CONCURRENCY} concurrent readers in a reader process; the prefix listed first, then every object read whole in a seeded shuffled order; sha256 of every byte checked after the clock stops; ${dropNote}.`,
    'Reader peak RSS includes the bytes it holds for the check. CPU s: r = reader, w = the two workers, d = the FUSE daemon.',
    '',
  ];
  for (const profile of PROFILE_LIST) {
    const rows = r.rows.filter((x) => x.profile === profile);
    out.push(`## Profile ${profile} (${JSON.stringify(PROFILES[profile])})`, '', headlineTable(rows, profile, WORKLOADS, contenders.filter((c) => rows.some((x) => x.contender === c.id))), '', `### Every pass, profile ${profile}`, '', detailTable(rows, profile), '');
    const lr = r.loader.rows.filter((x) => x.profile === profile);
    if (lr.length > 0) {
      out.push(`### Loader rows, profile ${profile}`, '', markdownTable(['workload', 'contender', 'pass', 'wall s', 'rate', 'verified', 'note'], lr.map((x) => [x.workload, x.contender, x.pass, fmt(x.wallS, 2), `${fmt(x.rate, 1)} ${x.unit}`, x.verified ? 'yes' : 'NO', x.note ?? ''])), '');
    }
  }
  if (r.loader.note) out.push(`Loader rows: absent (${r.loader.note}).`, '');
  out.push('## Targets', '', ...targetLines(r.targets), ...(r.loader.rows.length > 0 ? ['- Loader targets: in the loader rows\' notes above.'] : []), '');
  const st = statusLines(r.contenders);
  if (st.length > 0) out.push('## Not measured', '', ...st, '');
  out.push('## Setup', '', ...r.packages.map((p) => `- ${p}`), '');
  return `${out.join('\n')}\n`;
}

/** The cleanup in progress, whoever started it (a signal or the end of main). */
let cleaning: Promise<void> | undefined;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: stopping every process and unmounting`);
    cleaning ??= cleanups.run(log);
    void cleaning.finally(() => process.exit(130));
  });
}

let code = 1;
try {
  code = await main();
} catch (err) {
  log(`failed: ${(err as Error).stack ?? String(err)}`);
} finally {
  cleaning ??= cleanups.run(log);
  await cleaning;
}
process.exit(interrupted ? 130 : code);

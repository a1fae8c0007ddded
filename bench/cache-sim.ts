/**
 * Cache simulator: how much of a dataset comes from the store when training jobs
 * read it through a shared cache for several shuffled epochs, under different
 * eviction policies. Pure and fast (no I/O): the access trace comes from
 * `planEpoch`, exactly the order the loader would read partitions in.
 *
 *   npx tsx bench/cache-sim.ts [--partitions 1000] [--world 4] [--mode buffer] [--buffer 4] [--epochs 3]
 *
 * Prints markdown tables and writes bench/results/cache-sim.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { planEpoch, shuffleQuality } from '../src/shuffle/index.js';
import type { ShuffleMode } from '../src/shuffle/index.js';

const { values: args } = parseArgs({
  options: {
    partitions: { type: 'string', default: '1000' },
    rows: { type: 'string', default: '1000' },
    world: { type: 'string', default: '4' },
    batch: { type: 'string', default: '500' },
    mode: { type: 'string', default: 'buffer' },
    buffer: { type: 'string', default: '4' },
    epochs: { type: 'string', default: '3' },
    'partition-mib': { type: 'string', default: '64' },
  },
});

const PARTITIONS = Number(args.partitions);
const ROWS = Number(args.rows);
const WORLD = Number(args.world);
const BATCH = Number(args.batch);
const MODE = args.mode as ShuffleMode;
const BUFFER = Number(args.buffer);
const EPOCHS = Number(args.epochs);
const PARTITION_BYTES = Number(args['partition-mib']) * 2 ** 20;
const RATIOS = [0.25, 0.5, 0.75];
const JOB_SEEDS = [1, 2];

interface Access {
  item: number;
  epoch: number;
  job: number;
}

/**
 * One job's reads over all epochs: each rank reads a partition when it first needs
 * it (and holds it until its last use, so never twice per epoch). Ranks advance in
 * lockstep, one batch at a time, as synchronous data-parallel training does.
 */
function jobTrace(seed: number, epoch: number): number[][] {
  const partitionRows = Array.from({ length: PARTITIONS }, () => ROWS);
  const plans = Array.from({ length: WORLD }, (_, rank) =>
    planEpoch({ partitionRows, seed, epoch, rank, worldSize: WORLD, batchSize: BATCH, mode: MODE, bufferPartitions: BUFFER, dropLast: false }),
  );
  const steps: number[][] = Array.from({ length: plans[0]?.numBatches ?? 0 }, () => []);
  for (const plan of plans) for (const p of plan.partitionOrder) steps[plan.firstUse(p)]!.push(p);
  return steps;
}

function buildTrace(jobs: number): Access[] {
  const trace: Access[] = [];
  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    const perJob = JOB_SEEDS.slice(0, jobs).map((seed) => jobTrace(seed, epoch));
    const steps = Math.max(...perJob.map((s) => s.length));
    for (let b = 0; b < steps; b++)
      perJob.forEach((s, job) => {
        for (const item of s[b] ?? []) trace.push({ item, epoch, job });
      });
  }
  return trace;
}

/** A cache of equal-size items (partitions) holding at most `capacity` of them. */
interface Policy {
  readonly name: string;
  /** Returns whether `item` was cached; `t` is the index in the trace. */
  access(item: number, t: number): boolean;
}

class Lru implements Policy {
  readonly name = 'LRU';
  readonly #items = new Set<number>();
  constructor(readonly capacity: number) {}
  access(item: number): boolean {
    if (this.#items.delete(item)) {
      this.#items.add(item);
      return true;
    }
    this.#items.add(item);
    if (this.#items.size > this.capacity) {
      const oldest = this.#items.values().next().value;
      if (oldest !== undefined) this.#items.delete(oldest);
    }
    return false;
  }
}

/**
 * S3-FIFO (Yang et al., SOSP 2023): a small probationary FIFO (10%), a main FIFO
 * with second chances, and a ghost FIFO of recently evicted keys. Scan-resistant:
 * items read once pass through the small queue without touching the main one.
 */
class S3Fifo implements Policy {
  readonly name = 'S3-FIFO';
  readonly #small: number[] = [];
  readonly #main: number[] = [];
  readonly #ghost: number[] = [];
  readonly #ghostSet = new Set<number>();
  readonly #where = new Map<number, 'small' | 'main'>();
  readonly #freq = new Map<number, number>();
  readonly #smallCap: number;
  readonly #mainCap: number;
  constructor(readonly capacity: number) {
    this.#smallCap = Math.max(1, Math.round(capacity * 0.1));
    this.#mainCap = Math.max(1, capacity - this.#smallCap);
  }
  access(item: number): boolean {
    if (this.#where.has(item)) {
      this.#freq.set(item, Math.min(3, (this.#freq.get(item) ?? 0) + 1));
      return true;
    }
    if (this.#ghostSet.has(item)) {
      this.#ghostSet.delete(item);
      this.#insertMain(item);
    } else {
      while (this.#small.length >= this.#smallCap) this.#evictSmall();
      this.#small.push(item);
      this.#where.set(item, 'small');
      this.#freq.set(item, 0);
    }
    return false;
  }
  #insertMain(item: number): void {
    while (this.#main.length >= this.#mainCap) this.#evictMain();
    this.#main.push(item);
    this.#where.set(item, 'main');
    this.#freq.set(item, 0);
  }
  #evictSmall(): void {
    const item = this.#small.shift();
    if (item === undefined) return;
    this.#where.delete(item);
    if ((this.#freq.get(item) ?? 0) > 0) this.#insertMain(item);
    else {
      this.#freq.delete(item);
      this.#ghost.push(item);
      this.#ghostSet.add(item);
      while (this.#ghost.length > this.#mainCap) {
        const g = this.#ghost.shift();
        if (g !== undefined) this.#ghostSet.delete(g);
      }
    }
  }
  #evictMain(): void {
    for (;;) {
      const item = this.#main.shift();
      if (item === undefined) return;
      const f = this.#freq.get(item) ?? 0;
      if (f > 0) {
        this.#freq.set(item, f - 1);
        this.#main.push(item);
      } else {
        this.#where.delete(item);
        this.#freq.delete(item);
        return;
      }
    }
  }
}

/** A binary max-heap of [key, item]. */
class MaxHeap {
  readonly #keys: number[] = [];
  readonly #items: number[] = [];
  get size(): number {
    return this.#keys.length;
  }
  push(key: number, item: number): void {
    const k = this.#keys;
    const v = this.#items;
    let i = k.length;
    k.push(key);
    v.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (k[parent]! >= key) break;
      k[i] = k[parent]!;
      v[i] = v[parent]!;
      i = parent;
    }
    k[i] = key;
    v[i] = item;
  }
  peek(): [number, number] | undefined {
    return this.#keys.length === 0 ? undefined : [this.#keys[0]!, this.#items[0]!];
  }
  pop(): void {
    const k = this.#keys;
    const v = this.#items;
    const lastK = k.pop()!;
    const lastV = v.pop()!;
    const n = k.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && k[r]! > k[l]! ? r : l;
      if (k[c]! <= lastK) break;
      k[i] = k[c]!;
      v[i] = v[c]!;
      i = c;
    }
    k[i] = lastK;
    v[i] = lastV;
  }
}

/**
 * Belady's MIN with hints: evicts the cached item whose next use, by any job, is
 * furthest away, and does not admit an item used later than everything cached.
 * The future is known because every job's order is a pure function of its plan.
 * With equal-size items this is the optimal policy.
 */
class Belady implements Policy {
  readonly name = 'Belady (hints)';
  readonly #next = new Map<number, number>();
  readonly #heap = new MaxHeap();
  constructor(
    readonly capacity: number,
    readonly nextUse: Float64Array,
  ) {}
  access(item: number, t: number): boolean {
    const next = this.nextUse[t]!;
    if (this.#next.has(item)) {
      this.#next.set(item, next);
      this.#heap.push(next, item);
      return true;
    }
    if (this.#next.size >= this.capacity) {
      const victim = this.#furthest();
      if (victim === undefined || victim[0] <= next) return false; // bypass
      this.#next.delete(victim[1]);
      this.#heap.pop();
    }
    this.#next.set(item, next);
    this.#heap.push(next, item);
    return false;
  }
  /** The live heap top (stale entries are dropped lazily). */
  #furthest(): [number, number] | undefined {
    for (;;) {
      const top = this.#heap.peek();
      if (top === undefined) return undefined;
      if (this.#next.get(top[1]) === top[0]) return top;
      this.#heap.pop();
    }
  }
}

/** CoorDL's MinIO: cache items until full, then never evict (a fixed subset stays pinned). */
class Pin implements Policy {
  readonly name = 'Pin subset (MinIO)';
  readonly #items = new Set<number>();
  constructor(readonly capacity: number) {}
  access(item: number): boolean {
    if (this.#items.has(item)) return true;
    if (this.#items.size < this.capacity) this.#items.add(item);
    return false;
  }
}

function nextUses(trace: Access[]): Float64Array {
  const next = new Float64Array(trace.length);
  const seen = new Map<number, number>();
  for (let t = trace.length - 1; t >= 0; t--) {
    const item = trace[t]!.item;
    next[t] = seen.get(item) ?? Number.POSITIVE_INFINITY;
    seen.set(item, t);
  }
  return next;
}

interface Row {
  policy: string;
  jobs: number;
  cacheRatio: number;
  /** Hit ratio (by bytes) in each epoch, over all jobs' reads. */
  hitRatioByEpoch: number[];
  /** Store bytes in each epoch, as a multiple of the dataset size. */
  storeByEpoch: number[];
  /** Mean store bytes per epoch after the first, over the optimum (1 - cache/dataset) x dataset. */
  storeVsOptimum: number;
}

function simulate(trace: Access[], policy: Policy, jobs: number, cacheRatio: number): Row {
  const reads = new Array<number>(EPOCHS).fill(0);
  const misses = new Array<number>(EPOCHS).fill(0);
  trace.forEach((a, t) => {
    reads[a.epoch]!++;
    if (!policy.access(a.item, t)) misses[a.epoch]!++;
  });
  const storeByEpoch = misses.map((m) => m / PARTITIONS);
  const later = storeByEpoch.slice(1);
  const meanLater = later.reduce((s, x) => s + x, 0) / Math.max(1, later.length);
  return {
    policy: policy.name,
    jobs,
    cacheRatio,
    hitRatioByEpoch: reads.map((r, e) => (r === 0 ? 0 : 1 - misses[e]! / r)),
    storeByEpoch,
    storeVsOptimum: meanLater / (1 - cacheRatio),
  };
}

const started = performance.now();
const rows: Row[] = [];
for (const jobs of [1, 2]) {
  const trace = buildTrace(jobs);
  const next = nextUses(trace);
  for (const ratio of RATIOS) {
    const capacity = Math.round(PARTITIONS * ratio);
    const policies: Policy[] = [new Lru(capacity), new S3Fifo(capacity), new Belady(capacity, next), new Pin(capacity)];
    for (const policy of policies) rows.push(simulate(trace, policy, jobs, ratio));
  }
}
const simMs = performance.now() - started;

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const fix = (x: number): string => x.toFixed(2);
const datasetGiB = (PARTITIONS * PARTITION_BYTES) / 2 ** 30;

const lines: string[] = [];
lines.push(
  `Workload: ${PARTITIONS} partitions x ${ROWS} rows (${Number(args['partition-mib'])} MiB each, ${datasetGiB.toFixed(1)} GiB), ` +
    `mode '${MODE}'${MODE === 'buffer' ? ` (bufferPartitions ${BUFFER})` : ''}, ${WORLD} ranks per job, batch ${BATCH}, ${EPOCHS} epochs; ` +
    `job seeds ${JOB_SEEDS.join(', ')}; cache unit = one partition.`,
);
lines.push('');
lines.push('| policy | jobs | cache/dataset | hit ratio, epochs 2+ | store bytes/epoch after the first (x dataset) | vs optimum (1 − c/d) | epoch 1 store bytes, all jobs (x dataset) |');
lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  const laterHits = r.hitRatioByEpoch.slice(1);
  const laterStore = r.storeByEpoch.slice(1);
  const hit = laterHits.reduce((s, x) => s + x, 0) / Math.max(1, laterHits.length);
  const store = laterStore.reduce((s, x) => s + x, 0) / Math.max(1, laterStore.length);
  lines.push(
    `| ${r.policy} | ${r.jobs} | ${pct(r.cacheRatio)} | ${pct(hit)} | ${fix(store)} | ${fix(r.storeVsOptimum)}x | ${fix(r.storeByEpoch[0] ?? 0)} |`,
  );
}

const qualityRows: { mode: string; k?: number; q: ReturnType<typeof shuffleQuality> }[] = [];
const qualityShape = Array.from({ length: Math.min(PARTITIONS, 400) }, () => Math.min(ROWS, 500));
for (const [mode, k] of [['none', undefined], ['buffer', 1], ['buffer', 4], ['buffer', 16], ['global', undefined]] as const) {
  qualityRows.push({ mode, ...(k === undefined ? {} : { k }), q: shuffleQuality({ partitionRows: qualityShape, seed: 1, epoch: 0, mode, bufferPartitions: k, epochs: 3 }) });
}
lines.push('');
lines.push(`Shuffle quality (${qualityShape.length} partitions x ${qualityShape[0] ?? 0} rows, seed 1, epochs 0-2; uniform reference in the last row):`);
lines.push('');
lines.push('| mode | mean displacement / rows | correlation, consecutive epochs | adjacent rows from one partition |');
lines.push('| --- | ---: | ---: | ---: |');
for (const { mode, k, q } of qualityRows) {
  const name = k === undefined ? mode : `${mode}, bufferPartitions ${k}`;
  lines.push(`| ${name} | ${q.meanDisplacement.toFixed(3)} | ${q.epochCorrelation.toFixed(3)} | ${q.samePartitionAdjacent.toFixed(4)} |`);
}
const uniform = qualityRows[0]?.q.uniformSamePartition ?? 0;
lines.push(`| (uniform permutation) | 0.333 | 0.000 | ${uniform.toFixed(4)} |`);

const output = lines.join('\n');
console.log(output);
console.log(`\nsimulated in ${(simMs / 1000).toFixed(1)} s`);

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, 'results');
mkdirSync(outDir, { recursive: true });
const file = join(outDir, 'cache-sim.json');
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cache-sim',
      date: new Date().toISOString(),
      workload: { partitions: PARTITIONS, rows: ROWS, partitionBytes: PARTITION_BYTES, world: WORLD, batch: BATCH, mode: MODE, bufferPartitions: BUFFER, epochs: EPOCHS, jobSeeds: JOB_SEEDS },
      rows,
      quality: qualityRows,
    },
    null,
    2,
  ),
);
console.log(`wrote ${file}`);

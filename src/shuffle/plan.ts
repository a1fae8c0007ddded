import { InvalidArgumentError } from '../errors.js';
import { checkInt } from '../util/validate.js';
import { floorIndex, globalOrder, type GlobalOrder } from './order.js';
import type { BatchRows, EpochPlanInput, RankPlan, ResumePoint } from './types.js';

/** How a sequence of `length` rows is cut into contiguous per-rank spans. */
export interface RankSplit {
  /** Batches every rank yields. */
  numBatches: number;
  /** Rows each rank yields (the last batch of a rank holds the remainder). */
  rowsPerRank: number[];
  /** Where each rank's span starts in the sequence. */
  starts: number[];
}

/**
 * Cuts `length` rows into `worldSize` contiguous spans, rank 0 first.
 * - Without `dropLast`: spans differ by at most one row (the first `length % worldSize`
 *   ranks get one more), and every rank yields ceil(ceil(length / worldSize) / batchSize)
 *   batches; a rank with one row fewer has a last batch one row shorter, which is
 *   empty when its span is exactly (numBatches - 1) * batchSize rows.
 * - With `dropLast`: every rank gets floor(length / (worldSize * batchSize)) full
 *   batches; the rows after the last rank's span are not yielded.
 */
export function splitRows(length: number, worldSize: number, batchSize: number, dropLast: boolean): RankSplit {
  checkInt('length', length, 0);
  checkInt('worldSize', worldSize, 1);
  checkInt('batchSize', batchSize, 1);
  const rowsPerRank: number[] = [];
  const starts: number[] = [];
  if (dropLast) {
    const numBatches = Math.floor(length / (worldSize * batchSize));
    const span = numBatches * batchSize;
    for (let r = 0; r < worldSize; r++) {
      starts.push(r * span);
      rowsPerRank.push(span);
    }
    return { numBatches, rowsPerRank, starts };
  }
  const base = Math.floor(length / worldSize);
  const extra = length % worldSize;
  for (let r = 0; r < worldSize; r++) {
    starts.push(r * base + Math.min(r, extra));
    rowsPerRank.push(base + (r < extra ? 1 : 0));
  }
  const numBatches = Math.ceil(Math.ceil(length / worldSize) / batchSize);
  return { numBatches, rowsPerRank, starts };
}

/** A sequence of rows given as runs of global-order positions, in order. */
class RunList {
  constructor(
    readonly starts: number[],
    readonly lengths: number[],
  ) {}

  get length(): number {
    let n = 0;
    for (const l of this.lengths) n += l;
    return n;
  }

  /** The runs covering sequence positions [from, to). */
  slice(from: number, to: number): RunList {
    const starts: number[] = [];
    const lengths: number[] = [];
    let offset = 0;
    for (let i = 0; i < this.starts.length && offset < to; i++) {
      const len = this.lengths[i]!;
      const lo = Math.max(from, offset);
      const hi = Math.min(to, offset + len);
      if (hi > lo) {
        starts.push(this.starts[i]! + (lo - offset));
        lengths.push(hi - lo);
      }
      offset += len;
    }
    return new RunList(starts, lengths);
  }

  static concat(lists: RunList[]): RunList {
    const starts: number[] = [];
    const lengths: number[] = [];
    for (const l of lists) {
      for (let i = 0; i < l.starts.length; i++) {
        const s = l.starts[i]!;
        const n = l.lengths[i]!;
        const last = starts.length - 1;
        // Merge adjacent runs so long resume chains stay short.
        if (last >= 0 && starts[last]! + lengths[last]! === s) lengths[last]! += n;
        else {
          starts.push(s);
          lengths.push(n);
        }
      }
    }
    return new RunList(starts, lengths);
  }
}

function resumePoints(resume: EpochPlanInput['resume']): readonly ResumePoint[] {
  if (resume === undefined) return [];
  if (Array.isArray(resume)) return resume as readonly ResumePoint[];
  return [resume as ResumePoint];
}

/**
 * The rows of the epoch an interrupted chain of runs has not consumed, as runs of
 * global-order positions in global order. Each interrupted run consumed the first
 * `batchesDone` batches of every one of its ranks' spans.
 */
function remainingRuns(numRows: number, input: EpochPlanInput): RunList {
  let seq = new RunList(numRows > 0 ? [0] : [], numRows > 0 ? [numRows] : []);
  const points = resumePoints(input.resume);
  points.forEach((point, j) => {
    if (typeof point !== 'object' || point === null) {
      throw new InvalidArgumentError(`shuffle: \`resume[${j}]\` must be an object, got ${String(point)}`);
    }
    checkInt(`resume[${j}].worldSize`, point.worldSize, 1);
    checkInt(`resume[${j}].batchesDone`, point.batchesDone, 0);
    const batchSize = point.batchSize ?? input.batchSize;
    const dropLast = point.dropLast ?? input.dropLast;
    checkInt(`resume[${j}].batchSize`, batchSize, 1);
    if (typeof dropLast !== 'boolean') {
      throw new InvalidArgumentError(`shuffle: \`resume[${j}].dropLast\` must be a boolean, got ${String(dropLast)}`);
    }
    const length = seq.length;
    const split = splitRows(length, point.worldSize, batchSize, dropLast);
    if (point.batchesDone > split.numBatches) {
      throw new InvalidArgumentError(
        `shuffle: \`resume[${j}].batchesDone\` is ${point.batchesDone}, but epoch ${input.epoch} had only ` +
          `${split.numBatches} batches per rank for ${length} rows, worldSize ${point.worldSize}, batchSize ${batchSize}`,
      );
    }
    const tails: RunList[] = [];
    for (let r = 0; r < point.worldSize; r++) {
      const start = split.starts[r]!;
      const rows = split.rowsPerRank[r]!;
      const consumed = Math.min(rows, point.batchesDone * batchSize);
      tails.push(seq.slice(start + consumed, start + rows));
    }
    seq = RunList.concat(tails);
  });
  return seq;
}

/**
 * One rank's plan for one epoch. Implements the loader contract (`RankPlan`) and
 * exposes what the plan was built from.
 */
export class EpochPlan implements RankPlan {
  readonly numBatches: number;
  readonly numRows: number;
  readonly partitionOrder: readonly number[];
  readonly rank: number;
  readonly worldSize: number;
  readonly batchSize: number;
  /** Rows left in the epoch across all ranks when this plan starts (the whole dataset unless resumed). */
  readonly remainingRows: number;
  readonly #order: GlobalOrder;
  /**
   * The rank's rows as runs of global-order positions: run k holds positions
   * [runStarts[k], runStarts[k] + (runOffsets[k+1] - runOffsets[k])), which are the
   * plan's rows [runOffsets[k], runOffsets[k+1]).
   */
  readonly #runStarts: Float64Array;
  readonly #runOffsets: Float64Array;
  /**
   * The rows, one entry each, for orders that mix rows ('buffer', 'global'); undefined
   * for dataset order, where batches are read from the runs (no O(rows) arrays, which
   * for a large dataset cost milliseconds per epoch on every thread that plans it).
   */
  readonly #rowsOf: BatchRows | undefined;
  readonly #firstUse: Int32Array;
  readonly #lastUse: Int32Array;

  constructor(input: EpochPlanInput) {
    const { order, remaining, split } = rankSplit(input);
    this.remainingRows = remaining.length;
    const start = split.starts[input.rank]!;
    const numRows = split.rowsPerRank[input.rank]!;
    const mine = remaining.slice(start, start + numRows);

    this.rank = input.rank;
    this.worldSize = input.worldSize;
    this.batchSize = input.batchSize;
    this.numBatches = split.numBatches;
    this.numRows = numRows;
    this.#order = order;
    this.#runStarts = Float64Array.from(mine.starts);
    this.#runOffsets = new Float64Array(mine.lengths.length + 1);
    mine.lengths.forEach((n, k) => (this.#runOffsets[k + 1] = this.#runOffsets[k]! + n));
    this.#rowsOf = order.runAt ? undefined : this.#fill(0, numRows);

    const numPartitions = input.partitionRows.length;
    this.#firstUse = new Int32Array(numPartitions).fill(-1);
    this.#lastUse = new Int32Array(numPartitions).fill(-1);
    const partitionOrder: number[] = [];
    const use = (p: number, j: number, n: number): void => {
      if (this.#firstUse[p] === -1) {
        this.#firstUse[p] = Math.floor(j / input.batchSize);
        partitionOrder.push(p);
      }
      this.#lastUse[p] = Math.floor((j + n - 1) / input.batchSize);
    };
    if (this.#rowsOf) {
      const parts = this.#rowsOf.partitions;
      for (let j = 0; j < numRows; j++) use(parts[j]!, j, 1);
    } else {
      this.#eachRun(0, numRows, (run, j) => use(run.partition, j, run.count));
    }
    this.partitionOrder = partitionOrder;
  }

  /**
   * Calls `f` for each stretch of the plan's rows [from, to) that is one run of the
   * order: global-order positions [pos, pos + n), starting at plan row `j`.
   */
  #eachSpan(from: number, to: number, f: (pos: number, n: number, j: number) => void): void {
    const offsets = this.#runOffsets;
    let j = from;
    let k = j < to ? floorIndex(offsets, j) : 0;
    while (j < to) {
      while (offsets[k + 1]! <= j) k++;
      const n = Math.min(to, offsets[k + 1]!) - j;
      f(this.#runStarts[k]! + (j - offsets[k]!), n, j);
      j += n;
    }
  }

  /** Rows [from, to) of the plan, one entry each. */
  #fill(from: number, to: number): BatchRows {
    const parts = new Int32Array(to - from);
    const rows = new Int32Array(to - from);
    this.#eachSpan(from, to, (pos, n, j) => this.#order.fill(pos, pos + n, parts, rows, j - from));
    return { partitions: parts, rows };
  }

  /**
   * Dataset order only: calls `f` for each run of consecutive rows of one partition in
   * the plan's rows [from, to), in order, with the plan row `j` it starts at.
   */
  #eachRun(from: number, to: number, f: (run: { partition: number; row: number; count: number }, j: number) => void): void {
    const order = this.#order as Required<GlobalOrder>;
    this.#eachSpan(from, to, (pos, n, j) => {
      for (let done = 0; done < n; ) {
        const run = order.runAt(pos + done);
        run.count = Math.min(run.count, n - done);
        f(run, j + done);
        done += run.count;
      }
    });
  }

  firstUse(partition: number): number {
    return this.#firstUse[partition] ?? -1;
  }

  lastUse(partition: number): number {
    return this.#lastUse[partition] ?? -1;
  }

  batch(i: number): BatchRows {
    if (!Number.isInteger(i) || i < 0 || i >= this.numBatches) {
      throw new InvalidArgumentError(
        `shuffle: batch index must be an integer in [0, ${this.numBatches}) for rank ${this.rank}, got ${String(i)}`,
      );
    }
    const from = Math.min(i * this.batchSize, this.numRows);
    const to = Math.min(from + this.batchSize, this.numRows);
    if (!this.#rowsOf) return this.#fill(from, to);
    return { partitions: this.#rowsOf.partitions.slice(from, to), rows: this.#rowsOf.rows.slice(from, to) };
  }

  run(i: number): { partition: number; row: number; count: number } | undefined {
    const from = Math.min(i * this.batchSize, this.numRows);
    const to = Math.min(from + this.batchSize, this.numRows);
    if (to <= from) return undefined;
    if (!this.#rowsOf) {
      let first: { partition: number; row: number; count: number } | undefined;
      let contiguous = true;
      this.#eachRun(from, to, (run) => {
        if (first === undefined) first = run;
        else if (run.partition !== first.partition || run.row !== first.row + first.count) contiguous = false;
        else first.count += run.count;
      });
      return contiguous ? first : undefined;
    }
    const parts = this.#rowsOf.partitions;
    const rows = this.#rowsOf.rows;
    const p = parts[from]!;
    const r = rows[from]!;
    for (let j = from + 1; j < to; j++) if (parts[j] !== p || rows[j] !== r + (j - from)) return undefined;
    return { partition: p, row: r, count: to - from };
  }

  /** All rows of this rank's plan in order (copies). */
  allRows(): BatchRows {
    if (!this.#rowsOf) return this.#fill(0, this.numRows);
    return { partitions: this.#rowsOf.partitions.slice(), rows: this.#rowsOf.rows.slice() };
  }

  /**
   * The largest number of partitions the rank must hold at once if it loads each
   * partition for its first use and frees it after its last: max over batches b of
   * |{p : firstUse(p) <= b <= lastUse(p)}|.
   */
  peakResidentPartitions(): number {
    if (this.numBatches === 0) return 0;
    const delta = new Int32Array(this.numBatches + 1);
    for (const p of this.partitionOrder) {
      delta[this.#firstUse[p]!]!++;
      delta[this.#lastUse[p]! + 1]!--;
    }
    let live = 0;
    let peak = 0;
    for (let b = 0; b < this.numBatches; b++) {
      live += delta[b]!;
      peak = Math.max(peak, live);
    }
    return peak;
  }
}

/**
 * Plans one rank's epoch: which rows, in which order, in which batches. A pure
 * function of its input; see docs/shuffle.md for the guarantees.
 *
 * @example
 * const plan = planEpoch({ partitionRows: [1000, 1000, 800], seed: 42, epoch: 0, rank: 0,
 *   worldSize: 2, batchSize: 256, mode: 'buffer', bufferPartitions: 2, dropLast: false });
 * for (let i = 0; i < plan.numBatches; i++) gather(plan.batch(i));
 */
export function planEpoch(input: EpochPlanInput): EpochPlan {
  return new EpochPlan(input);
}

/**
 * `planEpoch(input).numBatches`, with the same checks, without building the plan (which
 * is linear in the rank's rows).
 */
export function planBatchCount(input: EpochPlanInput): number {
  return rankSplit(input).split.numBatches;
}

/** Checks `input`; the epoch's order, the rows it has left (after any resume points) and their split across ranks. */
function rankSplit(input: EpochPlanInput): { order: GlobalOrder; remaining: ReturnType<typeof remainingRuns>; split: RankSplit } {
  checkInt('worldSize', input.worldSize, 1);
  checkInt('rank', input.rank, 0);
  if (input.rank >= input.worldSize) {
    throw new InvalidArgumentError(`shuffle: \`rank\` must be below worldSize ${input.worldSize}, got ${input.rank}`);
  }
  checkInt('batchSize', input.batchSize, 1);
  if (typeof input.dropLast !== 'boolean') {
    throw new InvalidArgumentError(`shuffle: \`dropLast\` must be a boolean, got ${String(input.dropLast)}`);
  }
  const order = globalOrder(input);
  const remaining = remainingRuns(order.numRows, input);
  return { order, remaining, split: splitRows(remaining.length, input.worldSize, input.batchSize, input.dropLast) };
}

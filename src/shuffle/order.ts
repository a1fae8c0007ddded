import { InvalidArgumentError } from '../errors.js';
import { checkInt } from '../util/validate.js';
import { permutation, Streams } from './permutation.js';
import type { ShuffleMode } from './types.js';

/** @default 4 */
export const DEFAULT_BUFFER_PARTITIONS = 4;

/** What an epoch's global row order depends on: nothing about ranks. */
export interface EpochOrderInput {
  /** Rows per partition, in dataset order. */
  partitionRows: readonly number[];
  seed: number;
  epoch: number;
  mode: ShuffleMode;
  /** Partitions mixed together in 'buffer' mode. @default 4 */
  bufferPartitions?: number | undefined;
}

/**
 * An epoch's global order: position `i` (0 <= i < numRows) holds one row of the
 * dataset, as (partition, row within partition). Rank plans are contiguous spans of it.
 */
export interface GlobalOrder {
  readonly numRows: number;
  /**
   * Writes the rows at positions [start, end) into `parts`/`rows` from index `at`.
   * Cheapest when successive calls move forward, which is how plans read it.
   */
  fill(start: number, end: number, parts: Int32Array, rows: Int32Array, at: number): void;
  /**
   * Only for orders that keep each partition's rows consecutive and in order (dataset
   * order): the row at position `pos` (0 <= pos < numRows) and how many positions from
   * there hold the following rows of the same partition. Plans over such an order keep
   * runs instead of one entry per row.
   */
  runAt?(pos: number): { partition: number; row: number; count: number };
}

const MAX_ROWS = 2 ** 32 - 1;
const MAX_PARTITION_ROWS = 2 ** 31 - 1;

export function validateOrderInput(input: EpochOrderInput): number {
  const { partitionRows, mode } = input;
  if (!Array.isArray(partitionRows)) {
    throw new InvalidArgumentError(`shuffle: \`partitionRows\` must be an array of row counts, got ${typeof partitionRows}`);
  }
  let total = 0;
  for (let p = 0; p < partitionRows.length; p++) {
    total += checkInt(`partitionRows[${p}]`, partitionRows[p], 0, MAX_PARTITION_ROWS);
  }
  if (total > MAX_ROWS) {
    throw new InvalidArgumentError(`shuffle: a dataset of ${total} rows exceeds the planner's limit of ${MAX_ROWS} rows per epoch`);
  }
  if (mode !== 'none' && mode !== 'buffer' && mode !== 'global') {
    throw new InvalidArgumentError(`shuffle: \`mode\` must be 'none', 'buffer' or 'global', got ${JSON.stringify(mode)}`);
  }
  checkInt('seed', input.seed, Number.MIN_SAFE_INTEGER);
  checkInt('epoch', input.epoch, 0);
  if (input.bufferPartitions !== undefined) checkInt('bufferPartitions', input.bufferPartitions, 1);
  return total;
}

/** Prefix sums: offsets[p] is the global id of partition p's first row; offsets[P] = total rows. */
function rowOffsets(partitionRows: readonly number[]): Float64Array {
  const offsets = new Float64Array(partitionRows.length + 1);
  for (let p = 0; p < partitionRows.length; p++) offsets[p + 1] = offsets[p]! + partitionRows[p]!;
  return offsets;
}

/** The largest i with sorted[i] <= x (sorted ascending, sorted[0] <= x). */
export function floorIndex(sorted: Float64Array, x: number, hi = sorted.length - 1): number {
  let lo = 0;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (sorted[mid]! <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function checkRange(order: GlobalOrder, start: number, end: number, out: Int32Array, at: number): void {
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start <= end && end <= order.numRows)) {
    throw new InvalidArgumentError(`shuffle: order range [${start}, ${end}) is outside [0, ${order.numRows})`);
  }
  if (at < 0 || at + (end - start) > out.length) {
    throw new InvalidArgumentError(`shuffle: ${end - start} rows do not fit in an output of ${out.length} at ${at}`);
  }
}

/** 'none': dataset order. */
class SequentialOrder implements GlobalOrder {
  readonly numRows: number;
  readonly #offsets: Float64Array;

  constructor(partitionRows: readonly number[]) {
    this.#offsets = rowOffsets(partitionRows);
    this.numRows = this.#offsets[partitionRows.length]!;
  }

  fill(start: number, end: number, parts: Int32Array, rows: Int32Array, at: number): void {
    checkRange(this, start, end, parts, at);
    if (start === end) return;
    const offsets = this.#offsets;
    let p = floorIndex(offsets, start, offsets.length - 2);
    for (let pos = start; pos < end; pos++) {
      while (offsets[p + 1]! <= pos) p++;
      parts[at] = p;
      rows[at] = pos - offsets[p]!;
      at++;
    }
  }

  runAt(pos: number): { partition: number; row: number; count: number } {
    if (!(Number.isInteger(pos) && pos >= 0 && pos < this.numRows)) {
      throw new InvalidArgumentError(`shuffle: order position ${pos} is outside [0, ${this.numRows})`);
    }
    const offsets = this.#offsets;
    let p = floorIndex(offsets, pos, offsets.length - 2);
    // Zero-row partitions share an offset with the next one: step past them.
    while (offsets[p + 1]! <= pos) p++;
    return { partition: p, row: pos - offsets[p]!, count: offsets[p + 1]! - pos };
  }
}

/** 'global': one uniformly random permutation of all rows. */
class GlobalRowOrder implements GlobalOrder {
  readonly numRows: number;
  readonly #offsets: Float64Array;
  readonly #perm: Uint32Array;

  constructor(partitionRows: readonly number[], seed: number, epoch: number) {
    this.#offsets = rowOffsets(partitionRows);
    this.numRows = this.#offsets[partitionRows.length]!;
    this.#perm = permutation(seed, epoch, this.numRows, Streams.GLOBAL_ROWS);
  }

  fill(start: number, end: number, parts: Int32Array, rows: Int32Array, at: number): void {
    checkRange(this, start, end, parts, at);
    const offsets = this.#offsets;
    const last = offsets.length - 2;
    for (let pos = start; pos < end; pos++) {
      const id = this.#perm[pos]!;
      const p = floorIndex(offsets, id, last);
      // Zero-row partitions share an offset with the next one: step past them.
      let q = p;
      while (offsets[q + 1]! <= id) q++;
      parts[at] = q;
      rows[at] = id - offsets[q]!;
      at++;
    }
  }
}

/**
 * 'buffer': a sliding-window shuffle. The non-empty partitions are put in a seeded
 * order o[0..Q-1]; each partition's rows are shuffled and cut into K equal slices;
 * window g (g = K-1 .. Q-1) mixes slice g-i of partition o[i] for the K partitions
 * i = g-K+1 .. g (the first window also takes the lower slices of o[0..K-1], the last
 * window the upper slices of o[Q-K..Q-1]), and its rows are shuffled together.
 *
 * A partition's rows are spread over K consecutive windows, and reading windows in
 * order needs exactly K partitions at any point: o[g-K+1..g] while inside window g,
 * one more when a batch straddles two windows. Windows hold about one partition's
 * worth of rows (one K-th of K partitions).
 */
class WindowOrder implements GlobalOrder {
  readonly numRows: number;
  readonly numWindows: number;
  readonly #partitionRows: readonly number[];
  readonly #seed: number;
  readonly #epoch: number;
  readonly #k: number;
  /** Partition at each order position (non-empty partitions only). */
  readonly #order: Int32Array;
  readonly #windowOffsets: Float64Array;
  #cachedWindow = -1;
  #windowParts = new Int32Array(0);
  #windowRows = new Int32Array(0);
  readonly #rowPerms = new Map<number, Uint32Array>();

  constructor(partitionRows: readonly number[], seed: number, epoch: number, bufferPartitions: number) {
    this.#partitionRows = partitionRows;
    this.#seed = seed;
    this.#epoch = epoch;
    const nonEmpty: number[] = [];
    for (let p = 0; p < partitionRows.length; p++) if (partitionRows[p]! > 0) nonEmpty.push(p);
    const q = nonEmpty.length;
    const perm = permutation(seed, epoch, q, Streams.PARTITION_ORDER);
    this.#order = new Int32Array(q);
    for (let i = 0; i < q; i++) this.#order[i] = nonEmpty[perm[i]!]!;
    this.#k = Math.min(bufferPartitions, Math.max(q, 1));
    this.numWindows = q === 0 ? 0 : q <= this.#k ? 1 : q - this.#k + 1;
    this.#windowOffsets = new Float64Array(this.numWindows + 1);
    for (let w = 0; w < this.numWindows; w++) {
      let size = 0;
      for (const c of this.#contributions(w)) size += c.end - c.start;
      this.#windowOffsets[w + 1] = this.#windowOffsets[w]! + size;
    }
    this.numRows = this.#windowOffsets[this.numWindows]!;
  }

  /** The partitions in their seeded order (non-empty ones only). */
  partitionOrder(): Int32Array {
    return this.#order.slice();
  }

  /** The row ranges (into each partition's shuffled rows) that window w mixes. */
  #contributions(w: number): { pos: number; start: number; end: number }[] {
    const k = this.#k;
    const q = this.#order.length;
    const out: { pos: number; start: number; end: number }[] = [];
    const slice = (pos: number, sLo: number, sHi: number): void => {
      const r = this.#partitionRows[this.#order[pos]!]!;
      const start = Math.floor((sLo * r) / k);
      const end = Math.floor(((sHi + 1) * r) / k);
      if (end > start) out.push({ pos, start, end });
    };
    if (this.numWindows === 1) {
      for (let pos = 0; pos < q; pos++) slice(pos, 0, k - 1);
      return out;
    }
    const g = w + k - 1;
    for (let pos = Math.max(0, g - k + 1); pos <= Math.min(g, q - 1); pos++) {
      const sLo = g === k - 1 ? 0 : g - pos;
      const sHi = g === q - 1 ? k - 1 : g - pos;
      slice(pos, sLo, sHi);
    }
    return out;
  }

  /** The last window that takes rows of the partition at order position `pos`. */
  #lastWindow(pos: number): number {
    if (this.numWindows <= 1) return 0;
    const k = this.#k;
    const g = Math.min(Math.max(pos + k - 1, k - 1), this.#order.length - 1);
    return g - (k - 1);
  }

  #rowPerm(pos: number): Uint32Array {
    let perm = this.#rowPerms.get(pos);
    if (perm === undefined) {
      const p = this.#order[pos]!;
      perm = permutation(this.#seed, this.#epoch, this.#partitionRows[p]!, Streams.PARTITION_ROWS + p);
      this.#rowPerms.set(pos, perm);
    }
    return perm;
  }

  #materialize(w: number): void {
    if (this.#cachedWindow === w) return;
    const size = this.#windowOffsets[w + 1]! - this.#windowOffsets[w]!;
    const parts = new Int32Array(size);
    const rows = new Int32Array(size);
    let n = 0;
    for (const c of this.#contributions(w)) {
      const p = this.#order[c.pos]!;
      const r = this.#partitionRows[p]!;
      // A whole partition needs no slicing; the window shuffle below mixes it anyway.
      const whole = c.start === 0 && c.end === r;
      const perm = whole ? undefined : this.#rowPerm(c.pos);
      for (let j = c.start; j < c.end; j++) {
        parts[n] = p;
        rows[n] = perm === undefined ? j : perm[j]!;
        n++;
      }
    }
    const mix = permutation(this.#seed, this.#epoch, size, Streams.WINDOW_ROWS + w);
    this.#windowParts = new Int32Array(size);
    this.#windowRows = new Int32Array(size);
    for (let j = 0; j < size; j++) {
      this.#windowParts[j] = parts[mix[j]!]!;
      this.#windowRows[j] = rows[mix[j]!]!;
    }
    this.#cachedWindow = w;
    // Row shuffles of partitions that no later window uses are dead weight.
    for (const pos of this.#rowPerms.keys()) if (this.#lastWindow(pos) <= w) this.#rowPerms.delete(pos);
  }

  fill(start: number, end: number, parts: Int32Array, rows: Int32Array, at: number): void {
    checkRange(this, start, end, parts, at);
    let pos = start;
    while (pos < end) {
      const w = floorIndex(this.#windowOffsets, pos, this.numWindows - 1);
      this.#materialize(w);
      const base = this.#windowOffsets[w]!;
      const stop = Math.min(end, this.#windowOffsets[w + 1]!);
      const from = pos - base;
      const count = stop - pos;
      parts.set(this.#windowParts.subarray(from, from + count), at);
      rows.set(this.#windowRows.subarray(from, from + count), at);
      at += count;
      pos = stop;
    }
  }
}

/** The global order of an epoch (validated). Building it costs O(partitions), plus O(rows) in 'global' mode. */
export function globalOrder(input: EpochOrderInput): GlobalOrder {
  validateOrderInput(input);
  switch (input.mode) {
    case 'none':
      return new SequentialOrder(input.partitionRows);
    case 'global':
      return new GlobalRowOrder(input.partitionRows, input.seed, input.epoch);
    case 'buffer':
      return new WindowOrder(
        input.partitionRows,
        input.seed,
        input.epoch,
        input.bufferPartitions ?? DEFAULT_BUFFER_PARTITIONS,
      );
  }
}

/**
 * The whole global order of an epoch, materialized: `partitions[i]`, `rows[i]` is the
 * row at position i. A pure function of (seed, epoch, partitionRows, mode,
 * bufferPartitions); it does not depend on ranks.
 */
export function epochOrder(input: EpochOrderInput): { partitions: Int32Array; rows: Int32Array } {
  const order = globalOrder(input);
  const partitions = new Int32Array(order.numRows);
  const rows = new Int32Array(order.numRows);
  order.fill(0, order.numRows, partitions, rows, 0);
  return { partitions, rows };
}

/**
 * The contract between the shuffle planner (src/shuffle) and the loader pipeline
 * (src/loader). An epoch's plan is a pure function of its input: the loader only
 * executes it (fetch partitions in `partitionOrder`, decode, gather rows per batch),
 * so the yielded order never depends on timing or cache state.
 */

export type ShuffleMode =
  /** Dataset order: partitions in order, rows in order. */
  | 'none'
  /** Partitions in a seeded order, rows mixed in a buffer spanning `bufferPartitions` partitions. */
  | 'buffer'
  /** A full permutation of all rows; the loader must hold every partition it touches. */
  | 'global';

export interface EpochPlanInput {
  /** Rows per partition, in dataset order. */
  partitionRows: readonly number[];
  seed: number;
  epoch: number;
  rank: number;
  worldSize: number;
  batchSize: number;
  mode: ShuffleMode;
  /** Partitions mixed together in 'buffer' mode. @default 4 */
  bufferPartitions?: number | undefined;
  /** Drop rows so that every rank yields only full batches (at most once per row). */
  dropLast: boolean;
  /**
   * Plan only the rows this epoch has not yet consumed. A run interrupted after every
   * rank of a `worldSize`-rank job finished `batchesDone` batches resumes with any
   * world size: the remaining rows, in the epoch's global order, are split again
   * across the new ranks (batch indices of the resumed plan start at 0). A list is a
   * chain of interruptions within the same epoch, oldest first. See docs/shuffle.md.
   * @default undefined (the whole epoch)
   */
  resume?: ResumePoint | readonly ResumePoint[] | undefined;
}

/** Where an interrupted run of an epoch stopped: all its ranks had finished `batchesDone` batches. */
export interface ResumePoint {
  /** World size of the interrupted run. */
  worldSize: number;
  /** Batches every rank of the interrupted run had finished. */
  batchesDone: number;
  /** Batch size of the interrupted run. @default the plan's `batchSize` */
  batchSize?: number | undefined;
  /** `dropLast` of the interrupted run. @default the plan's `dropLast` */
  dropLast?: boolean | undefined;
}

/** One batch: parallel arrays of (partition index, row index within partition). */
export interface BatchRows {
  partitions: Int32Array;
  rows: Int32Array;
}

export interface RankPlan {
  /** Batches this rank yields this epoch; the same on every rank. */
  readonly numBatches: number;
  /** Rows this rank yields this epoch. */
  readonly numRows: number;
  /** The partitions this rank reads, in the order it first needs them. */
  readonly partitionOrder: readonly number[];
  /** For partition p (dataset index), the last batch index that uses it; -1 when unused. Lets the loader free memory. */
  lastUse(partition: number): number;
  /** For partition p, the first batch index that uses it; -1 when unused. */
  firstUse(partition: number): number;
  /** Batch `i` (0-based). */
  batch(i: number): BatchRows;
  /**
   * When batch `i` is consecutive rows of one partition (`count` rows from `row`), that
   * run, without allocating; otherwise undefined. Lets a loader slice instead of gather.
   */
  run?(i: number): { partition: number; row: number; count: number } | undefined;
}

import { InvalidArgumentError } from '../errors.js';
import { checkInt } from '../util/validate.js';
import { DEFAULT_BUFFER_PARTITIONS } from './order.js';
import type { EpochPlanInput, ResumePoint, ShuffleMode } from './types.js';

/**
 * Where an epoch stopped, as small JSON. Saved by every rank after the same number
 * of batches (synchronous data parallelism), so one state describes the whole job.
 */
export interface ShuffleResumeState {
  /** Format version. */
  v: 1;
  seed: number;
  epoch: number;
  mode: ShuffleMode;
  bufferPartitions: number;
  /** Rows and partitions of the dataset, checked on resume: a changed dataset cannot resume. */
  numRows: number;
  numPartitions: number;
  /** Earlier interruptions of this epoch, oldest first (empty unless it was already resumed). */
  history: ResumePoint[];
  /** The run that saved this state. */
  worldSize: number;
  batchSize: number;
  dropLast: boolean;
  /** Batches every rank of that run had finished (in that run's own numbering). */
  batchesDone: number;
}

/** Options of the run that resumes: any world size, rank and batch size. */
export interface ResumeTarget {
  partitionRows: readonly number[];
  rank: number;
  worldSize: number;
  /** @default the saved run's batch size */
  batchSize?: number | undefined;
  /** @default the saved run's dropLast */
  dropLast?: boolean | undefined;
}

function sumRows(partitionRows: readonly number[]): number {
  let n = 0;
  for (const r of partitionRows) n += r;
  return n;
}

function points(resume: EpochPlanInput['resume']): ResumePoint[] {
  if (resume === undefined) return [];
  const list = Array.isArray(resume) ? (resume as readonly ResumePoint[]) : [resume as ResumePoint];
  return list.map((p) => ({
    worldSize: p.worldSize,
    batchesDone: p.batchesDone,
    ...(p.batchSize === undefined ? {} : { batchSize: p.batchSize }),
    ...(p.dropLast === undefined ? {} : { dropLast: p.dropLast }),
  }));
}

/**
 * The state to save after every rank of the run planned by `input` (same input on
 * every rank but `rank`) finished `batchesDone` batches of that plan.
 */
export function resumeState(input: EpochPlanInput, batchesDone: number): ShuffleResumeState {
  checkInt('batchesDone', batchesDone, 0);
  // Resolve defaults now: a later change of a default must not change what the state means.
  return {
    v: 1,
    seed: input.seed,
    epoch: input.epoch,
    mode: input.mode,
    bufferPartitions: input.bufferPartitions ?? DEFAULT_BUFFER_PARTITIONS,
    numRows: sumRows(input.partitionRows),
    numPartitions: input.partitionRows.length,
    history: points(input.resume).map((p) => ({
      worldSize: p.worldSize,
      batchesDone: p.batchesDone,
      batchSize: p.batchSize ?? input.batchSize,
      dropLast: p.dropLast ?? input.dropLast,
    })),
    worldSize: input.worldSize,
    batchSize: input.batchSize,
    dropLast: input.dropLast,
    batchesDone,
  };
}

function fail(field: string, value: unknown, want: string): never {
  throw new InvalidArgumentError(`shuffle: resume state field \`${field}\` must be ${want}, got ${JSON.stringify(value)}`);
}

/** An integer field of a resume state, named as the user passes it (`resume.history[0].worldSize`). */
function intField(obj: Record<string, unknown>, field: string, min: number, prefix = ''): number {
  return checkInt(`resume.${prefix}${field}`, obj[field], min);
}

function boolField(obj: Record<string, unknown>, field: string, prefix = ''): boolean {
  const v = obj[field];
  if (typeof v !== 'boolean') fail(prefix + field, v, 'a boolean');
  return v;
}

/** Checks untrusted JSON (a checkpoint file) and returns it typed; throws InvalidArgumentError naming the bad field. */
export function parseResumeState(json: unknown): ShuffleResumeState {
  if (typeof json !== 'object' || json === null) fail('(root)', json, 'an object');
  const o = json as Record<string, unknown>;
  if (o.v !== 1) fail('v', o.v, '1');
  const seed = checkInt('resume.seed', o.seed, Number.MIN_SAFE_INTEGER);
  const mode = o.mode;
  if (mode !== 'none' && mode !== 'buffer' && mode !== 'global') fail('mode', mode, "'none', 'buffer' or 'global'");
  if (!Array.isArray(o.history)) fail('history', o.history, 'an array');
  const history = (o.history as unknown[]).map((h, i): ResumePoint => {
    if (typeof h !== 'object' || h === null) fail(`history[${i}]`, h, 'an object');
    const r = h as Record<string, unknown>;
    const prefix = `history[${i}].`;
    return {
      worldSize: intField(r, 'worldSize', 1, prefix),
      batchesDone: intField(r, 'batchesDone', 0, prefix),
      batchSize: intField(r, 'batchSize', 1, prefix),
      dropLast: boolField(r, 'dropLast', prefix),
    };
  });
  return {
    v: 1,
    seed,
    epoch: intField(o, 'epoch', 0),
    mode,
    bufferPartitions: intField(o, 'bufferPartitions', 1),
    numRows: intField(o, 'numRows', 0),
    numPartitions: intField(o, 'numPartitions', 0),
    history,
    worldSize: intField(o, 'worldSize', 1),
    batchSize: intField(o, 'batchSize', 1),
    dropLast: boolField(o, 'dropLast'),
    batchesDone: intField(o, 'batchesDone', 0),
  };
}

/**
 * The plan input that continues a saved epoch on `target.rank` of `target.worldSize`
 * ranks. With the saved world size, batch size and dropLast, batch i of the resumed
 * plan is batch `batchesDone + i` of the interrupted one; with any other world size,
 * the rows not yet consumed are split again (see docs/shuffle.md). Throws when the
 * dataset no longer has the saved shape.
 */
export function resumeInput(state: ShuffleResumeState, target: ResumeTarget): EpochPlanInput {
  const s = parseResumeState(state);
  const numRows = sumRows(target.partitionRows);
  if (numRows !== s.numRows || target.partitionRows.length !== s.numPartitions) {
    throw new InvalidArgumentError(
      `shuffle: cannot resume epoch ${s.epoch}: it was saved for ${s.numRows} rows in ${s.numPartitions} partitions, ` +
        `but the dataset now has ${numRows} rows in ${target.partitionRows.length} partitions`,
    );
  }
  return {
    partitionRows: target.partitionRows,
    seed: s.seed,
    epoch: s.epoch,
    rank: target.rank,
    worldSize: target.worldSize,
    batchSize: target.batchSize ?? s.batchSize,
    mode: s.mode,
    bufferPartitions: s.bufferPartitions,
    dropLast: target.dropLast ?? s.dropLast,
    resume: [
      ...s.history,
      { worldSize: s.worldSize, batchesDone: s.batchesDone, batchSize: s.batchSize, dropLast: s.dropLast },
    ],
  };
}

/**
 * What an epoch under faults must end with: every row exactly once over all ranks,
 * every rank the same number of batches, and every value byte-identical to a direct read
 * of the store (or, for a file overwritten mid-epoch, to one version of it, the same for
 * all its rows).
 */
import type { RecordBatch } from 'apache-arrow';

/** Row digests by row id. */
export type Reference = Map<number, string>;

export interface RankResult {
  rank: number;
  batches: number;
  rows: number;
}

export interface EpochResult {
  ranks: RankResult[];
  /** Digest of every row yielded, by id. */
  byId: Map<number, string>;
  /** Ids yielded more than once. */
  duplicates: number[];
  /** The first error a rank's stream threw, if any. */
  error: unknown;
  /** Read stats of the ranks' clients (and their decode threads' copies), summed. */
  stats: { fallbacks: number; bytesFromCache: number; bytesFromUfs: number; hits: number; misses: number };
}

/** `CODE: message` of an error, for failure messages. */
export function describeError(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  return `${typeof e.code === 'string' ? `${e.code}: ` : ''}${typeof e.message === 'string' ? e.message : JSON.stringify(err)}`;
}

function hex(v: Uint8Array): string {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
}

/** One value as text that differs whenever its bytes do. */
function valueText(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'number') {
    const b = new DataView(new ArrayBuffer(8));
    b.setFloat64(0, v);
    return `f${b.getBigUint64(0).toString(16)}`;
  }
  if (typeof v === 'string') return JSON.stringify(v);
  if (v instanceof Uint8Array) return `x${hex(v)}`;
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x));
}

/** Add each row of `batch` to `into` (by its `id`); returns the ids already there. */
export function digestRows(batch: RecordBatch, into: Map<number, string>): { duplicates: number[] } {
  const cols = batch.schema.fields.map((f, i) => ({ name: f.name, vec: batch.getChildAt(i) }));
  const idCol = batch.getChild('id');
  if (!idCol) throw new Error('batch has no id column');
  const duplicates: number[] = [];
  for (let r = 0; r < batch.numRows; r++) {
    const id = Number(idCol.get(r) as bigint | number);
    const text = cols.map((c) => `${c.name}=${valueText(c.vec?.get(r))}`).join(';');
    if (into.has(id)) duplicates.push(id);
    else into.set(id, text);
  }
  return { duplicates };
}

/** Which of `versions` a file's rows (ids `ids`) all match, or -1 when none does (a mix, or wrong bytes). */
export function versionOf(byId: Map<number, string>, ids: readonly number[], versions: readonly Reference[]): number {
  return versions.findIndex((v) => ids.every((id) => byId.get(id) === v.get(id)));
}

export interface VerifyEpochOptions {
  /** Other acceptable versions of some rows (a file overwritten mid-epoch), beside `reference`. */
  versions?: readonly Reference[];
  /** Files by their row ids, needed with `versions` (each file must match one version as a whole). */
  files?: readonly { firstId: number; rows: number }[];
}

/**
 * Throws, saying what is wrong, unless the epoch completed with every row of
 * `reference` exactly once, the same number of batches on every rank, and every value
 * equal to the reference (or, per file, to one of `versions`).
 */
export function verifyEpoch(r: EpochResult, reference: Reference, options: VerifyEpochOptions = {}): { rows: number } {
  if (r.error !== undefined) throw new Error(`the epoch failed: ${describeError(r.error)}`, { cause: r.error });
  if (r.duplicates.length > 0) throw new Error(`${r.duplicates.length} rows yielded more than once (first ids: ${r.duplicates.slice(0, 5).join(', ')})`);
  const missing = [...reference.keys()].filter((id) => !r.byId.has(id));
  if (missing.length > 0) throw new Error(`${missing.length} of ${reference.size} rows never yielded (first ids: ${missing.slice(0, 5).join(', ')})`);
  const extra = [...r.byId.keys()].filter((id) => !reference.has(id));
  if (extra.length > 0) throw new Error(`${extra.length} rows yielded that the dataset does not have (first ids: ${extra.slice(0, 5).join(', ')})`);
  const batches = new Set(r.ranks.map((x) => x.batches));
  if (batches.size > 1) throw new Error(`ranks yielded different numbers of batches: ${r.ranks.map((x) => `rank ${x.rank}: ${x.batches}`).join(', ')}`);
  const versions = [reference, ...(options.versions ?? [])];
  const files = options.files ?? [{ firstId: 0, rows: reference.size }];
  for (const f of files) {
    const ids = Array.from({ length: f.rows }, (_, i) => f.firstId + i);
    if (versionOf(r.byId, ids, versions) >= 0) continue;
    const bad = ids.find((id) => r.byId.get(id) !== reference.get(id)) ?? -1;
    throw new Error(`rows ${f.firstId}..${f.firstId + f.rows - 1} match no single version of their file; row ${bad} is ${r.byId.get(bad)}, the store had ${reference.get(bad)}`);
  }
  return { rows: r.byId.size };
}

/**
 * For an epoch that may have stopped early: no row yielded twice, and the rows yielded
 * of each file all match one version of it (never a mix of two, never other bytes).
 * Returns the version index each file's yielded rows matched (-1 for a file with none).
 */
export function verifyNoMix(r: EpochResult, files: readonly { url: string; firstId: number; rows: number }[], versions: readonly Reference[]): number[] {
  if (r.duplicates.length > 0) throw new Error(`${r.duplicates.length} rows yielded more than once (first ids: ${r.duplicates.slice(0, 5).join(', ')})`);
  return files.map((f) => {
    const ids = Array.from({ length: f.rows }, (_, i) => f.firstId + i).filter((id) => r.byId.has(id));
    if (ids.length === 0) return -1;
    const v = versionOf(r.byId, ids, versions);
    if (v < 0) throw new Error(`the ${ids.length} rows yielded of ${f.url} match no single version of it`);
    return v;
  });
}

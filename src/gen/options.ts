import { InvalidArgumentError } from '../errors.js';
import { checkInt, show } from '../util/validate.js';
import { PARQUET_CODECS, type ParquetCodec, type ParquetGenOptions } from './types.js';

export { checkInt, show };

export const DEFAULT_SEED = 42;
export const DEFAULT_ROW_GROUP_ROWS = 65_536;
export const DEFAULT_EMBEDDING_BYTES = 64;
export const DEFAULT_CODEC: ParquetCodec = 'snappy';
/** File names carry five digits; more files than this would break URL order. */
export const MAX_FILES = 100_000;
/** Raw-file names carry six digits. */
export const MAX_OBJECTS = 1_000_000;

export interface ResolvedTableOptions {
  rows: number;
  files: number;
  rowGroupRows: number;
  embeddingBytes: number;
  seed: number;
  codec: ParquetCodec;
}

export function checkSeed(value: unknown): number {
  return value === undefined ? DEFAULT_SEED : checkInt('seed', value, 0, 0xffff_ffff);
}

export function checkCodec(value: unknown): ParquetCodec {
  if (value === undefined) return DEFAULT_CODEC;
  if (typeof value === 'string' && (PARQUET_CODECS as readonly string[]).includes(value)) return value as ParquetCodec;
  throw new InvalidArgumentError(`Expected \`codec\` to be one of ${PARQUET_CODECS.join(', ')}, got \`${show(value)}\` (${typeof value})`);
}

export function resolveTableOptions(options: ParquetGenOptions): ResolvedTableOptions {
  const rows = checkInt('rows', options.rows, 1);
  const files = checkInt('files', options.files ?? 1, 1, MAX_FILES);
  if (files > rows) {
    throw new InvalidArgumentError(`Expected \`files\` (${files}) to be at most \`rows\` (${rows}): every file holds at least one row`);
  }
  return {
    rows,
    files,
    rowGroupRows: checkInt('rowGroupRows', options.rowGroupRows ?? DEFAULT_ROW_GROUP_ROWS, 1),
    embeddingBytes: checkInt('embeddingBytes', options.embeddingBytes ?? DEFAULT_EMBEDDING_BYTES, 1, 1 << 20),
    seed: checkSeed(options.seed),
    codec: checkCodec(options.codec),
  };
}

/** How many rows file `index` of `files` holds: an even split, earlier files take the remainder. */
export function rowsInFile(rows: number, files: number, index: number): number {
  return Math.floor(rows / files) + (index < rows % files ? 1 : 0);
}

/** The `id` of file `index`'s first row. */
export function firstIdOfFile(rows: number, files: number, index: number): number {
  const base = Math.floor(rows / files);
  return base * index + Math.min(index, rows % files);
}

import type { FileInfo } from '../ufs/types.js';

export type DatasetFormat = 'parquet' | 'arrow' | 'files';
export type ParquetCodec = 'snappy' | 'zstd' | 'none';
export const PARQUET_CODECS: readonly ParquetCodec[] = ['snappy', 'zstd', 'none'];

/** One object the generator wrote, with what a reader needs to check it. */
export interface GeneratedFile extends FileInfo {
  /** SHA-256 of the bytes written, hex. */
  sha256: string;
  /** Rows in the file (1 for a raw-file dataset's object). */
  rows: number;
  /** The `id` of the file's first row (for raw files: the object's index). */
  firstId: number;
  /** Row groups (Parquet) or record batches (Arrow) in the file; 0 for raw files. */
  groups: number;
}

export interface DatasetSummary {
  format: DatasetFormat;
  /** The prefix the files were written under, ending in `/`. */
  prefixUrl: string;
  /** The files in write order (which is also URL order). */
  files: GeneratedFile[];
  /** Total rows (for raw files: objects). */
  rows: number;
  /** Total bytes written. */
  bytes: number;
}

export interface CommonGenOptions {
  /**
   * Seed of every generated value: same options, same bytes.
   * @default 42
   */
  seed?: number | undefined;
  /** Abort between files; the call rejects with `signal.reason`. */
  signal?: AbortSignal | undefined;
  /** Called after each file is written (progress reporting). */
  onFile?: ((file: GeneratedFile, index: number, total: number) => void) | undefined;
}

export interface TableGenOptions extends CommonGenOptions {
  /** Total rows; `id` runs 0..rows-1 across files in file order. */
  rows: number;
  /**
   * Number of files; rows are split as evenly as possible (earlier files get the remainder).
   * @default 1
   */
  files?: number | undefined;
  /**
   * Rows per row group (Parquet) or record batch (Arrow).
   * @default 65536
   */
  rowGroupRows?: number | undefined;
  /**
   * Byte width of the FixedSizeBinary `embedding` column.
   * @default 64
   */
  embeddingBytes?: number | undefined;
}

export interface ParquetGenOptions extends TableGenOptions {
  /**
   * Page compression.
   * @default 'snappy'
   */
  codec?: ParquetCodec | undefined;
}

export type ArrowGenOptions = TableGenOptions;

export interface FileGenOptions extends CommonGenOptions {
  /** Number of objects (`img-000000.bin`, ...). */
  count: number;
  /** Size of each object in bytes. */
  bytes: number;
}

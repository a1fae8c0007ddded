import { tableToIPC } from 'apache-arrow';
import { Compression, Table as WasmTable, WriterPropertiesBuilder, writeParquet } from 'parquet-wasm';
import { InternalError } from '../errors.js';
import type { UnderFileSystem } from '../ufs/types.js';
import { firstIdOfFile, resolveTableOptions, rowsInFile, type ResolvedTableOptions } from './options.js';
import { generateFileTable } from './table.js';
import type { DatasetSummary, ParquetCodec, ParquetGenOptions } from './types.js';
import { writeTableDataset } from './write.js';

const codecs: Record<ParquetCodec, Compression> = {
  snappy: Compression.SNAPPY,
  zstd: Compression.ZSTD,
  none: Compression.UNCOMPRESSED,
};

/**
 * Encode one file of the dataset as Parquet bytes. Exposed so tests and benches can
 * get a file's exact bytes without a store.
 */
export function encodeParquetFile(options: ResolvedTableOptions, fileIndex: number): Uint8Array {
  const { rows, files, rowGroupRows, embeddingBytes, seed, codec } = options;
  const table = generateFileTable(embeddingBytes, seed, fileIndex, firstIdOfFile(rows, files, fileIndex), rowsInFile(rows, files, fileIndex), rowGroupRows);
  // parquet-wasm takes Arrow data as an IPC stream; writeParquet consumes (frees) both wasm objects.
  const wasmTable = WasmTable.fromIPCStream(tableToIPC(table, 'stream'));
  const props = new WriterPropertiesBuilder()
    .setCompression(codecs[codec])
    .setMaxRowGroupSize(rowGroupRows)
    .setCreatedBy('granary gen')
    .build();
  try {
    return writeParquet(wasmTable, props);
  } catch (err) {
    throw new InternalError(`parquet-wasm failed to encode file ${fileIndex} (${table.numRows} rows, codec ${codec}): ${String(err)}`, { cause: err });
  }
}

/**
 * Write a Parquet dataset of `rows` rows as `files` files `part-00000.parquet`, ...
 * under `prefixUrl`, through `ufs.write`. Columns: `id` int64 (dense 0..rows-1 in
 * file order), `label` utf8, `score` float32, `embedding` FixedSizeBinary.
 * Files are generated and written one at a time, so memory holds one file.
 *
 * @example
 * await generateParquetDataset(ufs, 's3://bucket/train/', { rows: 1_000_000, files: 8, codec: 'zstd' });
 */
export async function generateParquetDataset(ufs: UnderFileSystem, prefixUrl: string, options: ParquetGenOptions): Promise<DatasetSummary> {
  const resolved = resolveTableOptions(options);
  return writeTableDataset(ufs, prefixUrl, resolved, 'parquet', (i) => encodeParquetFile(resolved, i), options);
}

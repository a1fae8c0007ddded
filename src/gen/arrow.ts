import { tableToIPC } from 'apache-arrow';
import type { UnderFileSystem } from '../ufs/types.js';
import { firstIdOfFile, resolveTableOptions, rowsInFile, type ResolvedTableOptions } from './options.js';
import { generateFileTable } from './table.js';
import type { ArrowGenOptions, DatasetSummary } from './types.js';
import { writeTableDataset } from './write.js';

/** Encode one file of the dataset in the Arrow IPC file format (record batches of `rowGroupRows`). */
export function encodeArrowFile(options: Omit<ResolvedTableOptions, 'codec'>, fileIndex: number): Uint8Array {
  const { rows, files, rowGroupRows, embeddingBytes, seed } = options;
  const table = generateFileTable(embeddingBytes, seed, fileIndex, firstIdOfFile(rows, files, fileIndex), rowsInFile(rows, files, fileIndex), rowGroupRows);
  return tableToIPC(table, 'file');
}

/**
 * Write an Arrow IPC dataset (`part-00000.arrow`, ...): the same columns and values as
 * `generateParquetDataset` with the same options, one record batch per `rowGroupRows`
 * rows, uncompressed. One file in memory at a time.
 */
export async function generateArrowDataset(ufs: UnderFileSystem, prefixUrl: string, options: ArrowGenOptions): Promise<DatasetSummary> {
  const resolved = resolveTableOptions({ ...options, codec: undefined });
  return writeTableDataset(ufs, prefixUrl, resolved, 'arrow', (i) => encodeArrowFile(resolved, i), options);
}

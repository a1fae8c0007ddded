import type { Table as ArrowTable} from 'apache-arrow';
import { tableFromArrays, tableToIPC, type RecordBatch } from 'apache-arrow';
import * as pw from 'parquet-wasm';
import { MemoryUfs } from '../../src/ufs/memory.js';

/** A Parquet file of rows `firstId..firstId+rows-1` (id, x = id / 2, s = `s${id}`), `rowGroupRows` per row group. */
export function parquetBytes(firstId: number, rows: number, rowGroupRows: number, extra: Record<string, unknown[]> = {}): Uint8Array {
  const id = Int32Array.from({ length: rows }, (_, i) => firstId + i);
  const t = tableFromArrays({
    id,
    x: Float64Array.from(id, (v) => v / 2),
    s: Array.from(id, (v) => `s${v}`),
    ...(extra as Record<string, never>),
  });
  return tableParquet(t, rowGroupRows);
}

export function tableParquet(t: ArrowTable, rowGroupRows: number): Uint8Array {
  const wt = pw.Table.fromIPCStream(tableToIPC(t, 'stream'));
  const props = new pw.WriterPropertiesBuilder().setMaxRowGroupSize(rowGroupRows).build();
  return pw.writeParquet(wt, props);
}

/** Writes files of the given sizes under s3://bucket/ds/ with consecutive ids; returns the store. */
export async function parquetDataset(sizes: number[], rowGroupRows: number[] | number, prefix = 's3://bucket/ds/'): Promise<MemoryUfs> {
  const fs = new MemoryUfs();
  let first = 0;
  for (let i = 0; i < sizes.length; i++) {
    const rg = Array.isArray(rowGroupRows) ? (rowGroupRows[i] as number) : rowGroupRows;
    await fs.write(`${prefix}part-${String(i).padStart(3, '0')}.parquet`, parquetBytes(first, sizes[i] as number, rg));
    first += sizes[i] as number;
  }
  return fs;
}

export function ids(batch: RecordBatch): number[] {
  const col = batch.getChild('id');
  if (!col) throw new Error('no id column');
  return Array.from(col.toArray() as Int32Array);
}

export async function collect(stream: AsyncIterable<RecordBatch>): Promise<RecordBatch[]> {
  const out: RecordBatch[] = [];
  for await (const b of stream) out.push(b);
  return out;
}

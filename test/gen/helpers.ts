import { tableFromIPC, type Table } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import type { MemoryUfs } from '../../src/ufs/memory.js';

export async function readAll(ufs: MemoryUfs, url: string): Promise<Uint8Array> {
  const info = await ufs.stat(url);
  return ufs.read(url, 0, info.size);
}

export function decodeParquet(bytes: Uint8Array): Table {
  return tableFromIPC(readParquet(bytes).intoIPCStream());
}

export function ids(table: Table): number[] {
  const col = table.getChild('id');
  if (!col) throw new Error('no id column');
  return Array.from(col.toArray() as BigInt64Array, Number);
}

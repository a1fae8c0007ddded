import type { UnderFileSystem } from '../ufs/types.js';
import { MAX_OBJECTS, checkInt, checkSeed } from './options.js';
import { SplitMix32, deriveSeed } from './prng.js';
import type { DatasetSummary, FileGenOptions, GeneratedFile } from './types.js';
import { normalizePrefix, writeGenerated } from './write.js';

/** Largest object the raw-file generator makes (it holds one in memory). */
export const MAX_OBJECT_BYTES = 1 << 30;

export function objectName(index: number): string {
  return `img-${String(index).padStart(6, '0')}.bin`;
}

/** The bytes of object `index`: pseudo-random, from (seed, index) alone. */
export function objectBytes(seed: number, index: number, bytes: number): Uint8Array {
  return new SplitMix32(deriveSeed(seed, index)).fill(new Uint8Array(bytes));
}

/**
 * Write `count` objects of `bytes` bytes each (`img-000000.bin`, ...) under
 * `prefixUrl`, like a folder of images: no manifest, the listing is the dataset.
 */
export async function generateFileDataset(ufs: UnderFileSystem, prefixUrl: string, options: FileGenOptions): Promise<DatasetSummary> {
  const count = checkInt('count', options.count, 1, MAX_OBJECTS);
  const size = checkInt('bytes', options.bytes, 0, MAX_OBJECT_BYTES);
  const seed = checkSeed(options.seed);
  const prefix = normalizePrefix(prefixUrl);
  const out: GeneratedFile[] = [];
  for (let i = 0; i < count; i++) {
    const file = await writeGenerated(ufs, prefix + objectName(i), objectBytes(seed, i, size), { rows: 1, firstId: i, groups: 0 }, options);
    out.push(file);
    options.onFile?.(file, i, count);
  }
  return { format: 'files', prefixUrl: prefix, files: out, rows: count, bytes: count * size };
}

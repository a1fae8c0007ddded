import { createHash } from 'node:crypto';
import { throwIfAborted } from '../errors.js';
import { schemeOf } from '../ufs/url.js';
import type { UnderFileSystem } from '../ufs/types.js';
import { firstIdOfFile, rowsInFile, type ResolvedTableOptions } from './options.js';
import type { CommonGenOptions, DatasetSummary, GeneratedFile } from './types.js';

/** A prefix URL that ends in `/`, validated: files go under it as a "directory". */
export function normalizePrefix(prefixUrl: string): string {
  schemeOf(prefixUrl);
  return prefixUrl.endsWith('/') ? prefixUrl : `${prefixUrl}/`;
}

export function partName(index: number, extension: string): string {
  return `part-${String(index).padStart(5, '0')}.${extension}`;
}

/** Write one generated object and record its checksum, so readers can verify every byte. */
export async function writeGenerated(
  ufs: UnderFileSystem,
  url: string,
  bytes: Uint8Array,
  meta: { rows: number; firstId: number; groups: number },
  options: CommonGenOptions,
): Promise<GeneratedFile> {
  throwIfAborted(options.signal);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const info = await ufs.write(url, bytes, { signal: options.signal });
  return { ...info, sha256, ...meta };
}

/**
 * Write a table dataset file by file (`part-00000.<extension>`, ...), one file in memory
 * at a time: the loop shared by the Parquet and Arrow generators.
 */
export async function writeTableDataset(
  ufs: UnderFileSystem,
  prefixUrl: string,
  resolved: Omit<ResolvedTableOptions, 'codec'>,
  format: 'parquet' | 'arrow',
  encode: (fileIndex: number) => Uint8Array,
  options: CommonGenOptions & { onFile?: ((file: GeneratedFile, index: number, total: number) => void) | undefined },
): Promise<DatasetSummary> {
  const prefix = normalizePrefix(prefixUrl);
  const out: GeneratedFile[] = [];
  let bytes = 0;
  for (let i = 0; i < resolved.files; i++) {
    const data = encode(i);
    const rows = rowsInFile(resolved.rows, resolved.files, i);
    const file = await writeGenerated(
      ufs,
      prefix + partName(i, format),
      data,
      { rows, firstId: firstIdOfFile(resolved.rows, resolved.files, i), groups: Math.ceil(rows / resolved.rowGroupRows) },
      options,
    );
    out.push(file);
    bytes += data.byteLength;
    options.onFile?.(file, i, resolved.files);
  }
  return { format, prefixUrl: prefix, files: out, rows: resolved.rows, bytes };
}

import { createHash } from 'node:crypto';
import { throwIfAborted } from '../errors.js';
import { schemeOf } from '../ufs/url.js';
import type { UnderFileSystem } from '../ufs/types.js';
import type { CommonGenOptions, GeneratedFile } from './types.js';

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

/**
 * The client's side of cache hints: a job's announced reads are split at the ring's
 * block boundaries and sent to the worker that owns each block, since only the owner
 * reads (and so prefetches) that block.
 */
import type { HintAccess } from './hint-request.js';

/**
 * Splits accesses at `blockSize` boundaries and groups them by the worker that owns
 * each block (`ownerOf(url, etag, block)`), for a client to send each worker its share.
 */
export function routeAccesses<W>(
  accesses: readonly HintAccess[],
  blockSize: number,
  ownerOf: (url: string, etag: string, block: number) => W | undefined,
): Map<W, HintAccess[]> {
  const out = new Map<W, HintAccess[]>();
  for (const a of accesses) {
    const end = a.offset + a.length;
    for (let pos = a.offset; pos < end; ) {
      const block = Math.floor(pos / blockSize);
      const blockEnd = Math.min(end, (block + 1) * blockSize);
      const w = ownerOf(a.url, a.etag, block);
      if (w !== undefined) {
        let list = out.get(w);
        if (!list) out.set(w, (list = []));
        list.push({ url: a.url, etag: a.etag, offset: pos, length: blockEnd - pos, pos: a.pos });
      }
      pos = blockEnd;
    }
  }
  return out;
}


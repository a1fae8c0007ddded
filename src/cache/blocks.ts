/**
 * How an object is laid out over the ring: fixed-size blocks, each placed on its own
 * worker (`ringKey(url, etag, block)`), read in parts of at most a given size.
 */

/** A byte range inside one block. */
export interface Part {
  offset: number;
  length: number;
  block: number;
}

/** Split `[offset, offset + length)` at block boundaries and into parts of at most `max` bytes. */
export function splitRange(offset: number, length: number, max: number, blockSize: number): Part[] {
  const parts: Part[] = [];
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    const block = Math.floor(pos / blockSize);
    const blockEnd = Math.min(end, (block + 1) * blockSize);
    const len = Math.min(max, blockEnd - pos);
    parts.push({ offset: pos, length: len, block });
    pos += len;
  }
  return parts;
}

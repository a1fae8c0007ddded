/**
 * A seeded 32-bit string hash. The ring depends on nothing else, so any function
 * that is a pure function of its inputs (no per-process salt, unlike V8's own string
 * hashes) and mixes well can stand in for the default.
 */
export type StringHash = (input: string, seed: number) => number;

const encoder = new TextEncoder();

/**
 * MurmurHash3 x86_32 of the UTF-8 bytes of `input`, as an unsigned 32-bit integer.
 * UTF-8, not UTF-16 code units, so an implementation in another language can agree.
 *
 * @example
 * murmur3('hello', 0) // 0x248bfa47
 */
export function murmur3(input: string, seed: number): number {
  const bytes = encoder.encode(input);
  const n = bytes.length;
  const blocks = n & ~3;
  let h = seed | 0;
  for (let i = 0; i < blocks; i += 4) {
    let k = (bytes[i] ?? 0) | ((bytes[i + 1] ?? 0) << 8) | ((bytes[i + 2] ?? 0) << 16) | ((bytes[i + 3] ?? 0) << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const rest = n & 3;
  if (rest > 0) {
    let k = 0;
    if (rest === 3) k ^= (bytes[blocks + 2] ?? 0) << 16;
    if (rest >= 2) k ^= (bytes[blocks + 1] ?? 0) << 8;
    k ^= bytes[blocks] ?? 0;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= n;
  return fmix32(h);
}

/** MurmurHash3's finaliser: a bijection on 32-bit integers with full avalanche. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

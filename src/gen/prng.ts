/**
 * A small seeded PRNG for the dataset generator. splitmix32 is fast, has no
 * state beyond one 32-bit word, and its stream depends only on the seed, so a
 * file's bytes depend only on (seed, file index) and never on timing or order.
 */
export class SplitMix32 {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** The next value, an unsigned 32-bit integer. */
  next(): number {
    this.#state = (this.#state + 0x9e3779b9) | 0;
    let t = this.#state ^ (this.#state >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    t ^= t >>> 15;
    return t >>> 0;
  }

  /** A float in [0, 1) with 32 bits of randomness. */
  float(): number {
    return this.next() / 0x1_0000_0000;
  }

  /** An integer in [0, n). The slight modulo bias is irrelevant for test data. */
  below(n: number): number {
    return this.next() % n;
  }

  /** Fill `bytes` with pseudo-random bytes, four per step. */
  fill(bytes: Uint8Array): Uint8Array {
    const whole = bytes.byteLength & ~3;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < whole; i += 4) view.setUint32(i, this.next(), true);
    if (whole < bytes.byteLength) {
      let v = this.next();
      for (let i = whole; i < bytes.byteLength; i++, v >>>= 8) bytes[i] = v & 0xff;
    }
    return bytes;
  }
}

/**
 * Derive an independent seed from a base seed and a path of integers (a file
 * index, a stream id), so each file gets its own stream without generating the
 * files before it.
 */
export function deriveSeed(seed: number, ...parts: number[]): number {
  let s = seed >>> 0;
  for (const p of parts) {
    s = new SplitMix32((s ^ Math.imul(p + 1, 0x85ebca6b)) >>> 0).next();
  }
  return s;
}

import { InvalidArgumentError } from '../errors.js';
import { checkInt } from '../util/validate.js';

/**
 * Seeded pseudo-random numbers for shuffling: xoshiro128** (Blackman & Vigna),
 * seeded through splitmix64. Both are the reference algorithms, written with
 * 32-bit integer arithmetic (`Math.imul`, `>>> 0`) so the output is the same in
 * every process, on every platform and Node version: an epoch's order is a pure
 * function of its seed.
 *
 * Seeding goes through BigInt (splitmix64 is 64-bit) but happens once per stream;
 * the hot path (`nextUint32`) is 32-bit only.
 */

const MASK64 = (1n << 64n) - 1n;
const GOLDEN_GAMMA = 0x9e3779b97f4a7c15n;

/** The splitmix64 output function (Stafford's "Mix13"): a 64-bit bijective mixer. */
export function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/** splitmix64 (Vigna): a 64-bit generator used here only to expand a key into xoshiro state. */
export class SplitMix64 {
  #state: bigint;

  constructor(seed: bigint) {
    this.#state = BigInt.asUintN(64, seed);
  }

  /** The next 64-bit output, as an unsigned BigInt. */
  next(): bigint {
    this.#state = (this.#state + GOLDEN_GAMMA) & MASK64;
    return mix64(this.#state);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

const TWO_32 = 0x1_0000_0000;

/** xoshiro128** 1.1: 128-bit state, 32-bit outputs, period 2^128 − 1. */
export class Xoshiro128 {
  /**
   * The four state words as int32 bits. A typed array, not four number fields: values of
   * 2^30 and up do not fit V8's small integers, so fields would hold boxed doubles and
   * every step would cost ~25 ns instead of ~3 (same output either way).
   */
  readonly #s = new Int32Array(4);

  /** The four 32-bit state words; they must not all be zero. */
  constructor(s0: number, s1: number, s2: number, s3: number) {
    const s = this.#s;
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
    if ((s[0] | s[1] | s[2] | s[3]) === 0) {
      throw new InvalidArgumentError('xoshiro128** state must not be all zero');
    }
  }

  /** A uniformly distributed integer in [0, 2^32). */
  nextUint32(): number {
    const s = this.#s;
    const s0 = s[0] as number;
    const s1 = s[1] as number;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    const s2 = (s[2] as number) ^ s0;
    const s3 = (s[3] as number) ^ s1;
    s[1] = s1 ^ s2;
    s[0] = s0 ^ s3;
    s[2] = s2 ^ t;
    s[3] = rotl(s3, 11);
    return result;
  }

  /** A uniformly distributed float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /**
   * A uniformly distributed integer in [0, n), 1 <= n <= 2^32, without modulo bias:
   * draws that fall in the incomplete last block of size 2^32 mod n are redrawn.
   */
  nextInt(n: number): number {
    if (!(Number.isInteger(n) && n >= 1 && n <= TWO_32)) {
      throw new InvalidArgumentError(`nextInt bound must be an integer in [1, 2^32], got ${n}`);
    }
    // Rejection sampling: r is kept when r < limit = 2^32 - (2^32 mod n). Since 2^32 mod n
    // < n, every r < 2^32 - n is kept without computing the limit, and as both operands
    // are then uint32 the remainder is an integer one (a double fmod otherwise). The same
    // draws and results as the plain form, several times faster in a shuffle's loop.
    const m = n >>> 0;
    const sure = TWO_32 - n;
    for (;;) {
      const r = this.nextUint32();
      if (r < sure) return (r % m) >>> 0;
      const limit = TWO_32 - (TWO_32 % n);
      if (r < limit) return r % n;
    }
  }
}

/**
 * The 64-bit key of stream `stream` of epoch `epoch` under `seed`. Each argument
 * goes through a full splitmix64 mix before the next is folded in, so nearby
 * seeds, epochs and streams give unrelated keys.
 */
export function streamKey(seed: number, epoch: number, stream = 0): bigint {
  checkInt('seed', seed, Number.MIN_SAFE_INTEGER);
  checkInt('epoch', epoch, 0);
  checkInt('stream', stream, 0);
  let k = mix64(BigInt.asUintN(64, BigInt(seed)) ^ 0x6772616e6172795fn); // "granary_"
  k = mix64((k + GOLDEN_GAMMA * (BigInt(epoch) + 1n)) & MASK64);
  k = mix64((k + GOLDEN_GAMMA * (BigInt(stream) + 1n) * 3n) & MASK64);
  return k;
}

/**
 * An independent xoshiro128** generator for `(seed, epoch, stream)`. The same
 * arguments give the same sequence in every process. `seed` is any safe integer
 * (negative seeds are taken modulo 2^64); `epoch` and `stream` are safe integers >= 0.
 *
 * @example
 * const rng = randomFor(42, 0);
 * rng.nextInt(10); // the same number on every machine
 */
export function randomFor(seed: number, epoch: number, stream = 0): Xoshiro128 {
  const sm = new SplitMix64(streamKey(seed, epoch, stream));
  const a = sm.next();
  const b = sm.next();
  const s0 = Number(a & 0xffffffffn);
  const s1 = Number(a >> 32n);
  const s2 = Number(b & 0xffffffffn);
  const s3 = Number(b >> 32n);
  // An all-zero state has probability 2^-128; map it to a fixed non-zero one rather than throw.
  if ((s0 | s1 | s2 | s3) === 0) return new Xoshiro128(1, 0, 0, 0);
  return new Xoshiro128(s0, s1, s2, s3);
}

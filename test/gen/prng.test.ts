import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SplitMix32, deriveSeed } from '../../src/gen/prng.js';

describe('SplitMix32', () => {
  it('produces the same stream for the same seed', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (seed) => {
        const a = new SplitMix32(seed);
        const b = new SplitMix32(seed);
        for (let i = 0; i < 16; i++) expect(a.next()).toBe(b.next());
      }),
    );
  });

  it('yields unsigned 32-bit integers and floats in [0, 1)', () => {
    const r = new SplitMix32(1);
    for (let i = 0; i < 1000; i++) {
      const v = r.next();
      expect(Number.isInteger(v) && v >= 0 && v <= 0xffffffff).toBe(true);
      const f = r.float();
      expect(f >= 0 && f < 1).toBe(true);
    }
  });

  it('fills byte arrays of any length, the same for the same seed', () => {
    for (const n of [0, 1, 3, 4, 5, 63]) {
      const a = new SplitMix32(77).fill(new Uint8Array(n));
      expect(new SplitMix32(77).fill(new Uint8Array(n))).toEqual(a);
    }
    expect(new SplitMix32(1).fill(new Uint8Array(64))).not.toEqual(new SplitMix32(2).fill(new Uint8Array(64)));
  });

  it('derives distinct seeds for distinct paths', () => {
    const seeds = new Set<number>();
    for (let i = 0; i < 1000; i++) seeds.add(deriveSeed(42, i));
    expect(seeds.size).toBe(1000);
    expect(deriveSeed(42, 1, 2)).not.toBe(deriveSeed(42, 2, 1));
  });
});

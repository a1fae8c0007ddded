import { Bool, Field, FixedSizeBinary, FixedSizeList, Float32, Int32, List, RecordBatch, Schema, Struct, Utf8, makeData, vectorFromArray } from 'apache-arrow';
import type { Data } from 'apache-arrow';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gatherBatch } from '../../src/loader/gather.js';

/** A batch of `n` rows starting at id `base`, with nulls in every nullable column, fixed-size lists with and without null items. */
function batch(base: number, n: number): RecordBatch {
  const ids = Array.from({ length: n }, (_, i) => base + i);
  const cols: Record<string, Data> = {
    id: vectorFromArray(ids, new Int32()).data[0] as Data,
    s: vectorFromArray(ids.map((v) => (v % 5 === 1 ? null : `s${v}${'x'.repeat(v % 3)}`)), new Utf8()).data[0] as Data,
    b: vectorFromArray(ids.map((v) => (v % 6 === 2 ? null : v % 3 === 0)), new Bool()).data[0] as Data,
    emb: vectorFromArray(ids.map((v) => [v, v + 0.5, v + 0.25, -v]), new FixedSizeList(4, new Field('item', new Float32(), false))).data[0] as Data,
    embNulls: vectorFromArray(
      ids.map((v) => (v % 7 === 3 ? null : [v % 4 === 0 ? null : v, v * 2])),
      new FixedSizeList(2, new Field('item', new Int32(), true)),
    ).data[0] as Data,
    list: vectorFromArray(ids.map((v) => (v % 9 === 4 ? null : Array.from({ length: v % 4 }, (_, j) => v * 10 + j))), new List(new Field('item', new Int32(), true))).data[0] as Data,
  };
  const fields = Object.entries(cols).map(([name, d]) => new Field(name, d.type, true));
  return new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length: n, nullCount: 0, children: Object.values(cols) }));
}

const json = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? String(x) : x))) as unknown;

/**
 * Gather the picked rows of `sources` (pick x: source x % sources.length, a row from the
 * rest) and expect them equal to reading the same rows one by one.
 */
function expectGatheredAsRead(sources: RecordBatch[], picks: number[]): void {
  const s = new Int32Array(picks.length);
  const r = new Int32Array(picks.length);
  picks.forEach((x, k) => {
    const src = x % sources.length;
    s[k] = src;
    r[k] = Math.floor(x / sources.length) % (sources[src] as RecordBatch).numRows;
  });
  const out = gatherBatch((sources[0] as RecordBatch).schema, sources, s, r);
  const want = picks.map((_, k) => json((sources[s[k] as number] as RecordBatch).get(r[k] as number)?.toJSON()));
  expect(out.toArray().map((row) => json(row.toJSON()))).toEqual(want);
}

describe('gatherBatch', () => {
  it('gathers any rows of several sources, slices included, equal to reading them one by one', () => {
    const sources = [batch(0, 37), batch(1000, 50).slice(7, 30), batch(5000, 64)];
    fc.assert(
      fc.property(fc.array(fc.nat(), { minLength: 1, maxLength: 80 }), (picks) => expectGatheredAsRead(sources, picks)),
      { numRuns: 80 },
    );
  });

  it('copies fixed-width rows of every width the word copies special-case, in any count, equal to reading them one by one', () => {
    // Widths in bytes: 7 (bytes), 4 and 8 (one and two words), 12 and 68 (odd word counts),
    // 24, 64 and 128 (even: four rows at a time), 132 (wider than the word loop).
    const widths = [7, 4, 8, 12, 68, 24, 64, 128, 132];
    const fixedBatch = (seed: number, n: number): RecordBatch => {
      const cols = widths.map((w) =>
        vectorFromArray(
          Array.from({ length: n }, (_, i) => Uint8Array.from({ length: w }, (_, j) => (seed * 7919 + i * 131 + j * 17) & 0xff)),
          new FixedSizeBinary(w),
        ).data[0] as Data,
      );
      const fields = widths.map((w, j) => new Field(`b${w}`, (cols[j] as Data).type, false));
      return new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length: n, nullCount: 0, children: cols }));
    };
    const sources = [fixedBatch(1, 41), fixedBatch(2, 57).slice(5, 40), fixedBatch(3, 9)];
    fc.assert(
      fc.property(fc.array(fc.nat(), { minLength: 1, maxLength: 70 }), (picks) => expectGatheredAsRead(sources, picks)),
      { numRuns: 100 },
    );
  });
});

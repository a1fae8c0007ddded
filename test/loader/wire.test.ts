import { Bool, Dictionary, Field, FixedSizeList, Float32, Int32, List, RecordBatch, Struct, Utf8, makeData, tableFromArrays, vectorFromArray } from 'apache-arrow';
import type { Data, Schema } from 'apache-arrow';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ipcBatches, packBatches, packable, schemaFromIpc, schemaToIpc, unipcBatches, unpackBatches } from '../../src/loader/wire.js';

/** A batch with nulls in every kind of column the fast path handles, plus a dictionary column. */
function mixedBatch(n: number): RecordBatch {
  const ints = Array.from({ length: n }, (_, i) => (i % 7 === 3 ? null : i));
  const strs = Array.from({ length: n }, (_, i) => (i % 5 === 1 ? null : `s${i}${'x'.repeat(i % 4)}`));
  const bools = Array.from({ length: n }, (_, i) => (i % 6 === 2 ? null : i % 3 === 0));
  const lists = Array.from({ length: n }, (_, i) => (i % 9 === 4 ? null : Array.from({ length: i % 4 }, (_, j) => i * 10 + j)));
  const fixed = Array.from({ length: n }, (_, i) => [i, i + 0.5, i + 0.25]);
  const structs = Array.from({ length: n }, (_, i) => (i % 8 === 5 ? null : { a: i, b: `b${i}` }));
  const t = tableFromArrays({ id: Int32Array.from({ length: n }, (_, i) => i) });
  const cols = {
    id: t.getChild('id')?.data[0] as Data,
    ints: vectorFromArray(ints, new Int32()).data[0] as Data,
    strs: vectorFromArray(strs, new Utf8()).data[0] as Data,
    bools: vectorFromArray(bools, new Bool()).data[0] as Data,
    lists: vectorFromArray(lists, new List(new Field('item', new Int32(), true))).data[0] as Data,
    fixed: vectorFromArray(fixed, new FixedSizeList(3, new Field('item', new Float32(), false))).data[0] as Data,
    structs: vectorFromArray(structs, new Struct([new Field('a', new Int32(), true), new Field('b', new Utf8(), true)])).data[0] as Data,
  };
  const fields = Object.entries(cols).map(([name, d]) => new Field(name, d.type, true));
  const data = makeData({ type: new Struct(fields), length: n, nullCount: 0, children: Object.values(cols) });
  return new RecordBatch(new (t.schema.constructor as typeof Schema)(fields), data);
}

function rows(b: RecordBatch): unknown[] {
  return b.toArray().map((r) => JSON.parse(JSON.stringify(r.toJSON(), (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))) as unknown);
}

/** Through `structuredClone` with transfer, as `postMessage` does: the sender's large buffers are detached. */
function roundTrip(batches: RecordBatch[]): RecordBatch[] {
  const schema = (batches[0] as RecordBatch).schema;
  const w = packBatches(batches);
  return unpackBatches(schema, new Struct(schema.fields), structuredClone(w, { transfer: w }));
}

describe('batch wire format', () => {
  it('round-trips every column kind, whole and at any slice, with nulls', () => {
    const expected = rows(mixedBatch(1003));
    const [back] = roundTrip([mixedBatch(1003)]);
    expect(rows(back as RecordBatch)).toEqual(expected);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 1003 }), fc.integer({ min: 0, max: 1003 })), { minLength: 1, maxLength: 4 }), (cuts) => {
        // Several slices of one source in one message: its buffers travel once.
        const whole = mixedBatch(1003);
        const slices = cuts.map(([a, len]) => whole.slice(a, Math.min(1003, a + len)));
        const want = slices.map(rows);
        const got = roundTrip(slices);
        expect(got.map((b) => b.numRows)).toEqual(slices.map((b) => b.numRows));
        expect(got.map(rows)).toEqual(want);
      }),
      { numRuns: 30 },
    );
  });

  it('moves large buffers without copying and copies small ones', () => {
    const whole = mixedBatch(20_000);
    const big = whole.getChild('fixed')?.data[0]?.children[0]?.values as Float32Array;
    const w = packBatches([whole.slice(100, 50)]);
    expect(w.slice(1)).toContain(big.buffer);
    // The header buffer holds the header and copies of small buffers, not the 240 KB of the fixed-size list.
    expect((w[0] as ArrayBuffer).byteLength).toBeLessThan(big.buffer.byteLength / 5);
    structuredClone(w, { transfer: w });
    expect(big.buffer.byteLength).toBe(0);
    const small = mixedBatch(10);
    expect(packBatches([small])).toHaveLength(1);
  });

  it('sends dictionary columns through Arrow IPC', () => {
    const dict = vectorFromArray(['a', 'b', 'a', null, 'c'], new Dictionary(new Utf8(), new Int32()));
    const t = tableFromArrays({ id: Int32Array.from([1, 2, 3, 4, 5]) });
    const fields = [new Field('id', new Int32(), false), new Field('d', dict.type, true)];
    const b = new RecordBatch(
      new (t.schema.constructor as typeof Schema)(fields),
      makeData({ type: new Struct(fields), length: 5, nullCount: 0, children: [t.getChild('id')?.data[0] as Data, dict.data[0] as Data] }),
    );
    expect(packable(b.schema.fields[1]?.type as Dictionary)).toBe(false);
    expect(packable(new Struct(mixedBatch(1).schema.fields))).toBe(true);
    const [back] = unipcBatches(structuredClone(ipcBatches([b.slice(1, 5)])));
    expect(rows(back as RecordBatch)).toEqual(rows(b.slice(1, 5)));
  });

  it('carries a schema between threads as IPC bytes', () => {
    const s = mixedBatch(1).schema;
    const back = schemaFromIpc(structuredClone(schemaToIpc(s)));
    expect(back.fields.map((f) => `${f.name}:${String(f.type)}`)).toEqual(s.fields.map((f) => `${f.name}:${String(f.type)}`));
  });
});

import { describe, expect, it } from 'vitest';
import type { Data } from 'apache-arrow';
import { Field, FixedSizeBinary, Float32, Int64, RecordBatch, Schema, Struct, Table, Utf8, makeData, tableFromIPC, tableToIPC, vectorFromArray } from 'apache-arrow';
import { FAST_WRAP, wrapBatch } from '../../src/loader/record-batch.js';

const schema = new Schema([
  new Field('id', new Int64(), false),
  new Field('label', new Utf8(), true),
  new Field('score', new Float32(), true),
  new Field('embedding', new FixedSizeBinary(4), false),
], new Map([['origin', 'test']]));

function columns(n: number): Data[] {
  return [
    vectorFromArray(Array.from({ length: n }, (_, i) => BigInt(i)), new Int64()).data[0]!,
    vectorFromArray(Array.from({ length: n }, (_, i) => (i % 3 === 0 ? null : `row ${i}`)), new Utf8()).data[0]!,
    vectorFromArray(Array.from({ length: n }, (_, i) => i / 4), new Float32()).data[0]!,
    makeData({ type: new FixedSizeBinary(4), length: n, nullCount: 0, data: Uint8Array.from({ length: 4 * n }, (_, i) => i % 251) }),
  ] as Data[];
}

describe('wrapBatch', () => {
  it('takes the fast path with this apache-arrow', () => {
    expect(FAST_WRAP).toBe(true);
  });

  it('makes the batch the RecordBatch constructor makes, with the schema object itself', () => {
    const data = makeData({ type: new Struct(schema.fields), length: 10, nullCount: 0, children: columns(10) });
    const slow = new RecordBatch(schema, data);
    const fast = wrapBatch(schema, data);
    expect(fast).toBeInstanceOf(RecordBatch);
    expect(fast.schema).toBe(schema);
    expect(fast.numRows).toBe(10);
    expect(fast.numCols).toBe(4);
    expect(fast.nullCount).toBe(slow.nullCount);
    expect(fast.metadata).toBeInstanceOf(Map);
    expect(fast.toArray().map((r) => r.toJSON())).toEqual(slow.toArray().map((r) => r.toJSON()));
    for (const f of schema.fields) expect(fast.getChild(f.name)?.toJSON()).toEqual(slow.getChild(f.name)?.toJSON());
    expect(fast.slice(3, 7).getChild('label')?.toJSON()).toEqual(slow.slice(3, 7).getChild('label')?.toJSON());
    expect(fast.select(['score', 'id']).schema.fields.map((f) => f.name)).toEqual(slow.select(['score', 'id']).schema.fields.map((f) => f.name));
    // Tables, IPC and the batch's own metadata behave as for a constructed batch.
    const table = new Table([fast, wrapBatch(schema, data)]);
    expect(table.numRows).toBe(20);
    const labels = (slow.getChild('label')?.toArray() ?? []) as (string | null)[];
    expect(tableFromIPC(tableToIPC(table)).getChild('label')?.toArray()).toEqual([...labels, ...labels]);
    fast.metadata.set('k', 'v');
    expect(wrapBatch(schema, data).metadata.size).toBe(0);
  });
});

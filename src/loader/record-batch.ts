import type { Data } from 'apache-arrow';
import { Field, Int32, RecordBatch, Schema, Struct, makeData } from 'apache-arrow';

/**
 * Whether this apache-arrow's `RecordBatch` is what `wrapBatch` assumes: an instance
 * whose whole state is its own `schema`, `data` and `_metadata`. Checked once, on a
 * batch built by the constructor; any other shape (a future version) takes the
 * constructor every time.
 */
export const FAST_WRAP = ((): boolean => {
  try {
    const schema = new Schema([new Field('a', new Int32())]);
    const data = makeData({ type: new Struct(schema.fields), length: 0, nullCount: 0, children: [makeData({ type: new Int32(), length: 0, nullCount: 0 })] });
    const rb = new RecordBatch(schema, data);
    const keys = Object.getOwnPropertyNames(rb).sort().join(',');
    return keys === '_metadata,data,schema' && rb.data.length === 0 && rb.metadata instanceof Map && rb.metadata.size === 0;
  } catch {
    return false;
  }
})();

/**
 * `new RecordBatch(schema, data)` for `data` built to `schema`: a struct of
 * `schema.fields.length` children of `data.length` rows each. The constructor rebuilds
 * the schema on every call (it clones each field and merges its metadata maps, to make
 * columns of unequal length nullable): 3–7 µs per batch, on the training thread for
 * every batch. This makes the same batch in well under a microsecond and keeps the
 * dataset's `schema` object itself.
 */
export function wrapBatch(schema: Schema, data: Data<Struct>): RecordBatch {
  if (!FAST_WRAP) return new RecordBatch(schema, data);
  const rb = Object.create(RecordBatch.prototype) as { schema: Schema; data: Data<Struct>; _metadata: Map<string, string> };
  rb.schema = schema;
  rb.data = data;
  rb._metadata = new Map();
  return rb as unknown as RecordBatch;
}

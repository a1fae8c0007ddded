import { Field, FixedSizeBinary, Float32, Int64, RecordBatch, Schema, Struct, Table, Utf8, makeData } from 'apache-arrow';
import { SplitMix32, deriveSeed } from './prng.js';

/** The class names `label` draws from (CIFAR-10's, for a familiar look). */
export const LABELS = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'] as const;

const encodedLabels = LABELS.map((l) => new TextEncoder().encode(l));

/** The generated datasets' schema: `id`, `label`, `score`, `embedding`. */
export function datasetSchema(embeddingBytes: number): Schema {
  return new Schema([
    new Field('id', new Int64(), false),
    new Field('label', new Utf8(), false),
    new Field('score', new Float32(), false),
    new Field('embedding', new FixedSizeBinary(embeddingBytes), false),
  ]);
}

/**
 * Rows `firstId .. firstId+length-1` of one file as a record batch. Values come
 * from a stream seeded by (seed, fileIndex, batchIndex), so any batch can be
 * regenerated on its own, and a file never depends on the files before it.
 */
export function generateBatch(
  schema: Schema,
  embeddingBytes: number,
  seed: number,
  fileIndex: number,
  batchIndex: number,
  firstId: number,
  length: number,
): RecordBatch {
  const rng = new SplitMix32(deriveSeed(seed, fileIndex, batchIndex));
  const ids = new BigInt64Array(length);
  const scores = new Float32Array(length);
  const labelIdx = new Uint8Array(length);
  const labelOffsets = new Int32Array(length + 1);
  let labelBytes = 0;
  for (let i = 0; i < length; i++) {
    ids[i] = BigInt(firstId + i);
    const l = rng.below(LABELS.length);
    labelIdx[i] = l;
    labelBytes += encodedLabels[l]?.byteLength ?? 0;
    labelOffsets[i + 1] = labelBytes;
    scores[i] = rng.float();
  }
  const labelData = new Uint8Array(labelBytes);
  for (let i = 0; i < length; i++) {
    const enc = encodedLabels[labelIdx[i] ?? 0];
    if (enc) labelData.set(enc, labelOffsets[i]);
  }
  const embeddings = rng.fill(new Uint8Array(length * embeddingBytes));

  const [idField, labelField, scoreField, embField] = schema.fields;
  if (!idField || !labelField || !scoreField || !embField) throw new TypeError('generated schema has four fields');
  const children = [
    makeData({ type: new Int64(), length, nullCount: 0, data: ids }),
    makeData({ type: new Utf8(), length, nullCount: 0, valueOffsets: labelOffsets, data: labelData }),
    makeData({ type: new Float32(), length, nullCount: 0, data: scores }),
    makeData({ type: new FixedSizeBinary(embeddingBytes), length, nullCount: 0, data: embeddings }),
  ];
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }));
}

/** One file's rows as a table of batches of at most `batchRows` rows. */
export function generateFileTable(
  embeddingBytes: number,
  seed: number,
  fileIndex: number,
  firstId: number,
  rows: number,
  batchRows: number,
): Table {
  const schema = datasetSchema(embeddingBytes);
  const batches: RecordBatch[] = [];
  for (let b = 0, done = 0; done < rows; b++) {
    const n = Math.min(batchRows, rows - done);
    batches.push(generateBatch(schema, embeddingBytes, seed, fileIndex, b, firstId + done, n));
    done += n;
  }
  return new Table(schema, batches);
}

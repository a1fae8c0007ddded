/**
 * Parquet planning on mutated files: footers with flipped bytes and wrong lengths,
 * chunk offsets past the end, truncated files, huge element counts. Planning either
 * succeeds or throws a coded error (`GRANARY_ERR_CORRUPT` naming the file, mostly);
 * it never crashes, hangs or allocates by what a footer claims.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parquetLayout } from '../../src/gen/verify.js';
import { describeParquet, parseFileMetaData, readParquetFooter, rowGroupFooter, schemaOnlyFooter } from '../../src/loader/parquet-footer.js';
import { CompactReader, CompactWriter, TStruct, TType } from '../../src/loader/thrift.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { parquetBytes } from '../loader/helpers.js';
import { codedOrOk, expectCoded, fuzzParams, fuzzTimeout } from './fuzz.js';

const CI_RUNS = 300;
const original = parquetBytes(0, 400, 50);
const footerLength = new DataView(original.buffer, original.byteOffset).getUint32(original.byteLength - 8, true);
const footerStart = original.byteLength - 8 - footerLength;

/** Plan one file as the loader and the verifier do, from its bytes. */
async function plan(bytes: Uint8Array): Promise<void> {
  const fs = new MemoryUfs();
  const url = 's3://bucket/fuzz/f.parquet';
  await fs.write(url, bytes);
  const info = await fs.stat(url);
  await codedOrOk(async () => {
    const { meta, metaLength } = await readParquetFooter(fs, info);
    const file = describeParquet(info, meta, metaLength, undefined);
    expect(file.numRows).toBeGreaterThanOrEqual(0);
    for (const rg of file.rowGroups) {
      for (const r of rg.ranges) expect(r.offset + r.length).toBeLessThanOrEqual(info.size);
      rowGroupFooter(file, rg.index);
    }
    schemaOnlyFooter(file);
  });
  await codedOrOk(() => parquetLayout(fs, info));
  if (bytes.byteLength >= 8) {
    const len = new DataView(bytes.buffer, bytes.byteOffset).getUint32(bytes.byteLength - 8, true);
    if (len <= bytes.byteLength - 8) await codedOrOk(() => parseFileMetaData(bytes.subarray(bytes.byteLength - 8 - len, bytes.byteLength - 8), 's3://bucket/fuzz/f.parquet'));
  }
}

/** A mutation of the original file. */
const mutation = fc.oneof(
  // Bytes of the footer flipped.
  fc.array(fc.tuple(fc.nat(footerLength - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }).map((flips) => (b: Uint8Array) => {
    for (const [at, x] of flips) if (footerStart + at < b.byteLength) b[footerStart + at] = (b[footerStart + at] as number) ^ x;
    return b;
  }),
  // The footer length field set to anything.
  fc.integer({ min: 0, max: 0xffffffff }).map((len) => (b: Uint8Array) => {
    if (b.byteLength >= 8) new DataView(b.buffer, b.byteOffset).setUint32(b.byteLength - 8, len, true);
    return b;
  }),
  // Cut short, or cut and the magic put back.
  fc.tuple(fc.nat(original.byteLength), fc.boolean()).map(([n, magic]) => (b: Uint8Array) => {
    const out = b.slice(0, n);
    if (magic && out.byteLength >= 4) out.set(Buffer.from('PAR1'), out.byteLength - 4);
    return out;
  }),
  // Random bytes anywhere.
  fc.array(fc.tuple(fc.nat(original.byteLength - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 16 }).map((sets) => (b: Uint8Array) => {
    for (const [at, v] of sets) if (at < b.byteLength) b[at] = v;
    return b;
  }),
  // A random footer of random length.
  fc.uint8Array({ maxLength: 512 }).map((footer) => (b: Uint8Array) => {
    const out = new Uint8Array(footerStart + footer.byteLength + 8);
    out.set(b.subarray(0, Math.min(footerStart, b.byteLength)));
    out.set(footer, footerStart);
    new DataView(out.buffer).setUint32(out.byteLength - 8, footer.byteLength, true);
    out.set(Buffer.from('PAR1'), out.byteLength - 4);
    return out;
  }),
);

describe('Parquet planning on mutated files', () => {
  it('plans the original file', async () => {
    await plan(original.slice());
  });

  it(
    'plans a mutated file or throws a coded error',
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (ms) => {
          let b: Uint8Array = original.slice();
          for (const m of ms) b = m(b);
          await plan(b);
        }),
        fuzzParams(CI_RUNS),
      );
    },
    fuzzTimeout(CI_RUNS, 100),
  );

  it('refuses a footer that claims billions of row groups without allocating them', () => {
    // FileMetaData { 1: version, 2: schema list of 2^31 structs }: a list header 0xF9 and a varint count.
    const w = new CompactWriter();
    const s = new TStruct();
    s.fields.set(1, { type: TType.I32, value: 1 });
    w.writeStruct(s);
    const head = w.finish().subarray(0, -1);
    const bytes = Buffer.concat([head, Buffer.from([0x19, 0xfc]), Buffer.from([0x80, 0x80, 0x80, 0x80, 0x08]), Buffer.alloc(16)]);
    expect(() => new CompactReader(bytes).readStruct()).toThrow(/collection of 2147483648 elements/);
    try {
      parseFileMetaData(bytes, 's3://bucket/huge.parquet');
      expect.unreachable();
    } catch (err) {
      expectCoded(err);
    }
  });
});

describe('the Thrift compact reader', () => {
  it(
    'reads random bytes into a struct or throws ThriftError, never anything else',
    () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
          try {
            new CompactReader(bytes).readStruct();
          } catch (err) {
            expect((err as Error).name).toBe('ThriftError');
          }
        }),
        fuzzParams(CI_RUNS * 10),
      );
    },
    fuzzTimeout(CI_RUNS * 10, 5),
  );
});

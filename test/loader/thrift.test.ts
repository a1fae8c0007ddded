import { describe, expect, it } from 'vitest';
import { describeParquet, parseFileMetaData, readParquetFooter } from '../../src/loader/parquet-footer.js';
import { CompactReader, CompactWriter, TStruct, TType, ThriftError, type TMap } from '../../src/loader/thrift.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import { parquetBytes } from './helpers.js';

function read(bytes: number[]): TStruct {
  return new CompactReader(new Uint8Array(bytes)).readStruct();
}

describe('CompactReader', () => {
  it('refuses a list, set or map that claims more elements than there are bytes left', () => {
    // field 1: a list (type 9) of 2^20 structs, then nothing
    expect(() => read([0x19, 0xfc, 0x80, 0x80, 0x40])).toThrow(ThriftError);
    expect(() => read([0x19, 0xfc, 0x80, 0x80, 0x40])).toThrow(/list: collection of 1048576 elements in 0 bytes/);
    // field 1: a set (type 10) of 2^35 i32s
    expect(() => read([0x1a, 0xf5, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])).toThrow(/set: collection of 34359738368 elements/);
    // field 1: a map (type 11) of 2^35 bool -> bool entries
    expect(() => read([0x1b, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x11])).toThrow(/map: collection of 34359738368 elements/);
  });

  it('reads a collection that exactly fills the bytes left', () => {
    // field 1: a list of 3 bytes, then the struct's stop
    const s = read([0x19, 0x33, 7, 8, 9, 0]);
    expect(s.fields.get(1)?.value).toEqual({ kind: 'list', elemType: TType.BYTE, items: [7, 8, 9] });
  });

  it('reads and writes booleans inside a map as one byte each, as inside a list', () => {
    const m: TMap = { kind: 'map', keyType: TType.I32, valueType: TType.TRUE, entries: [[1, true], [2, false]] };
    const s = new TStruct();
    s.fields.set(1, { type: TType.MAP, value: m });
    s.fields.set(2, { type: TType.I32, value: 42 });
    const w = new CompactWriter();
    w.writeStruct(s);
    const bytes = w.finish();
    // header, size 2, key/value types, then (zigzag 1, true) (zigzag 2, false), field 2, stop
    expect([...bytes]).toEqual([0x1b, 2, 0x51, 2, 1, 4, 2, 0x15, 84, 0]);
    const back = new CompactReader(bytes).readStruct();
    expect(back.fields.get(1)?.value).toEqual(m);
    expect(back.fields.get(2)?.value).toBe(42);
  });
});

describe('parseFileMetaData', () => {
  it('turns malformed or hostile footers into GRANARY_ERR_CORRUPT naming the file', () => {
    const hostile = new Uint8Array([0x1b, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x11]);
    expect(() => parseFileMetaData(hostile, 's3://b/evil.parquet')).toThrow(
      expect.objectContaining({ code: 'GRANARY_ERR_CORRUPT', message: expect.stringMatching(/s3:\/\/b\/evil\.parquet.*collection of/) as unknown }),
    );
    // a well-formed struct that is not a FileMetaData: no num_rows
    expect(() => parseFileMetaData(new Uint8Array([0x15, 2, 0]), 's3://b/empty.parquet')).toThrow(
      expect.objectContaining({ code: 'GRANARY_ERR_CORRUPT', message: expect.stringContaining('num_rows') as unknown }),
    );
  });

  it('finds the same column chunk ranges as the loader, and the page indexes', async () => {
    const fs = new MemoryUfs();
    const bytes = parquetBytes(0, 250, 100);
    const info = await fs.write('s3://bucket/x.parquet', bytes);
    const { meta, metaLength } = await readParquetFooter(fs, info);
    const described = describeParquet(info, meta, metaLength, undefined);
    const parsed = parseFileMetaData(bytes.subarray(bytes.byteLength - 8 - metaLength, bytes.byteLength - 8), info.url);

    expect(parsed.numRows).toBe(250);
    expect(parsed.rowGroups.map((rg) => rg.numRows)).toEqual([100, 100, 50]);
    expect(parsed.rowGroups.map((rg) => rg.columns.map((c) => ({ offset: c.offset, length: c.length })))).toEqual(
      described.rowGroups.map((rg) => rg.ranges),
    );
    expect(parsed.rowGroups[0]?.columns.map((c) => c.path)).toEqual(['id', 'x', 's']);
    const dataEnd = bytes.byteLength - 8 - metaLength;
    for (const c of parsed.rowGroups.flatMap((rg) => rg.columns)) {
      for (const r of [c.offsetIndex, c.columnIndex]) {
        if (!r) continue;
        expect(r.offset).toBeGreaterThanOrEqual(c.offset + c.length);
        expect(r.offset + r.length).toBeLessThanOrEqual(dataEnd);
      }
    }
    expect(parsed.rowGroups.some((rg) => rg.columns.some((c) => c.offsetIndex !== undefined))).toBe(true);
  });
});

import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { isGranaryError } from '../../src/errors.js';
import { Dataset, DecodePool } from '../../src/loader/index.js';
import { MemoryUfs } from '../../src/ufs/memory.js';
import type { FileInfo, UnderFileSystem } from '../../src/ufs/types.js';
import { collect } from './helpers.js';

/** The Apache parquet-testing files, kept in the repository (see its README.md for origin and license). */
const ROOT = fileURLToPath(new URL('../data/parquet-testing', import.meta.url));

/** A read-only node:fs UFS, enough for the loader (stat + read). */
function fileUfs(): UnderFileSystem {
  const info = (url: string): FileInfo => {
    const st = statSync(fileURLToPath(url));
    return { url, size: st.size, etag: `${st.size}-${st.mtimeMs}`, mtimeMs: st.mtimeMs };
  };
  const fail = (): never => {
    throw new Error('read-only test UFS');
  };
  return {
    stat: async (url) => info(url),
    list: async function* () {
      yield* [];
    },
    read: async (url, offset, length) => {
      if (offset === undefined || length === undefined) throw new Error(`corpus store reads ranges only (${url})`);
      const fh = await open(fileURLToPath(url), 'r');
      try {
        const buf = new Uint8Array(length);
        const { bytesRead } = await fh.read(buf, 0, length, offset);
        if (bytesRead !== length) throw new Error(`short read of ${url}`);
        return buf;
      } finally {
        await fh.close();
      }
    },
    write: fail,
    delete: fail,
    close: async () => {},
    [Symbol.asyncDispose]: async () => {},
  };
}

function csvCells(line: string): string[] {
  return line.split(',').map((c) => c.replace(/^"|"$/g, ''));
}

/** Files parquet-wasm 0.8 cannot decode (see docs/parquet-compat.md). */
const KNOWN_UNSUPPORTED = new Set(['dict-page-offset-zero.parquet', 'nation.dict-malformed.parquet', 'large_string_map.brotli.parquet']);

describe('the Apache parquet-testing corpus', () => {
  const pool = new DecodePool({ threads: 1 });
  const fs = fileUfs();
  afterAll(async () => {
    await pool.close();
  });

  const run = async (path: string): Promise<{ rows: number; ds: Dataset }> => {
    const ds = await Dataset.parquet([pathToFileURL(path).href], { fs, pool });
    const batches = await collect(ds.batches({ batchSize: 4096 }));
    return { rows: batches.reduce((a, b) => a + b.numRows, 0), ds };
  };

  it('is all in the repository, with its license', () => {
    const list = (dir: string, suffix: string): string[] => readdirSync(`${ROOT}/${dir}`).filter((f) => f.endsWith(suffix));
    expect(list('data', '.parquet')).toHaveLength(65);
    expect(list('data', '_expect.csv')).toHaveLength(4);
    expect(list('bad_data', '.parquet')).toHaveLength(8);
    expect(existsSync(`${ROOT}/LICENSE.txt`)).toBe(true);
  });

  it('decodes every supported data/ file to its footer row count, and rejects the rest with a coded error naming the file', async () => {
    const failed: string[] = [];
    const files = readdirSync(`${ROOT}/data`).filter((f) => f.endsWith('.parquet'));
    for (const f of files) {
      const path = `${ROOT}/data/${f}`;
      try {
        const { rows, ds } = await run(path);
        expect(rows, f).toBe(ds.numRows);
        const csv = path.replace(/\.parquet$/, '_expect.csv');
        if (f.endsWith('.parquet') && readdirSync(`${ROOT}/data`).includes(csv.slice(csv.lastIndexOf('/') + 1))) {
          const lines = readFileSync(csv, 'utf8').trim().split('\n');
          const header = csvCells(lines[0] as string);
          const batches = await collect(ds.batches({ batchSize: 1 << 20 }));
          const b = batches[0];
          expect(lines.length - 1, f).toBe(rows);
          // Match columns by position: some files' column names differ from the CSV header (a trailing ':').
          for (let j = 0; j < Math.min(3, header.length); j++) {
            const col = header[j] as string;
            const v = b?.getChildAt(j);
            expect(v, `${f} column ${col}`).toBeTruthy();
            for (let i = 0; i < rows; i++) {
              const cell = csvCells(lines[i + 1] as string)[j] ?? '';
              const got = v?.get(i) as unknown;
              expect(got === null ? '' : String(got as string | number | bigint | boolean), `${f} ${col} row ${i}`).toBe(cell);
            }
          }
        }
      } catch (err) {
        expect(isGranaryError(err), `${f}: ${String(err)}`).toBe(true);
        expect((err as Error).message, f).toContain(f);
        failed.push(f);
      }
    }
    expect(failed.filter((f) => !KNOWN_UNSUPPORTED.has(f))).toEqual([]);
    expect(files.length - failed.length).toBeGreaterThanOrEqual(60);
  }, 240_000);

  it('rejects every bad_data/ file with a coded error (or decodes it consistently), and the pool keeps working after traps', async () => {
    const files = readdirSync(`${ROOT}/bad_data`).filter((f) => f.endsWith('.parquet'));
    let rejected = 0;
    for (const f of files) {
      try {
        const { rows, ds } = await run(`${ROOT}/bad_data/${f}`);
        expect(rows, f).toBe(ds.numRows);
      } catch (err) {
        expect(isGranaryError(err), `${f}: ${String(err)}`).toBe(true);
        expect((err as Error).message, f).toContain(f);
        rejected++;
      }
      // After each bad file the same pool still decodes a good file exactly.
      const { rows } = await run(`${ROOT}/data/alltypes_plain.parquet`);
      expect(rows).toBe(8);
    }
    expect(rejected).toBeGreaterThanOrEqual(files.length - 1);
    // Every failed decode replaces a thread; on a loaded 2-core CI machine that is slow.
  }, 240_000);

  it('replaces a thread that hit a WebAssembly trap', async () => {
    const err = await run(`${ROOT}/data/large_string_map.brotli.parquet`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isGranaryError(err)).toBe(true);
    const mem = new MemoryUfs();
    await mem.write('s3://b/a.parquet', readFileSync(`${ROOT}/data/alltypes_plain.parquet`));
    const ds = await Dataset.parquet('s3://b/', { fs: mem, pool });
    expect((await collect(ds.batches({ batchSize: 3 }))).reduce((a, b) => a + b.numRows, 0)).toBe(8);
    // Decoding the 4 KB file up to its trap and starting a new thread takes close to a minute on a loaded 2-core machine.
  }, 240_000);
});

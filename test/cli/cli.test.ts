import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runGranary as granary } from '../support/run.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'granary-cli-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('granary CLI', () => {
  it('prints help for the program and for each command, exiting 0', async () => {
    const top = await granary(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain('Usage: granary');
    expect(top.stdout).toMatch(/gen \[options\] <url>/);
    expect(top.stdout).toContain('demo');
    for (const cmd of ['gen', 'demo']) {
      const r = await granary([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: granary ${cmd}`);
    }
  });

  it('rejects an invalid number with exit 2 and a coded message naming the option', async () => {
    const r = await granary(['gen', pathToFileURL(join(dir, 'x')).href, '--rows', 'ten']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('GRANARY_ERR_CONFIG');
    expect(r.stderr).toContain('--rows');
    expect(r.stderr).toContain('"ten"');
    expect(r.stdout).toBe('');
  });

  it('rejects an unknown option, a bad choice and an unsupported URL scheme with exit 2', async () => {
    const unknown = await granary(['gen', 'file:///tmp/x/', '--no-such-flag']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/GRANARY_ERR_CONFIG: unknown option '--no-such-flag'/);

    const codec = await granary(['gen', 'file:///tmp/x/', '--codec', 'lz4']);
    expect(codec.code).toBe(2);
    expect(codec.stderr).toMatch(/GRANARY_ERR_CONFIG.*--codec.*snappy, zstd, none/);

    const scheme = await granary(['gen', 'ftp://host/x/']);
    expect(scheme.code).toBe(2);
    expect(scheme.stderr).toMatch(/^granary gen: GRANARY_ERR_UNSUPPORTED_SCHEME: .*ftp:\/\/host\/x\//);

    const mismatch = await granary(['gen', 'file:///tmp/x/', '--format', 'files', '--rows', '5']);
    expect(mismatch.code).toBe(2);
    expect(mismatch.stderr).toMatch(/GRANARY_ERR_CONFIG: --rows does not apply to --format files/);
  });

  it('writes a Parquet dataset into a file:// URL with dense ids across files', async () => {
    const out = join(dir, 'parquet');
    const r = await granary(['gen', `${pathToFileURL(out).href}/`, '--rows', '1000', '--files', '3', '--row-group-rows', '100', '--codec', 'zstd', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout) as { rows: number; files: { url: string; size: number; rows: number }[] };
    expect(summary.rows).toBe(1000);
    expect((await readdir(out)).sort()).toEqual(['part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet']);
    const ids: number[] = [];
    for (const name of ['part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet']) {
      const table = tableFromIPC(readParquet(await readFile(join(out, name))).intoIPCStream());
      ids.push(...Array.from(table.getChild('id')?.toArray() as BigInt64Array, Number));
    }
    expect(ids).toEqual(Array.from({ length: 1000 }, (_, i) => i));

    // Same options, same bytes.
    const again = join(dir, 'parquet-again');
    const r2 = await granary(['gen', pathToFileURL(again).href, '--rows', '1000', '--files', '3', '--row-group-rows', '100', '--codec', 'zstd']);
    expect(r2.code).toBe(0);
    expect(r2.stdout).toMatch(/wrote 3 parquet file\(s\), 1000 rows/);
    for (const name of await readdir(out)) expect(await readFile(join(again, name))).toEqual(await readFile(join(out, name)));
  });

  it('writes a folder of raw files with --format files', async () => {
    const out = join(dir, 'images');
    const r = await granary(['gen', pathToFileURL(out).href, '--format', 'files', '--count', '5', '--bytes', '2k']);
    expect(r.code).toBe(0);
    const names = (await readdir(out)).sort();
    expect(names).toEqual(['img-000000.bin', 'img-000001.bin', 'img-000002.bin', 'img-000003.bin', 'img-000004.bin']);
    for (const n of names) expect((await readFile(join(out, n))).byteLength).toBe(2048);
  });

  it('exits 1 with a coded message when the store cannot take the write', async () => {
    const blocker = join(dir, 'a-file');
    await writeFile(blocker, 'not a directory');
    const r = await granary(['gen', `${pathToFileURL(blocker).href}/ds/`, '--rows', '10']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^granary gen: GRANARY_ERR_[A-Z_]+: /);
  });
});

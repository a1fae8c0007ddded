/**
 * Datasets on the mount: metadata costs the listing and nothing more (`find` and `stat`
 * of 5,000 files with every store request counted by a proxy in front of the store), and
 * DuckDB queries Parquet files written by granary's generator, answering exactly what it
 * answers over the same files on a local disk.
 */
import { DuckDBInstance } from '@duckdb/node-api';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { objectBytes, objectName } from '../../src/gen/files.js';
import { generateParquetDataset } from '../../src/gen/parquet.js';
import type { ParquetGenOptions } from '../../src/gen/types.js';
import { createUfs, type UfsRouter } from '../../src/ufs/router.js';
import { startFaultProxy, type FaultProxy, type StoreRequestCounts } from '../support/fault-proxy.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';
import { cleanupMounts, fuseRunnable, mount, runTool } from './fixture.js';

const SMALL_FILES = 5000;
const PARQUET: ParquetGenOptions = { rows: 40_000, files: 4, rowGroupRows: 4096, seed: 7 };

function total(c: StoreRequestCounts): number {
  return c.get + c.rangedGet + c.head + c.list + c.put + c.other;
}

describe.runIf(fuseRunnable)('datasets on the mount', () => {
  let s3: S3rverHandle;
  let proxy: FaultProxy;
  let ufs: UfsRouter;
  let work: string;
  let mnt: string;
  let local: string;

  beforeAll(async () => {
    s3 = await startS3rver();
    proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: s3.port }, countRequests: true });
    ufs = createUfs({ s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } });
    work = await mkdtemp(join(tmpdir(), 'granary-fuse-data-'));
    local = join(work, 'local');
    mnt = join(work, 'mnt');
    await mkdir(mnt);
    // The generator's small objects, written 32 at a time (one by one takes a minute in s3rver).
    for (let i = 0; i < SMALL_FILES; i += 32) {
      const batch = Array.from({ length: Math.min(32, SMALL_FILES - i) }, (_, j) => ufs.write(`s3://test/ds/many/${objectName(i + j)}`, objectBytes(42, i + j, 64)));
      await Promise.all(batch);
    }
    await generateParquetDataset(ufs, 's3://test/ds/pq/', PARQUET);
    // The same generator options write the same bytes: the local copy is the reference.
    await generateParquetDataset(ufs, `file://${local}/`, PARQUET);
    const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' };
    // Through the counting proxy, with a TTL long enough that no re-listing falls inside a test.
    await mount('s3://test/ds/', mnt, ['--s3-endpoint', proxy.url, '--metadata-ttl', '10m', '--log-file', join(work, 'mount.log')], env);
  }, 300_000);

  afterAll(async () => {
    await cleanupMounts();
    await ufs?.close();
    await proxy?.close();
    await s3?.close();
    if (work) await rm(work, { recursive: true, force: true });
  }, 60_000);

  it('find and stat of 5,000 files after the listing send no request to the store', async () => {
    const before = { ...proxy.stats().requests };
    expect(before.list).toBeGreaterThan(0);
    const found = await runTool('find', [join(mnt, 'many'), '-type', 'f', '-printf', '%s %p\n']);
    expect(found.code, found.stderr).toBe(0);
    const lines = found.stdout.toString().trim().split('\n');
    expect(lines.length).toBe(SMALL_FILES);
    expect(lines.every((l) => l.startsWith('64 '))).toBe(true);
    // stat(1) of every file by name (LOOKUP + GETATTR), and of a name that is not there (a negative entry).
    const statAll = await runTool('sh', ['-c', `find ${join(mnt, 'many')} -type f -exec stat -c %s {} + | sort | uniq -c; stat ${join(mnt, 'many', 'absent.bin')} 2>&1 || true`]);
    expect(statAll.code, statAll.stderr).toBe(0);
    expect(statAll.stdout.toString()).toMatch(new RegExp(`^\\s*${SMALL_FILES} 64$`, 'm'));
    expect(statAll.stdout.toString()).toContain('No such file or directory');
    const after = proxy.stats().requests;
    expect(total(after) - total(before), JSON.stringify({ before, after })).toBe(0);
  });

  it('DuckDB answers counts, sums and a filter over Parquet on the mount exactly as over the local files', async () => {
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    try {
      const query = async (glob: string): Promise<unknown[]> => {
        const sql = `SELECT count(*) AS n, sum(id) AS ids, sum(score)::DOUBLE AS scores,
            count(*) FILTER (WHERE label = 'cat') AS cats, max(id) FILTER (WHERE score > 0.5) AS top,
            count(DISTINCT filename) AS files
          FROM read_parquet('${glob}', filename = true)`;
        const byLabel = `SELECT label, count(*) AS n, min(id) AS first FROM read_parquet('${glob}') WHERE id % 3 = 0 GROUP BY label ORDER BY label`;
        return [(await conn.runAndReadAll(sql)).getRowsJson(), (await conn.runAndReadAll(byLabel)).getRowsJson()];
      };
      const onMount = await query(join(mnt, 'pq', '*.parquet'));
      const onDisk = await query(join(local, '*.parquet'));
      expect(onMount).toEqual(onDisk);
      const [summary] = onMount as [[[string, string, number, string, string, string]]];
      const rows = PARQUET.rows;
      expect(summary[0]).toEqual([String(rows), String((rows * (rows - 1)) / 2), expect.any(Number), expect.any(String), expect.any(String), String(PARQUET.files)]);
    } finally {
      conn.closeSync();
      db.closeSync();
    }
  });
});

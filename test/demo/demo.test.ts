import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runGranary as granary } from '../support/run.js';
import type { DemoResult } from '../../src/demo/engine.js';
import { EPOCH_COLUMNS } from '../../src/demo/report.js';
import { startEtcd } from '../support/etcd.js';

/** The cells of the table row that starts with `name`. */
function row(stdout: string, name: string): string[] {
  const line = stdout.split('\n').find((l) => l.startsWith(name));
  if (!line) throw new Error(`no table row "${name}" in:\n${stdout}`);
  return line.slice(name.length).trim().split(/\s{2,}/);
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'granary-demo-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('granary demo', () => {
  it('runs a small demo end to end: a complete table, an SVG chart, JSON results, and its temp store removed', async () => {
    const out = join(dir, 'out');
    const storeParent = join(dir, 'tmp');
    await mkdir(storeParent);
    const r = await granary(['demo', '--size', '3MiB', '--files', '3', '--epochs', '2', '--step-ms', '1', '--batch-size', '256', '--out', out], {
      TMPDIR: storeParent,
    });
    expect(r.stderr).not.toMatch(/GRANARY_ERR_/);
    expect(r.code).toBe(0);

    const header = r.stdout.split('\n').find((l) => l.startsWith('epoch '));
    expect(header?.split(/\s{2,}/)).toEqual([...EPOCH_COLUMNS]);
    const direct = row(r.stdout, 'direct (store)');
    const cold = row(r.stdout, 'epoch 1 (cold)');
    const warm = row(r.stdout, 'epoch 2 (warm)');
    for (const cells of [direct, cold, warm]) {
      expect(cells).toHaveLength(EPOCH_COLUMNS.length - 1);
      const [seconds, rowsPerSec, , requests, , stall] = cells;
      // A warm epoch of this small demo can take under 5 ms (read ahead as the cold one ended).
      expect(Number(seconds)).toBeGreaterThanOrEqual(0);
      expect(Number(rowsPerSec)).toBeGreaterThan(0);
      expect(Number.isInteger(Number(requests))).toBe(true);
      expect(Number(stall)).toBeGreaterThanOrEqual(0);
      expect(Number(stall)).toBeLessThanOrEqual(100);
    }
    // The direct read has no cache; it read the whole dataset from the store.
    expect(direct[2]).toBe('-');
    expect(Number(direct[3])).toBeGreaterThan(0);
    // Warm: every page from the cache, no bytes from the store. '-': the epoch read
    // nothing itself, because the loader read it all ahead as the cold epoch ended.
    expect(['100.0', '-']).toContain(warm[2]);
    expect(warm[3]).toBe('0');
    expect(warm[4]).toBe('0 B');
    expect(r.stdout).toMatch(/every epoch yielded each of the \d+ rows exactly once/);
    expect(r.stdout).toContain('loader stages');
    expect(r.stdout).toMatch(/profile trainingNode \(20 ms to first byte, 50 MB\/s per connection, \d+ MB\/s in total\)/);
    expect(r.stdout).toMatch(/^direct: the loader got [\d.]+ MB\/s of Parquet from the store/m);
    expect(r.stdout).toMatch(/^warm: +the loader got [\d.]+ MB\/s from the cache/m);

    const svg = await readFile(join(out, 'demo.svg'), 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const panel of ['Throughput', 'Data stall', 'Accelerator utilization']) expect(svg).toContain(panel);
    // Three panels of three bars each, three legend keys.
    expect((svg.match(/<rect /g) ?? []).length).toBeGreaterThanOrEqual(3 * 3 + 3);

    const result = JSON.parse(await readFile(join(out, 'demo.json'), 'utf8')) as DemoResult;
    expect(result.epochs.map((e) => [e.label, e.kind])).toEqual([
      ['direct', 'direct'],
      ['epoch 1', 'cold'],
      ['epoch 2', 'warm'],
    ]);
    const expected = (result.dataset.rows * (result.dataset.rows - 1)) / 2;
    for (const e of result.epochs) {
      expect(e.rows).toBe(result.dataset.rows);
      expect(e.checksum).toBe(expected);
      expect(e.fallbacks).toBe(0);
    }
    expect(result.workers).toHaveLength(2);
    expect(result.membership).toBe('static');
    // The default profile caps the job's total bandwidth to the store.
    expect(result.store.profile).toBe('trainingNode');
    expect(result.store.settings.totalBandwidthBps).toBeGreaterThan(0);
    for (const e of result.epochs) {
      expect(e.stepPct).toBeGreaterThan(0);
      expect(e.stepPct).toBeLessThanOrEqual(100);
    }
    // The temp store directory the demo made is gone.
    expect((await readdir(storeParent)).filter((n) => n.startsWith('granary-demo'))).toEqual([]);
  });

  it('says what to install, with GRANARY_ERR_MISSING_DEPENDENCY and exit 1, when s3rver is not installed', async () => {
    const out = join(dir, 'out-missing');
    const storeParent = join(dir, 'tmp-missing');
    await mkdir(storeParent);
    const r = await granary(['demo', '--size', '64k', '--out', out], { GRANARY_S3RVER_MODULE: join(dir, 'no-such-s3rver'), TMPDIR: storeParent });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^granary demo: GRANARY_ERR_MISSING_DEPENDENCY: The demo store needs the s3rver module/m);
    expect(r.stderr).toContain('npm install s3rver@^3.7.1');
    expect(r.stderr).not.toContain('    at ');
    // It stopped before generating anything: its temp store is gone and nothing was written.
    expect((await readdir(storeParent)).filter((n) => n.startsWith('granary-demo'))).toEqual([]);
    await expect(readdir(out)).rejects.toThrow(/ENOENT/);
  });

  it('documents every flag in --help', async () => {
    const r = await granary(['demo', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--size', '--files', '--epochs', '--no-direct', '--step-ms', '--workers', '--profile', '--etcd', '--config', '--json', '--out']) {
      expect(r.stdout).toContain(flag);
    }
    // Every network profile is listed with its settings, the default explained.
    for (const name of ['none', 'emulatedCloud', 'trainingNode', 'crossRegion', 'slowLink']) expect(r.stdout).toMatch(new RegExp(`^  ${name} +\\S`, 'm'));
    expect(r.stdout).toContain("share of the node's link");
    expect(r.stdout).toContain('GRANARY_DEMO_EPOCHS');
  });

  it('refuses a bad flag, environment value or config file with GRANARY_ERR_CONFIG naming the key, source and value', async () => {
    const flag = await granary(['demo', '--epochs', '0']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('GRANARY_ERR_CONFIG');
    expect(flag.stderr).toContain('demo.epochs from --epochs');
    expect(flag.stderr).toContain('"0"');

    const env = await granary(['demo'], { GRANARY_DEMO_SIZE: 'lots' });
    expect(env.code).toBe(2);
    expect(env.stderr).toContain('demo.size from GRANARY_DEMO_SIZE (environment)');
    expect(env.stderr).toContain('"lots"');

    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ demo: { profile: 'mars' } }));
    const cfg = await granary(['demo', '--config', file]);
    expect(cfg.code).toBe(2);
    expect(cfg.stderr).toContain(`demo.profile from config file ${file}`);
    expect(cfg.stderr).toContain('"mars"');
  });

  it('uses real etcd membership with --etcd: workers register there and the loader finds them', async (ctx) => {
    const etcd = await startEtcd();
    if (!etcd) return ctx.skip();
    try {
      const out = join(dir, 'out-etcd');
      const r = await granary(['demo', '--size', '2MiB', '--files', '2', '--epochs', '2', '--step-ms', '1', '--batch-size', '256', '--out', out, '--etcd', etcd.endpoint]);
      expect(r.stderr).not.toMatch(/GRANARY_ERR_/);
      expect(r.code).toBe(0);
      const result = JSON.parse(await readFile(join(out, 'demo.json'), 'utf8')) as DemoResult & { membership: string };
      expect(result.membership).toBe('etcd');
      const warm = row(r.stdout, 'epoch 2 (warm)');
      expect(['100.0', '-']).toContain(warm[2]);
      expect(warm[3]).toBe('0');
      expect(r.stdout).toMatch(/every epoch yielded each of the \d+ rows exactly once/);
    } finally {
      await etcd.close();
    }
  }, 180_000);
});

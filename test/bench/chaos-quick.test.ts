/**
 * `npm run bench -- chaos --quick` end to end: 2 epochs over 2 ranks while a seeded
 * scheduler injects 3 random faults per epoch (workers killed, stalled, refusing or reset,
 * etcd restarted, store 503s and mid-body resets); every epoch must end with every row
 * exactly once and byte-identical. No timing is asserted.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { etcdAvailable } from '../support/etcd.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const RESULT = join(ROOT, 'bench', 'results', 'chaos-quick.json');

interface ChaosSummary {
  completed: boolean;
  ok: boolean;
  epochs: number;
  epochsOk: number;
  faultsInjected: number;
  rowsVerified: number;
  datasetRows: number;
}

function runQuick(): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'run.ts'), 'chaos', '--quick'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('exit', (code) => resolve({ code, output }));
  });
}

describe.runIf(etcdAvailable())('npm run bench -- chaos --quick', () => {
  it('injects faults in every epoch and ends each with every row exactly once and byte-identical', { timeout: 300_000 }, async () => {
    rmSync(RESULT, { force: true });
    const { code, output } = await runQuick();
    expect(code, output).toBe(0);
    const s = JSON.parse(readFileSync(RESULT, 'utf8')) as ChaosSummary;
    expect(s).toMatchObject({ completed: true, ok: true, epochs: 2, epochsOk: 2 });
    expect(s.faultsInjected).toBeGreaterThan(0);
    expect(s.rowsVerified).toBe(2 * s.datasetRows);
  });
});

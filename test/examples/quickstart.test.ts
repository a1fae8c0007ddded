import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function tsx(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: process.cwd(), env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('examples/quickstart', () => {
  it('the README quickstart runs as written (it is examples/quickstart.ts)', async () => {
    const readme = await readFile('README.md', 'utf8');
    const example = await readFile('examples/quickstart.ts', 'utf8');
    const block = /```ts\n(import \{ mkdtempSync[\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    // The README imports the package by name; the example, inside the repository, imports the source.
    expect(block).toBe(example.replace("from '../src/index.js'", "from 'granary'"));
    const r = await tsx(['examples/quickstart.ts']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(3);
    expect(r.stdout).toMatch(/^epoch 0: 50000 rows/m);
    expect(r.stdout).toMatch(/^epoch 2: 50000 rows/m);
  });
});

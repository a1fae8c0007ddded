import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { runTsx as tsx } from '../support/run.js';

describe('examples/quickstart', () => {
  it('the README quickstart runs as written (it is examples/quickstart.ts)', async () => {
    const readme = await readFile('README.md', 'utf8');
    const example = await readFile('examples/quickstart.ts', 'utf8');
    const block = /```ts\n(import \{ mkdtempSync[\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    // The README imports the package by name; the example, inside the repository, imports the source.
    const asPackage = example
      .replace("from '../src/index.js'", "from 'granary'")
      .replace("from '../src/testing.js'", "from 'granary/testing'");
    expect(block).toBe(asPackage);
    const r = await tsx(['examples/quickstart.ts']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(3);
    expect(r.stdout).toMatch(/^epoch 0: 50000 rows/m);
    expect(r.stdout).toMatch(/^epoch 2: 50000 rows/m);
  });
});

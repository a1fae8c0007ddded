/** Writes deploy/kubernetes/*.yaml from the typed objects (npm run deploy:generate). */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderAll } from './manifests.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
for (const [path, text] of renderAll()) {
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  process.stdout.write(`wrote deploy/kubernetes/${path}\n`);
}

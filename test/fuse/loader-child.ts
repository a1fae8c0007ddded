/**
 * granary's loader over `file://` in its own process (argv[2]: a directory URL on the
 * mount): prints one JSON line `{ key: md5 }` for every file it yields, then exits, so
 * no descriptor it holds can keep the mount busy afterwards.
 */
import { createHash } from 'node:crypto';
import { Dataset } from '../../src/loader/index.js';
import { createUfs } from '../../src/ufs/router.js';

const fs = createUfs({});
const ds = await Dataset.files(process.argv[2] ?? '', { fs, filesPerPartition: 4 });
const seen: Record<string, string> = {};
for await (const b of ds.batches({ batchSize: 5, shuffle: true, seed: 3 })) {
  for (let i = 0; i < b.numRows; i++) {
    seen[b.getChild('key')?.get(i) as string] = createHash('md5')
      .update(b.getChild('bytes')?.get(i) as Uint8Array)
      .digest('hex');
  }
}
await ds.close();
await fs.close();
process.stdout.write(JSON.stringify(seen) + '\n');

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CacheClient, Dataset, createUfs, startWorker } from '../src/index.js';
import { generateParquetDataset } from '../src/testing.js';

const store = createUfs(); // s3://, file://, http(s)://; a local directory here, so nothing else is needed
const dir = mkdtempSync(join(tmpdir(), 'granary-quickstart-'));
const url = `${pathToFileURL(dir).href}/train/`;
await generateParquetDataset(store, url, { rows: 50_000, files: 4, rowGroupRows: 4096 });

const worker = await startWorker({ ufs: store, fileRoot: dir, memoryBytes: 64 * 1024 * 1024 }); // file:// is off on a worker without a root
const fs = new CacheClient({ workers: [worker.url], ufs: store });
const ds = await Dataset.parquet(url, { fs, columns: ['id', 'label', 'embedding'] });
for (let epoch = 0; epoch < 3; epoch++) {
  let rows = 0;
  for await (const batch of ds.batches({ batchSize: 1024, epoch, seed: 42, shuffle: true })) rows += batch.numRows;
  console.log(`epoch ${epoch}: ${rows} rows, worker cache hits so far ${worker.info().counters.hits}`);
}
await ds.close();
await fs.close();
await worker.close();
await store.close();
rmSync(dir, { recursive: true });

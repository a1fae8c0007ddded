import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Option, type Command } from 'commander';
import { generateFileDataset } from '../gen/files.js';
import { DEFAULT_SEED, MAX_FILES, resolveTableOptions } from '../gen/options.js';
import { generateParquetDataset } from '../gen/parquet.js';
import { PARQUET_CODECS, type DatasetSummary, type ParquetCodec } from '../gen/types.js';
import { verifyDataset, type VerifyResult } from '../gen/verify.js';
import { addCounts, emptyCounts } from '../ufs/counters.js';
import { createUfs } from '../ufs/router.js';
import type { RequestCounts } from '../ufs/types.js';
import { checkUsage } from './errors.js';
import { bytesParser, choiceParser, formatBytes, intParser } from './options.js';

interface DemoOptions {
  rows: number;
  files: number;
  rowGroupRows: number;
  codec: ParquetCodec;
  embeddingBytes: number;
  images: number;
  imageBytes: number;
  seed: number;
  dir?: string | undefined;
  keep?: boolean | undefined;
  json?: boolean | undefined;
}

interface PhaseRow {
  dataset: string;
  files: number;
  rows: number;
  bytes: number;
  writeSeconds: number;
  readSeconds: number;
  verified: VerifyResult;
}

function diff(after: RequestCounts, before: RequestCounts): RequestCounts {
  const out = emptyCounts();
  for (const k of Object.keys(out) as (keyof RequestCounts)[]) out[k] = after[k] - before[k];
  return out;
}

function mbps(bytes: number, seconds: number): string {
  return seconds > 0 ? (bytes / 1e6 / seconds).toFixed(1) : '-';
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

function countsLine(c: RequestCounts): string {
  return `list ${c.list}, stat ${c.stat}, get ${c.get}, put ${c.put}, delete ${c.delete}; ${formatBytes(c.bytesRead)} read, ${formatBytes(c.bytesWritten)} written`;
}

/**
 * The interim main job: write a dataset into a fresh local directory through the
 * UFS layer (file:// URLs), read all of it back the way the loader will (listing,
 * stat, footer, one ranged read per row group), check every byte against the
 * SHA-256 taken at write time, and print what it cost.
 */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('Generate a dataset in a temp directory, read it all back through the store layer, verify every byte, print a summary.')
    .addOption(new Option('--rows <n>', 'Parquet rows (about 76 bytes each)').argParser(intParser(1)).default(640_000))
    .addOption(new Option('--files <n>', 'Parquet files').argParser(intParser(1, MAX_FILES)).default(8))
    .addOption(new Option('--row-group-rows <n>', 'rows per row group').argParser(intParser(1)).default(16_384))
    .addOption(new Option('--codec <codec>', 'Parquet compression').argParser(choiceParser(PARQUET_CODECS)).default('snappy'))
    .addOption(new Option('--embedding-bytes <n>', 'embedding width in bytes').argParser(bytesParser(1, 1 << 20)).default(64))
    .addOption(new Option('--images <n>', 'raw files in the image-folder dataset (0 for none)').argParser(intParser(0, 1_000_000)).default(256))
    .addOption(new Option('--image-bytes <size>', 'size of each raw file').argParser(bytesParser(0, 1 << 30)).default(16 * 1024, '16k'))
    .addOption(new Option('--seed <n>', 'seed of every generated value').argParser(intParser(0, 0xffff_ffff)).default(DEFAULT_SEED))
    .option('--dir <path>', 'where to create the demo directory (default: the OS temp dir)')
    .option('--keep', 'keep the generated files instead of removing them')
    .option('--json', 'print the results as JSON')
    .action(async (options: DemoOptions, command: Command) => {
      // A small --rows alone should just work: fewer files rather than an error.
      if (command.getOptionValueSource('files') !== 'cli') options.files = Math.min(options.files, options.rows);
      checkUsage(() => resolveTableOptions({ ...options }));
      const base = resolve(options.dir ?? tmpdir());
      await mkdir(base, { recursive: true });
      const workDir = await mkdtemp(join(base, 'granary-demo-'));
      const ac = new AbortController();
      const onSignal = () => ac.abort(new Error('interrupted'));
      process.once('SIGINT', onSignal);
      const ufs = createUfs();
      try {
        const root = pathToFileURL(workDir).href;
        const rows: PhaseRow[] = [];
        let writeRequests = emptyCounts();
        let readRequests = emptyCounts();
        const run = async (name: string, write: () => Promise<DatasetSummary>): Promise<void> => {
          const c0 = ufs.requestCounts();
          let t = performance.now();
          const summary = await write();
          const writeSeconds = (performance.now() - t) / 1000;
          const c1 = ufs.requestCounts();
          t = performance.now();
          const verified = await verifyDataset(ufs, summary, { signal: ac.signal });
          const readSeconds = (performance.now() - t) / 1000;
          writeRequests = addCounts(writeRequests, diff(c1, c0));
          readRequests = addCounts(readRequests, diff(ufs.requestCounts(), c1));
          rows.push({ dataset: name, files: summary.files.length, rows: summary.rows, bytes: summary.bytes, writeSeconds, readSeconds, verified });
        };

        await run('parquet', () =>
          generateParquetDataset(ufs, `${root}/parquet/`, {
            rows: options.rows,
            files: options.files,
            rowGroupRows: options.rowGroupRows,
            codec: options.codec,
            embeddingBytes: options.embeddingBytes,
            seed: options.seed,
            signal: ac.signal,
          }),
        );
        if (options.images > 0) {
          await run('images', () => generateFileDataset(ufs, `${root}/images/`, { count: options.images, bytes: options.imageBytes, seed: options.seed, signal: ac.signal }));
        }
        const total = rows.reduce((n, r) => n + r.bytes, 0);

        if (options.json) {
          process.stdout.write(`${JSON.stringify({ dir: workDir, kept: Boolean(options.keep), datasets: rows, requests: { write: writeRequests, read: readRequests }, bytes: total }, null, 2)}\n`);
          return;
        }
        const out = [
          `granary demo: wrote ${formatBytes(total)} through the store layer and read every byte back (${root}/)`,
          '',
          table(
            ['dataset', 'files', 'rows', 'bytes', 'write MB/s', 'read MB/s', 'reads', 'row groups'],
            rows.map((r) => [
              r.dataset,
              String(r.files),
              String(r.rows),
              formatBytes(r.bytes),
              mbps(r.bytes, r.writeSeconds),
              mbps(r.verified.bytes, r.readSeconds),
              String(r.verified.reads),
              r.dataset === 'parquet' ? String(r.verified.rowGroups) : '-',
            ]),
          ),
          '',
          `requests while writing: ${countsLine(writeRequests)}`,
          `requests while reading: ${countsLine(readRequests)}`,
          'verified: listings, sizes and the SHA-256 of every file match what was written',
          'write MB/s includes generating and encoding; read MB/s is ranged reads (footer, then each row group) plus hashing',
          options.keep ? `data kept in ${workDir}` : `data removed (${workDir}); add --keep to keep it`,
        ];
        process.stdout.write(`${out.join('\n')}\n`);
      } finally {
        process.off('SIGINT', onSignal);
        await ufs.close();
        // Only the directory this run created is removed, never anything the user named.
        if (!options.keep) await rm(workDir, { recursive: true, force: true });
      }
    });
}

import { Option, type Command } from 'commander';
import { ConfigError } from '../errors.js';
import { generateArrowDataset } from '../gen/arrow.js';
import { generateFileDataset, MAX_OBJECT_BYTES } from '../gen/files.js';
import { DEFAULT_EMBEDDING_BYTES, DEFAULT_ROW_GROUP_ROWS, DEFAULT_SEED, MAX_FILES, MAX_OBJECTS, resolveTableOptions } from '../gen/options.js';
import { generateParquetDataset } from '../gen/parquet.js';
import { PARQUET_CODECS, type DatasetFormat, type DatasetSummary, type GeneratedFile, type ParquetCodec } from '../gen/types.js';
import { normalizePrefix } from '../gen/write.js';
import { formatBytes, formatMBps } from '../util/format.js';
import { checkUsage } from './errors.js';
import { bytesParser, choiceParser, intParser } from './options.js';
import { addStoreOptions, ufsFromOptions, type StoreOptions } from './store.js';

const FORMATS: readonly DatasetFormat[] = ['parquet', 'arrow', 'files'];

interface GenOptions extends StoreOptions {
  format: DatasetFormat;
  rows: number;
  files: number;
  rowGroupRows: number;
  codec: ParquetCodec;
  embeddingBytes: number;
  seed: number;
  count: number;
  bytes: number;
  json?: boolean | undefined;
}

/** Options that only make sense for some formats; naming one for another is a usage error. */
const ONLY_FOR: Record<string, readonly DatasetFormat[]> = {
  rows: ['parquet', 'arrow'],
  files: ['parquet', 'arrow'],
  rowGroupRows: ['parquet', 'arrow'],
  embeddingBytes: ['parquet', 'arrow'],
  codec: ['parquet'],
  count: ['files'],
  bytes: ['files'],
};

function progress(file: GeneratedFile, index: number, total: number): void {
  if (!process.stderr.isTTY) return;
  process.stderr.write(`\rwrote ${index + 1}/${total} ${file.url.slice(file.url.lastIndexOf('/') + 1)}${index + 1 === total ? '\n' : ''}`);
}

export function registerGen(program: Command): void {
  const cmd = program
    .command('gen')
    .description('Write a deterministic test dataset (Parquet, Arrow IPC, or a folder of raw files) under a store URL.')
    .argument('<url>', 'prefix to write under, e.g. file:///tmp/ds/ or s3://bucket/train/')
    .addOption(new Option('--format <format>', 'dataset format').argParser(choiceParser(FORMATS)).default('parquet'))
    .addOption(new Option('--rows <n>', 'total rows; ids run 0..n-1 across files').argParser(intParser(1)).default(100_000))
    .addOption(new Option('--files <n>', 'number of files').argParser(intParser(1, MAX_FILES)).default(1))
    .addOption(new Option('--row-group-rows <n>', 'rows per Parquet row group / Arrow record batch').argParser(intParser(1)).default(DEFAULT_ROW_GROUP_ROWS))
    .addOption(new Option('--codec <codec>', 'Parquet compression').argParser(choiceParser(PARQUET_CODECS)).default('snappy'))
    .addOption(new Option('--embedding-bytes <n>', 'width of the FixedSizeBinary embedding column').argParser(bytesParser(1, 1 << 20)).default(DEFAULT_EMBEDDING_BYTES))
    .addOption(new Option('--seed <n>', 'seed of every generated value').argParser(intParser(0, 0xffff_ffff)).default(DEFAULT_SEED))
    .addOption(new Option('--count <n>', 'objects to write (--format files)').argParser(intParser(1, MAX_OBJECTS)).default(1000))
    .addOption(new Option('--bytes <size>', 'size of each object (--format files), e.g. 64k').argParser(bytesParser(0, MAX_OBJECT_BYTES)).default(64 * 1024, '64k'))
    .option('--json', 'print the summary, with every file and its SHA-256, as JSON');
  addStoreOptions(cmd);
  cmd.addHelpText(
    'after',
    `
Columns (parquet, arrow): id int64 (dense, unique), label utf8, score float32, embedding FixedSizeBinary.
Same options and seed give byte-identical files.

Examples:
  granary gen file:///tmp/ds/ --rows 1_000_000 --files 8 --codec zstd
  granary gen s3://bucket/images/ --format files --count 10000 --bytes 110k --s3-endpoint http://127.0.0.1:4568`,
  );
  cmd.action(async (url: string, options: GenOptions, command: Command) => {
    const prefix = checkUsage(() => normalizePrefix(url));
    for (const [name, formats] of Object.entries(ONLY_FOR)) {
      if (command.getOptionValueSource(name) === 'cli' && !formats.includes(options.format)) {
        const flag = `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
        throw new ConfigError(`${flag} does not apply to --format ${options.format} (only to ${formats.join(', ')})`);
      }
    }
    if (options.format !== 'files') {
      checkUsage(() => resolveTableOptions({ ...options, codec: options.format === 'parquet' ? options.codec : undefined }));
    }

    await using ufs = ufsFromOptions(options);
    const started = performance.now();
    let summary: DatasetSummary;
    const common = { seed: options.seed, onFile: progress };
    if (options.format === 'files') {
      summary = await generateFileDataset(ufs, prefix, { ...common, count: options.count, bytes: options.bytes });
    } else {
      const table = { ...common, rows: options.rows, files: options.files, rowGroupRows: options.rowGroupRows, embeddingBytes: options.embeddingBytes };
      summary =
        options.format === 'parquet'
          ? await generateParquetDataset(ufs, prefix, { ...table, codec: options.codec })
          : await generateArrowDataset(ufs, prefix, table);
    }
    const seconds = (performance.now() - started) / 1000;
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ ...summary, seconds }, null, 2)}\n`);
    } else {
      process.stdout.write(
        `wrote ${summary.files.length} ${options.format} file(s), ${summary.rows} ${options.format === 'files' ? 'objects' : 'rows'}, ` +
          `${formatBytes(summary.bytes)} under ${summary.prefixUrl} in ${seconds.toFixed(2)} s (${formatMBps(summary.bytes, seconds)} MB/s)\n`,
      );
    }
  });
}

import type { Command } from 'commander';
import { schemeOf } from '../ufs/url.js';
import { formatBytes } from '../util/format.js';
import { addCacheClientOptions, openCache, type CacheClientCliOptions } from './cache-options.js';
import { checkUsage } from './errors.js';

interface StatOptions extends CacheClientCliOptions {
  json?: boolean | undefined;
}

export function registerStat(program: Command): void {
  const cmd = program
    .command('stat')
    .description('Print an object\'s URL, size, version (ETag) and modification time, through the cache.')
    .argument('<url>', 'store URL of one object')
    .option('--json', 'print {url, size, etag, mtimeMs, mtime} as JSON');
  addCacheClientOptions(cmd);
  cmd.addHelpText(
    'after',
    `
Through workers, the answer may be up to the workers' metadata TTL old (10 s by default).

Example:
  granary stat s3://datasets/train/part-00000.parquet --etcd http://127.0.0.1:2379 --json`,
  );
  cmd.action(async (url: string, options: StatOptions, command: Command) => {
    checkUsage(() => schemeOf(url));
    await using cache = await openCache(options, command, { commandName: 'granary stat' });
    const info = await cache.fs.stat(url);
    const mtime = info.mtimeMs === undefined ? undefined : new Date(info.mtimeMs).toISOString();
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ url: info.url, size: info.size, etag: info.etag, mtimeMs: info.mtimeMs ?? null, mtime: mtime ?? null })}\n`);
      return;
    }
    const lines = [
      `url    ${info.url}`,
      `size   ${info.size}${info.size >= 1000 ? ` (${formatBytes(info.size)})` : ''}`,
      `etag   ${info.etag}`,
      `mtime  ${mtime ?? '-'}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}

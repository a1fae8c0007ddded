import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { UnavailableError } from '../errors.js';
import { schemeOf } from '../ufs/url.js';
import { formatBytes, formatMBps } from '../util/format.js';
import { addCacheClientOptions, openCache, type CacheClientCliOptions } from './cache-options.js';
import { checkUsage } from './errors.js';

interface LoadOptions extends CacheClientCliOptions {
  json?: boolean | undefined;
  progress: boolean;
}

interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

/** A cli-progress bar on a terminal; elsewhere (a log, a pipe) a plain line at every tenth done. */
function progressOn(stream: NodeJS.WriteStream, started: number): Progress {
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        format: 'loading |{bar}| {percentage}% {doneText} / {totalText} {speed} MB/s eta {eta_formatted}',
        barsize: 30,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    let barStarted = false;
    return {
      update(done, total) {
        const payload = { doneText: formatBytes(done), totalText: formatBytes(total), speed: formatMBps(done, (performance.now() - started) / 1000) };
        if (!barStarted) {
          barStarted = true;
          bar.start(total, done, payload);
        } else {
          bar.setTotal(total);
          bar.update(done, payload);
        }
      },
      stop() {
        if (barStarted) bar.stop();
      },
    };
  }
  let lastTenth = -1;
  return {
    update(done, total) {
      const tenth = total > 0 ? Math.floor((done / total) * 10) : 10;
      if (tenth <= lastTenth) return;
      lastTenth = tenth;
      stream.write(`granary load: ${tenth * 10}% ${formatBytes(done)} of ${formatBytes(total)}\n`);
    },
    stop() {},
  };
}

export function registerLoad(program: Command): void {
  const cmd = program
    .command('load')
    .description('Preload every object under a prefix into the workers that own it, with a progress bar.')
    .argument('<prefix>', 'store URL prefix, e.g. s3://bucket/train/ or file:///data/train/')
    .option('--no-progress', 'no progress on stderr')
    .option('--json', 'print the summary as JSON');
  addCacheClientOptions(cmd);
  cmd.addHelpText(
    'after',
    `
Progress goes to stderr (a bar on a terminal, a line per 10% otherwise); the summary to stdout.

Example:
  granary load s3://datasets/train/ --etcd http://127.0.0.1:2379 --cluster train`,
  );
  cmd.action(async (prefix: string, options: LoadOptions, command: Command) => {
    checkUsage(() => schemeOf(prefix));
    await using cache = await openCache(options, command, { commandName: 'granary load', requireWorkers: true });
    const client = cache.client;
    const workers = client?.workers().length ?? 0;
    if (!client || workers === 0) {
      const where = cache.source.kind === 'etcd' ? `cluster ${cache.source.cluster} in etcd ${cache.source.endpoints.join(',')}` : 'the list';
      throw new UnavailableError(`No cache workers in ${where} to load ${prefix} into`, { url: prefix });
    }
    const started = performance.now();
    const progress = options.progress ? progressOn(process.stderr, started) : undefined;
    let result: { files: number; bytes: number };
    try {
      result = await client.load(prefix, { onProgress: (done, total) => progress?.update(done, total) });
      progress?.update(result.bytes, result.bytes);
    } finally {
      progress?.stop();
    }
    const seconds = (performance.now() - started) / 1000;
    if (options.json) {
      const rate = seconds > 0 ? result.bytes / 1e6 / seconds : null;
      process.stdout.write(`${JSON.stringify({ prefix, files: result.files, bytes: result.bytes, workers, seconds, mbPerSecond: rate })}\n`);
    } else {
      process.stdout.write(
        `loaded ${result.files} file(s), ${formatBytes(result.bytes)} under ${prefix} into ${workers} worker(s) in ${seconds.toFixed(2)} s (${formatMBps(result.bytes, seconds)} MB/s)\n`,
      );
    }
  });
}

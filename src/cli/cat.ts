import { Option, type Command } from 'commander';
import { RangeNotSatisfiableError } from '../errors.js';
import { schemeOf } from '../ufs/url.js';
import { addCacheClientOptions, openCache, type CacheClientCliOptions } from './cache-options.js';
import { checkUsage } from './errors.js';
import { bytesParser } from './options.js';

const MiB = 1024 * 1024;
/** Bytes asked for per read; one read runs ahead while the previous one is written. */
const CHUNK_BYTES = 8 * MiB;

interface CatOptions extends CacheClientCliOptions {
  offset: number;
  length?: number | undefined;
}

/** The reader went away (`| head`): stop quietly, like cat does on SIGPIPE. */
class BrokenPipe extends Error {}

/** Writes to stdout with backpressure; a closed pipe turns into `BrokenPipe`. */
class Sink {
  #error: Error | undefined;
  readonly #out: NodeJS.WritableStream;
  readonly #onError = (err: Error): void => {
    this.#error ??= err;
  };

  constructor(out: NodeJS.WritableStream) {
    this.#out = out;
    out.on('error', this.#onError);
  }

  #check(): void {
    const e = this.#error;
    if (e === undefined) return;
    if ((e as NodeJS.ErrnoException).code === 'EPIPE') throw new BrokenPipe('stdout closed');
    throw e;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#check();
    if (!this.#out.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#out.off('drain', done);
          this.#out.off('error', done);
          this.#out.off('close', done);
          resolve();
        };
        this.#out.on('drain', done);
        this.#out.on('error', done);
        this.#out.on('close', done);
      });
    }
    this.#check();
  }

  dispose(): void {
    // Keep a listener: a late EPIPE after we are done must not crash the process.
    this.#out.off('error', this.#onError);
    this.#out.on('error', () => undefined);
  }
}

export function registerCat(program: Command): void {
  const cmd = program
    .command('cat')
    .description('Write an object\'s bytes to stdout, read through the cache (falling back to the store).')
    .argument('<url>', 'store URL of one object, e.g. s3://bucket/train/part-00000.parquet')
    .addOption(new Option('--offset <n>', 'first byte to write').argParser(bytesParser(0)).default(0))
    .addOption(new Option('--length <n>', 'bytes to write (default: to the end)').argParser(bytesParser(0)));
  addCacheClientOptions(cmd);
  cmd.addHelpText(
    'after',
    `
--offset and --length take sizes like 4096, 64k, 1MiB. A range past the end of the object is GRANARY_ERR_RANGE.

Examples:
  granary cat s3://datasets/train/part-00000.parquet --workers http://127.0.0.1:7070 > part.parquet
  granary cat file:///data/train/part-00000.parquet --offset 1k --length 16 | od -A d -t x1`,
  );
  cmd.action(async (url: string, options: CatOptions, command: Command) => {
    checkUsage(() => schemeOf(url));
    await using cache = await openCache(options, command, { commandName: 'granary cat' });
    const info = await cache.fs.stat(url);
    const offset = options.offset;
    const length = options.length ?? Math.max(0, info.size - offset);
    if (offset + length > info.size) {
      throw new RangeNotSatisfiableError(`Range ${offset}+${length} is past the end of ${url} (size ${info.size})`, { url });
    }
    const end = offset + length;
    // Every chunk is read at the version stat saw, so the output never mixes two versions.
    const read = (at: number): Promise<Uint8Array> => cache.fs.read(url, at, Math.min(CHUNK_BYTES, end - at), { etag: info.etag });
    const sink = new Sink(process.stdout);
    try {
      let next = offset < end ? read(offset) : undefined;
      for (let at = offset; next !== undefined; ) {
        const bytes = await next;
        at += bytes.byteLength;
        next = at < end ? read(at) : undefined;
        // A read-ahead that is abandoned (broken pipe) must not reject unhandled.
        next?.catch(() => undefined);
        await sink.write(bytes);
      }
    } catch (err) {
      if (!(err instanceof BrokenPipe)) throw err;
    } finally {
      sink.dispose();
    }
  });
}

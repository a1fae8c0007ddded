import { spawn } from 'node:child_process';
import { openSync, realpathSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { InvalidArgumentError, isGranaryError } from '../errors.js';
import { FUSE_FD_ENV, isRoot, runForegroundViaFusermount, viaFusermount } from '../fuse/fusermount.js';
import { runHolder } from '../fuse/holder.js';
import { FS_TYPE, mountAt, prepareMountPoint, unmount } from '../fuse/mount-table.js';
import { serveMount, SERVE_ENV, type ServeMessage } from '../fuse/serve.js';
import { schemeOf } from '../ufs/url.js';
import { addCacheClientOptions, durationParser, openCache, type CacheClientCliOptions } from './cache-options.js';
import { checkUsage } from './errors.js';
import { intParser } from './options.js';

interface MountOptions extends CacheClientCliOptions {
  foreground?: boolean;
  metadataTtl: number;
  heartbeatTimeout: number;
  readaheadKb: number;
  logFile?: string | undefined;
}

/** Set on the holder a background `granary mount` starts; it reports readiness over IPC. */
const BACKGROUND_ENV = 'GRANARY_FUSE_BACKGROUND';

/** The mount point as the kernel's mount table names it (symlinks resolved, even under a dead mount). */
export function mountPointPath(dir: string): string {
  const abs = resolve(dir);
  return abs === '/' ? abs : join(realpathSync(dirname(abs)), basename(abs));
}

function lineWriter(fd: number | undefined, prefix: string): (line: string) => void {
  return (line) => {
    if (fd === undefined) return;
    try {
      writeSync(fd, `${prefix}: ${line}\n`);
    } catch {
      // the log's reader went away: nothing to tell
    }
  };
}

export function registerMount(program: Command): void {
  const cmd = program
    .command('mount')
    .description('Mount a store prefix as a read-only directory, read through the cache (root, or an ordinary user with fusermount3 and python3).')
    .argument('<store-prefix>', 'store URL of a "directory", e.g. s3://bucket/train/')
    .argument('<dir>', 'the directory to mount on')
    .option('--foreground', 'stay in the foreground until unmounted or signalled (default: return once the mount is ready)')
    .addOption(new Option('--metadata-ttl <duration>', 'how long a listing is trusted; a changed object appears after this').argParser(durationParser(1000)).default(10_000, '10s'))
    .addOption(new Option('--heartbeat-timeout <duration>', 'a serving process silent this long is replaced').argParser(durationParser(500)).default(5000, '5s'))
    .addOption(new Option('--readahead-kb <n>', "the mount's read_ahead_kb").argParser(intParser(0, 1 << 20)).default(1024))
    .addOption(new Option('--log-file <path>', 'append the mount\'s log here (default: stderr in the foreground, nowhere in the background)'));
  addCacheClientOptions(cmd);
  cmd.addHelpText(
    'after',
    `
The mount is read-only; a serving process that dies or hangs is replaced while files stay open
(docs/mount.md). SIGTERM or SIGINT unmounts (lazily when busy). A directory holding a dead mount
(ENOTCONN) is cleaned and mounted on.

Examples:
  granary mount s3://datasets/train/ /mnt/train --etcd http://10.0.0.5:2379 --cluster prod
  granary mount s3://datasets/train/ /mnt/train --workers http://127.0.0.1:7070 --foreground
  granary umount /mnt/train`,
  );
  cmd.action(async (prefix: string, dir: string, options: MountOptions, command: Command) => {
    checkUsage(() => schemeOf(prefix));
    const prefixUrl = prefix.endsWith('/') ? prefix : `${prefix}/`;
    if (process.env[SERVE_ENV.role] === 'serve') return serve(prefixUrl, options, command);
    const mountPoint = checkUsage(() => mountPointPath(dir));
    if (!options.foreground) return background(await holderArgv(mountPoint, prefixUrl, ['--foreground']));
    if (!isRoot() && process.env[FUSE_FD_ENV] === undefined) {
      process.exitCode = await runForegroundViaFusermount(await holderArgv(mountPoint, prefixUrl, []));
      return;
    }
    const bg = process.env[BACKGROUND_ENV] === '1';
    const logFd = options.logFile !== undefined ? openSync(options.logFile, 'a') : bg ? undefined : 2;
    let log = lineWriter(bg ? 2 : logFd, 'granary mount');
    const status = await runHolder({
      prefix: prefixUrl,
      dir: mountPoint,
      serve: { command: process.execPath, args: [...process.execArgv, ...process.argv.slice(1)], env: { ...process.env, [BACKGROUND_ENV]: '' } },
      serveLog: logFd ?? 'ignore',
      log: (line) => log(line),
      heartbeatTimeoutMs: options.heartbeatTimeout,
      readaheadKb: options.readaheadKb,
      onReady: () => {
        log(`${prefixUrl} mounted on ${mountPoint} (holder pid ${process.pid})`);
        if (!bg) return;
        process.send?.({ type: 'ready' });
        if (process.connected) process.disconnect?.();
        log = lineWriter(logFd, 'granary mount');
      },
    });
    process.exitCode = status;
  });
}

async function serve(prefix: string, options: MountOptions, command: Command): Promise<void> {
  const log = lineWriter(2, `granary mount [serving ${process.pid}]`);
  process.stderr.on('error', () => undefined);
  try {
    await using cache = await openCache(options, command, { commandName: 'granary mount', metadataTtlMs: options.metadataTtl });
    await serveMount({ fs: cache.fs, prefix, ttlMs: options.metadataTtl, log });
  } catch (err) {
    const m: ServeMessage = { type: 'error', code: isGranaryError(err) ? err.code : 'GRANARY_ERR_INTERNAL', message: err instanceof Error ? err.message : String(err) };
    if (process.connected) process.send?.(m);
    throw err;
  } finally {
    if (process.connected) process.disconnect?.();
  }
}

/**
 * The command line of the holder: this command again (with `extra` arguments); for an
 * ordinary user, run by fusermount3's fd receiver once the mount is made.
 */
async function holderArgv(mountPoint: string, prefix: string, extra: readonly string[]): Promise<string[]> {
  const argv = [process.execPath, ...process.execArgv, ...process.argv.slice(1), ...extra];
  if (isRoot()) return argv;
  const cleaned = await prepareMountPoint(mountPoint);
  if (cleaned) process.stderr.write(`granary mount: ${cleaned}\n`);
  return viaFusermount(mountPoint, prefix, 1024 * 1024, argv);
}

/** Start the holder detached and return once it says the mount is ready (or it fails). */
async function background(argv: readonly string[]): Promise<void> {
  const [command, ...args] = argv;
  const child = spawn(command as string, args, {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, [BACKGROUND_ENV]: '1' },
  });
  child.stderr?.on('data', (d: Buffer) => process.stderr.write(d));
  const ready = await new Promise<boolean>((res) => {
    child.on('message', (m: { type?: string }) => {
      if (m.type === 'ready') res(true);
    });
    child.on('exit', (code) => {
      process.exitCode = code ?? 1;
      res(false);
    });
  });
  if (!ready) return;
  child.stderr?.destroy();
  if (child.connected) child.disconnect();
  child.unref();
  process.stdout.write(`mounted (holder pid ${String(child.pid)})\n`);
}

export function registerUmount(program: Command): void {
  program
    .command('umount')
    .description('Unmount a granary mount (lazily when it is busy, and says so).')
    .argument('<dir>', 'the mount point')
    .action(async (dir: string) => {
      const mountPoint = checkUsage(() => mountPointPath(dir));
      const m = mountAt(mountPoint);
      if (m?.fsType !== FS_TYPE) throw new InvalidArgumentError(`${mountPoint} holds no granary mount${m ? ` (it holds ${m.fsType})` : ''}`);
      const how = await unmount(mountPoint);
      process.stdout.write(how === 'unmounted' ? `unmounted ${mountPoint}\n` : `${mountPoint} is busy: detached lazily; it goes away when its last open file is closed\n`);
    });
}

/**
 * The contenders of the peers bench. Each one says whether it can run here, and
 * starts what it needs for one workload (fresh: a cold cache) as a `Session`: the
 * reader's configuration, the PIDs whose CPU and memory count, and how to stop it
 * all again (by PID and mount path).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stopChild } from '../../src/util/child-process.js';
import type { ReaderConfig } from './reader.js';
import { runCommand, waitForMount, which, type Cleanups } from './system.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'src', 'cli', 'main.ts');
const STORE_ENV = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };

export interface BenchContext {
  bucket: string;
  /** s3rver itself (no proxy): the ceiling. */
  storeEndpoint: string;
  /** The fault proxy in front of s3rver. */
  proxyEndpoint: string;
  concurrency: number;
  seed: number;
  cleanups: Cleanups;
  log: (line: string) => void;
}

export interface Session {
  reader: ReaderConfig;
  /** Processes whose CPU and peak RSS are reported, by role (`workers`, `daemon`). */
  groups: Record<string, number[]>;
  /** Through the proxy (store requests are counted) or straight to s3rver. */
  proxied: boolean;
  stop(): Promise<void>;
}

export interface Contender {
  id: string;
  label: string;
  /** Undefined when it can run; otherwise why it cannot (reported as absent or skipped). */
  unavailable(): Promise<string | undefined>;
  /** `absent`: a contender the project does not have yet; `skipped`: a peer missing on this machine. */
  missingStatus: 'absent' | 'skipped';
  start(ctx: BenchContext, prefix: string): Promise<Session>;
}

/** Start a `granary` CLI command as a child (node + tsx, so its PID is the server's). */
function granaryChild(args: readonly string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, [...process.execArgv, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...STORE_ENV, ...env } });
}

/**
 * Two `granary worker` processes, static membership, 2 GiB memory tier each, reading the
 * store through the proxy. With `shm` (the default) each keeps its memory tier as page
 * files on /dev/shm (`--shm-dir`), which the reader, on the same host, reads directly;
 * without it the tier is in the workers' heaps and every byte comes over HTTP.
 */
async function startWorkers(ctx: BenchContext, shm = true, n = 2): Promise<{ urls: string[]; pids: number[]; stop: () => Promise<void> }> {
  const shmRoot = shm ? await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'granary-peers-')) : undefined;
  const removeShm = shmRoot === undefined ? async () => undefined : ctx.cleanups.dir(shmRoot);
  const started = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const tier = shmRoot === undefined ? [] : ['--shm-dir', join(shmRoot, `w${i}`)];
      const child = granaryChild(['worker', '--port', '0', '--id', `bench-w${i}`, '--memory', '2GiB', ...tier, '--s3-endpoint', ctx.proxyEndpoint, '--s3-path-style', '--json']);
      const stop = ctx.cleanups.add(`stop granary worker ${child.pid ?? '?'}`, () => stopChild(child, 5000));
      let err = '';
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      const url = await new Promise<string>((resolve, reject) => {
        const rl = createInterface({ input: child.stdout! });
        rl.once('line', (l) => resolve((JSON.parse(l) as { url: string }).url));
        child.once('exit', (code) => reject(new Error(`granary worker exited (${String(code)}) before it was ready: ${err.slice(-500)}`)));
      });
      child.stdout?.resume();
      return { url, pid: child.pid ?? 0, stop };
    }),
  );
  const stop = async (): Promise<void> => {
    await Promise.all(started.map((s) => s.stop()));
    await removeShm();
  };
  return { urls: started.map((s) => s.url), pids: started.map((s) => s.pid), stop };
}

/** A FUSE daemon in the foreground (its PID is the daemon's), mounted at `mount`. */
async function startFuseDaemon(ctx: BenchContext, name: string, bin: string, argv: readonly string[], mount: string, env: NodeJS.ProcessEnv): Promise<{ pid: number; stop: () => Promise<void> }> {
  const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const stopDaemon = ctx.cleanups.add(`stop ${name} ${child.pid ?? '?'}`, () => stopChild(child, 5000));
  const unmountIt = ctx.cleanups.mount(mount);
  const stop = async (): Promise<void> => {
    await unmountIt();
    await stopDaemon();
  };
  if (!(await waitForMount(mount, () => child.exitCode === null && child.signalCode === null, 30_000))) {
    await stop();
    throw new Error(`${name} did not mount ${mount}: ${out.slice(-800)}`);
  }
  return { pid: child.pid ?? 0, stop };
}

/** Why FUSE mounts cannot be made here, or undefined when they can. */
function fuseUnavailable(): string | undefined {
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse';
  try {
    accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    return 'no access to /dev/fuse (run as root, or with the device shared)';
  }
  return undefined;
}

async function tempDir(ctx: BenchContext, name: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `granary-peers-${name}-`));
  return { dir, remove: ctx.cleanups.dir(dir) };
}

const ceiling: Contender = {
  id: 'ceiling',
  label: 'ceiling (SDK, no proxy)',
  missingStatus: 'absent',
  unavailable: async () => undefined,
  async start(ctx, prefix) {
    return { reader: { mode: 'sdk', endpoint: ctx.storeEndpoint, bucket: ctx.bucket, prefix, concurrency: ctx.concurrency, seed: ctx.seed }, groups: {}, proxied: false, stop: async () => {} };
  },
};

const direct: Contender = {
  id: 'direct',
  label: 'direct S3 (SDK)',
  missingStatus: 'absent',
  unavailable: async () => undefined,
  async start(ctx, prefix) {
    return { reader: { mode: 'sdk', endpoint: ctx.proxyEndpoint, bucket: ctx.bucket, prefix, concurrency: ctx.concurrency, seed: ctx.seed }, groups: {}, proxied: true, stop: async () => {} };
  },
};

/** granary's `CacheClient` with default options over workers whose tier is on /dev/shm: warm pages are read straight from it. */
const granary: Contender = {
  id: 'granary',
  label: 'granary (CacheClient)',
  missingStatus: 'absent',
  unavailable: async () => undefined,
  async start(ctx, prefix) {
    const w = await startWorkers(ctx);
    const reader: ReaderConfig = { mode: 'granary', storeEndpoint: ctx.proxyEndpoint, workers: w.urls, bucket: ctx.bucket, prefix, concurrency: ctx.concurrency, seed: ctx.seed };
    return { reader, groups: { workers: w.pids }, proxied: true, stop: w.stop };
  },
};

/** The same client over workers with their memory tier in the heap: every byte over HTTP (a client on another host). */
const granaryHttp: Contender = {
  id: 'granary-http',
  label: 'granary (CacheClient, HTTP only)',
  missingStatus: 'absent',
  unavailable: async () => undefined,
  async start(ctx, prefix) {
    const w = await startWorkers(ctx, false);
    const reader: ReaderConfig = { mode: 'granary', storeEndpoint: ctx.proxyEndpoint, workers: w.urls, bucket: ctx.bucket, prefix, concurrency: ctx.concurrency, seed: ctx.seed };
    return { reader, groups: { workers: w.pids }, proxied: true, stop: w.stop };
  },
};

/**
 * The hook for granary's own FUSE mount: present once `granary mount` exists (src/fuse
 * and the CLI command). It runs `granary mount s3://<bucket>/ <dir>` in the foreground
 * over two fresh workers, as the CacheClient row does.
 */
const granaryFuse: Contender = {
  id: 'granary-fuse',
  label: 'granary FUSE mount',
  missingStatus: 'absent',
  async unavailable() {
    if (!existsSync(join(ROOT, 'src', 'fuse'))) return 'granary mount does not exist yet (no src/fuse)';
    const help = await runCommand(process.execPath, [...process.execArgv, CLI, '--help']);
    if (!/^\s+mount\b/m.test(help.out)) return 'granary mount does not exist yet (no `mount` command in `granary --help`)';
    return fuseUnavailable();
  },
  async start(ctx, prefix) {
    const w = await startWorkers(ctx);
    const { dir, remove } = await tempDir(ctx, 'granary-fuse');
    const mount = join(dir, 'mnt');
    await mkdir(mount);
    const argv = [...process.execArgv, CLI, 'mount', `s3://${ctx.bucket}/`, mount, '--foreground', '--workers', w.urls.join(','), '--s3-endpoint', ctx.proxyEndpoint, '--s3-path-style'];
    const d = await startFuseDaemon(ctx, 'granary mount', process.execPath, argv, mount, { ...process.env, ...STORE_ENV }).catch(async (err: unknown) => {
      await w.stop();
      throw err;
    });
    return {
      reader: { mode: 'files', mount, prefix, concurrency: ctx.concurrency, seed: ctx.seed },
      groups: { workers: w.pids, daemon: [d.pid] },
      proxied: true,
      async stop() {
        await d.stop();
        await w.stop();
        await remove();
      },
    };
  },
};

const s3fs: Contender = {
  id: 's3fs',
  label: 's3fs-fuse (use_cache)',
  missingStatus: 'skipped',
  async unavailable() {
    if (!which('s3fs')) return 's3fs not installed (apt-get install -y s3fs)';
    return fuseUnavailable();
  },
  async start(ctx, prefix) {
    const { dir, remove } = await tempDir(ctx, 's3fs');
    const [mount, cache, passwd] = [join(dir, 'mnt'), join(dir, 'cache'), join(dir, 'passwd')];
    await mkdir(mount);
    await mkdir(cache);
    await writeFile(passwd, 'S3RVER:S3RVER\n');
    await chmod(passwd, 0o600);
    const argv = [
      ctx.bucket,
      mount,
      '-f',
      '-o',
      `url=${ctx.proxyEndpoint},use_path_request_style,passwd_file=${passwd},use_cache=${cache},endpoint=us-east-1`,
      '-o',
      'parallel_count=8,multipart_size=8,stat_cache_expire=600,enable_noobj_cache,max_stat_cache_size=10000',
    ];
    const d = await startFuseDaemon(ctx, 's3fs', which('s3fs') ?? 's3fs', argv, mount, process.env).catch(async (err: unknown) => {
      await remove();
      throw err;
    });
    return {
      reader: { mode: 'files', mount, prefix, concurrency: ctx.concurrency, seed: ctx.seed },
      groups: { daemon: [d.pid] },
      proxied: true,
      async stop() {
        await d.stop();
        await remove();
      },
    };
  },
};

const rclone: Contender = {
  id: 'rclone',
  label: 'rclone (vfs-cache-mode full)',
  missingStatus: 'skipped',
  async unavailable() {
    if (!which('rclone')) return 'rclone not installed (apt-get install -y rclone)';
    if (!which('fusermount3') && !which('fusermount')) return 'no fusermount (apt-get install -y fuse3)';
    return fuseUnavailable();
  },
  async start(ctx, prefix) {
    const { dir, remove } = await tempDir(ctx, 'rclone');
    const [mount, cache] = [join(dir, 'mnt'), join(dir, 'cache')];
    await mkdir(mount);
    await mkdir(cache);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RCLONE_CONFIG: join(dir, 'rclone.conf'),
      RCLONE_CONFIG_BENCH_TYPE: 's3',
      RCLONE_CONFIG_BENCH_PROVIDER: 'Other',
      RCLONE_CONFIG_BENCH_ENV_AUTH: 'false',
      RCLONE_CONFIG_BENCH_ACCESS_KEY_ID: 'S3RVER',
      RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY: 'S3RVER',
      RCLONE_CONFIG_BENCH_ENDPOINT: ctx.proxyEndpoint,
      RCLONE_CONFIG_BENCH_REGION: 'us-east-1',
      RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE: 'true',
    };
    // rclone fails on this machine's AWS_CA_BUNDLE (it is not needed for a plain-HTTP endpoint).
    delete env.AWS_CA_BUNDLE;
    const argv = ['mount', `bench:${ctx.bucket}`, mount, '--vfs-cache-mode', 'full', '--cache-dir', cache, '--read-only'];
    const d = await startFuseDaemon(ctx, 'rclone', which('rclone') ?? 'rclone', argv, mount, env).catch(async (err: unknown) => {
      await remove();
      throw err;
    });
    return {
      reader: { mode: 'files', mount, prefix, concurrency: ctx.concurrency, seed: ctx.seed },
      groups: { daemon: [d.pid] },
      proxied: true,
      async stop() {
        await d.stop();
        await remove();
      },
    };
  },
};

export const CONTENDERS: readonly Contender[] = [ceiling, direct, granary, granaryHttp, granaryFuse, s3fs, rclone];

import { InvalidArgumentError as CommanderInvalidArgument, Option, type Command } from 'commander';
import { CacheClient } from '../cache/client.js';
import { validateEndpoints, validateWorkerUrl } from '../cache/membership.js';
import { SECTIONS } from '../config/keys.js';
import { addEtcdSecurityOptions, ETCD_SECURITY_KEYS, etcdSecurityFrom, type EtcdSecurityValues } from './etcd-options.js';
import { flagsFromCommand, loadConfig, type ConfigSource } from '../config/load.js';
import { ConfigError, UnavailableError } from '../errors.js';
import type { UnderFileSystem } from '../ufs/types.js';
import { checkUsage } from './errors.js';
import { addStoreOptions, ufsFromOptions, type StoreOptions } from './store.js';

/**
 * Flags shared by the commands that talk to a cache cluster (`workers`, `load`, `cat`,
 * `stat`) and the pieces of `worker` that use the same names.
 */

/** How long a client command waits for etcd's first list of workers. */
export const ETCD_READY_TIMEOUT_MS = 10_000;

/** The default cluster name, as the library uses it. */
export const DEFAULT_CLUSTER = 'default';

export interface CacheClientCliOptions extends StoreOptions, EtcdSecurityValues {
  etcd?: string | undefined;
  cluster: string;
  workers?: string | undefined;
  token?: string | undefined;
  /** PEM CA that signed the workers' certificates (`--tls-ca`, GRANARY_TLS_CA). */
  tlsCa?: string | undefined;
  /** A JSON config file (`--config`, or GRANARY_CONFIG). */
  config?: string | undefined;
}

const DURATION_RE = /^(\d+(?:_\d+)*)\s*(ms|s|m|h)$/;
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration with its unit (`500ms`, `10s`, `2m`, `1h`; `0` alone is allowed), in milliseconds. */
export function durationParser(minMs: number, maxMs = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    const text = value.trim();
    const m = DURATION_RE.exec(text);
    const n = text === '0' ? 0 : m?.[1] === undefined ? NaN : Number(m[1].replaceAll('_', '')) * (DURATION_UNITS[m[2] ?? ''] ?? NaN);
    if (!Number.isSafeInteger(n) || n < minMs || n > maxMs) {
      throw new CommanderInvalidArgument(`Expected a duration with a unit (like 500ms, 10s, 2m) from ${minMs} ms, got "${value}".`);
    }
    return n;
  };
}

/** Split a comma-separated flag value, dropping empty items. */
export function splitList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

export function etcdOption(): Option {
  return new Option('--etcd <urls>', 'etcd client URLs, comma-separated (e.g. http://127.0.0.1:2379)').env('GRANARY_ETCD');
}

export function clusterOption(): Option {
  return new Option('--cluster <name>', 'cluster name: workers live under /granary/<name>/workers/ in etcd').env('GRANARY_CLUSTER').default(DEFAULT_CLUSTER);
}

export function tokenOption(help: string): Option {
  return new Option('--token <token>', `${help} (prefer the environment variable: flags show up in ps)`).env('GRANARY_TOKEN');
}

/** `--etcd`, `--cluster`, `--workers`, `--token`, and the store flags. */
export function addCacheClientOptions(cmd: Command): Command {
  cmd
    .addOption(etcdOption())
    .addOption(clusterOption())
    .addOption(new Option('--workers <urls>', 'worker URLs, comma-separated, instead of etcd (e.g. http://127.0.0.1:7070)').env('GRANARY_WORKERS'))
    .addOption(tokenOption('bearer token the workers require'))
    .addOption(new Option('--tls-ca <file>', 'PEM CA that signed the workers\' certificates, for https:// workers (default: the system CAs)').env('GRANARY_TLS_CA'));
  addEtcdSecurityOptions(cmd)
    .addOption(new Option('--config <file>', 'JSON config file with cluster and store sections (flags > GRANARY_* env > file > defaults)').env('GRANARY_CONFIG'));
  return addStoreOptions(cmd);
}

/** Where a client command gets its workers from, after flags and environment are settled. */
export type CacheSource = { kind: 'etcd'; endpoints: string[]; cluster: string } | { kind: 'workers'; urls: string[] } | { kind: 'direct' };

/**
 * Settle `--etcd` against `--workers`. A flag on the command line wins over the other
 * one's environment variable (GRANARY_ETCD set in a shell profile must not stop
 * `--workers` from working); two on the same level are a usage error.
 */
/** Where a value came from, as commander names it: 'cli', 'env', 'config' (file) or 'default'. */
export type ValueSource = (key: string) => string | undefined;

export function cacheSource(options: CacheClientCliOptions, command: Command | ValueSource): CacheSource {
  const sourceOf: ValueSource = typeof command === 'function' ? command : (key) => command.getOptionValueSource(key);
  let etcd = options.etcd;
  let workers = options.workers;
  if (etcd !== undefined && workers !== undefined) {
    const etcdFrom = sourceOf('etcd');
    const workersFrom = sourceOf('workers');
    if (etcdFrom === 'cli' && workersFrom === 'env') workers = undefined;
    else if (workersFrom === 'cli' && etcdFrom === 'env') etcd = undefined;
    else {
      const from = (s: string | undefined, flag: string, env: string) => (s === 'env' ? env : s === 'config' ? `${flag.slice(2)} in the config file` : flag);
      throw new ConfigError(
        `Give ${from(etcdFrom, '--etcd', 'GRANARY_ETCD')} or ${from(workersFrom, '--workers', 'GRANARY_WORKERS')}, not both (etcd ${etcd}, workers ${workers})`,
      );
    }
  }
  if (etcd === undefined && sourceOf('cluster') === 'cli') {
    throw new ConfigError(`--cluster ${options.cluster} needs --etcd (or GRANARY_ETCD): a cluster is found in etcd`);
  }
  if (etcd !== undefined) {
    const endpoints = checkUsage(() => [...validateEndpoints(splitList(etcd), '--etcd')]);
    return { kind: 'etcd', endpoints, cluster: options.cluster };
  }
  if (workers !== undefined) {
    const list = splitList(workers);
    if (list.length === 0) throw new ConfigError(`--workers needs at least one worker URL, got "${workers}"`);
    const urls = checkUsage(() => list.map((u, i) => validateWorkerUrl(u, `--workers[${i}]`)));
    return { kind: 'workers', urls };
  }
  return { kind: 'direct' };
}

/** What a client command reads through: the cache (with fallback), or the store itself. */
export interface CacheAccess extends AsyncDisposable {
  /** The file system to read: a `CacheClient`, or the store when no workers were given. */
  readonly fs: UnderFileSystem;
  /** The cache client, when there is a cluster. */
  readonly client: CacheClient | undefined;
  readonly source: CacheSource;
  close(): Promise<void>;
}

export interface OpenCacheOptions {
  /** `granary cat` etc., for messages on stderr. */
  commandName: string;
  /** The command makes no sense without workers (`load`, `workers`): refuse to run without them. */
  requireWorkers?: boolean;
  /** Aborts the wait for etcd. */
  signal?: AbortSignal | undefined;
  /** How long the cache client trusts stat and list answers (`granary mount --metadata-ttl`). */
  metadataTtlMs?: number | undefined;
}

const SOURCE_NAMES: Record<ConfigSource, string> = { flag: 'cli', env: 'env', file: 'config', default: 'default' };

/**
 * The client commands' values through the one configuration path (src/config): flags
 * typed, then GRANARY_* environment variables, then the config file's `cluster` and
 * `store` sections (`--config` or GRANARY_CONFIG), then defaults.
 */
async function resolveClientConfig(cli: CacheClientCliOptions, command: Command): Promise<{ options: CacheClientCliOptions; sourceOf: ValueSource }> {
  const configFile = cli.config;
  const [c, st] = await Promise.all([
    loadConfig('cluster', { flags: flagsFromCommand(command, Object.keys(SECTIONS.cluster)), configFile }),
    loadConfig('store', { flags: flagsFromCommand(command, Object.keys(SECTIONS.store)), configFile }),
  ]);
  const options: CacheClientCliOptions = {
    ...cli,
    etcd: c.values.etcd?.join(','),
    cluster: c.values.cluster,
    workers: c.values.workers?.join(','),
    token: c.values.token,
    tlsCa: c.values.tlsCa,
    ...Object.fromEntries(ETCD_SECURITY_KEYS.map((k) => [k, c.values[k]])),
    s3Endpoint: st.values.s3Endpoint,
    s3Region: st.values.s3Region,
    s3PathStyle: st.values.s3PathStyle,
  };
  const sources = { ...st.sources, ...c.sources } as Record<string, ConfigSource>;
  return { options, sourceOf: (key) => (sources[key] === undefined ? undefined : SOURCE_NAMES[sources[key]]) };
}

/**
 * A `CacheClient` for the command's flags, ready to use: for etcd, the first list of
 * workers is in (or `ETCD_READY_TIMEOUT_MS` passed, and reads fall back to the store).
 * Without any workers, the store itself, and one line on stderr saying so.
 */
export async function openCache(cliOptions: CacheClientCliOptions, command: Command, open: OpenCacheOptions): Promise<CacheAccess> {
  const { options, sourceOf } = await resolveClientConfig(cliOptions, command);
  const source = cacheSource(options, sourceOf);
  if (source.kind === 'direct') {
    if (open.requireWorkers) {
      throw new ConfigError(`${open.commandName} needs cache workers: give --etcd URL (with --cluster NAME) or --workers URL,URL (or GRANARY_ETCD / GRANARY_WORKERS)`);
    }
    process.stderr.write(`${open.commandName}: no cache workers given (--etcd, --workers, GRANARY_ETCD, GRANARY_WORKERS); reading the store directly\n`);
    const ufs = ufsFromOptions(options);
    return { fs: ufs, client: undefined, source, close: () => ufs.close(), [Symbol.asyncDispose]: () => ufs.close() };
  }
  const ufs = ufsFromOptions(options);
  let client: CacheClient;
  try {
    client = checkUsage(
      () =>
        new CacheClient({
          ...(source.kind === 'etcd'
            ? { etcd: { endpoints: source.endpoints, cluster: source.cluster, ...etcdSecurityFrom(options) } }
            : { workers: source.urls }),
          ufs,
          ...(options.token !== undefined ? { token: options.token } : {}),
          ...(options.tlsCa !== undefined ? { tlsCa: options.tlsCa } : {}),
          ...(open.metadataTtlMs !== undefined ? { metadataTtlMs: open.metadataTtlMs } : {}),
        }),
    );
  } catch (err) {
    await ufs.close();
    throw err;
  }
  const close = async (): Promise<void> => {
    await client.close();
    await ufs.close();
  };
  try {
    if (source.kind === 'etcd') await waitForEtcd(client, source, open);
  } catch (err) {
    await close();
    throw err;
  }
  return { fs: client, client, source, close, [Symbol.asyncDispose]: close };
}

async function waitForEtcd(client: CacheClient, source: { endpoints: string[]; cluster: string }, open: OpenCacheOptions): Promise<void> {
  const ready = client.ready();
  // If the wait below gives up first, a later rejection must not go unhandled.
  ready.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const timedOut = await Promise.race([
    ready.then(() => false),
    new Promise<boolean>((resolve, reject) => {
      timer = setTimeout(() => resolve(true), ETCD_READY_TIMEOUT_MS);
      if (open.signal) {
        onAbort = () => reject(open.signal?.reason);
        if (open.signal.aborted) onAbort();
        else open.signal.addEventListener('abort', onAbort, { once: true });
      }
    }),
  ]).finally(() => {
    clearTimeout(timer);
    if (onAbort) open.signal?.removeEventListener('abort', onAbort);
  });
  if (!timedOut) return;
  const what = `etcd ${source.endpoints.join(',')} gave no list of workers for cluster ${source.cluster} within ${ETCD_READY_TIMEOUT_MS / 1000} s`;
  if (open.requireWorkers) throw new UnavailableError(what);
  process.stderr.write(`${open.commandName}: ${what}; reading the store directly\n`);
}

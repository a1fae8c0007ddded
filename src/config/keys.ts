/**
 * Every configuration key granary reads, in one place: its section, its value kind,
 * its environment variable, its flag and its default. `loadConfig` resolves a
 * section from these; docs/configuration.md lists them.
 */
import { availableParallelism } from 'node:os';
import type { z } from 'zod';
import { PROFILE_NAMES } from '../netem/fault-proxy.js';
import { bool, bytes, duration, int, list, oneOf, str, urlList, type ValueSchema } from './values.js';

const MiB = 1024 * 1024;

export interface KeySpec<T> {
  /** What the key means, for help and docs. */
  doc: string;
  schema: ValueSchema<T>;
  /** Environment variable. @default GRANARY_<SECTION>_<KEY_IN_SNAKE_CASE> */
  env?: string;
  /** Command-line flag, for messages. @default --<key-in-kebab-case> */
  flag?: string;
  /** Absent: the key is optional (undefined unless set). */
  default?: T;
}

export type SectionSpec = Record<string, KeySpec<unknown>>;

/** Identity with inference: keeps each key's value type and whether it has a default. */
function section<S extends SectionSpec>(s: S): S {
  return s;
}

export const SECTIONS = {
  demo: section({
    size: { doc: 'approximate dataset size', schema: bytes(1024, 64 * 1024 ** 3), default: 500 * 1000 * 1000 },
    files: { doc: 'Parquet files', schema: int(1, 10_000), default: 16 },
    embeddingBytes: { doc: 'width of the FixedSizeBinary `embedding` column (most of each row)', schema: bytes(1, 1 << 20), default: 1024 },
    rowGroupRows: { doc: 'rows per row group (default: about 8 MiB row groups, at least two per file)', schema: int(1) },
    epochs: { doc: 'epochs through the cache; the first is cold', schema: int(1, 100), default: 3 },
    direct: { doc: 'also read one epoch straight from the store, for comparison', schema: bool(), default: true },
    batchSize: { doc: 'rows per batch', schema: int(1, 1 << 24), default: 1024 },
    stepMs: { doc: 'simulated training step per batch, in ms', schema: int(0, 60_000), default: 10 },
    seed: { doc: 'seed of the data and of the shuffle', schema: int(0, 0xffff_ffff), default: 42 },
    workers: { doc: 'cache workers started in the demo process', schema: int(1, 16), default: 2 },
    workerMemory: { doc: 'memory tier of each worker (default: enough for the dataset)', schema: bytes(MiB) },
    profile: { doc: 'network profile of the emulated store', schema: oneOf(PROFILE_NAMES), default: 'trainingNode' },
    etcd: { doc: 'etcd endpoints: workers register there and the loader finds them there (default: static membership)', schema: urlList() },
    cluster: { doc: 'cluster name in etcd (default: a fresh demo-<random>)', schema: str() },
    prefetch: { doc: 'partitions the loader fetches ahead', schema: int(1, 256), default: 4 },
    fetchConcurrency: { doc: 'partition fetches in flight', schema: int(1, 256), default: 4 },
    decodeThreads: { doc: 'Parquet decode threads', schema: int(1, 256), default: Math.max(1, availableParallelism() - 1) },
    out: { doc: 'directory for the chart (demo.svg) and results (demo.json)', schema: str(), default: '.granary-demo' },
    storeDir: { doc: 'directory of the store\'s files (default: a fresh temp dir, removed at the end)', schema: str() },
    keep: { doc: 'keep the store\'s files at the end', schema: bool(), default: false },
  }),
  worker: section({
    host: { doc: 'address to listen on', schema: str(), default: '127.0.0.1' },
    port: { doc: 'port to listen on; 0 picks a free one', schema: int(0, 65_535), default: 7070 },
    id: { doc: 'worker id (default: a random UUID)', schema: str() },
    advertiseUrl: { doc: 'URL clients use to reach this worker', schema: str() },
    memory: { doc: 'memory tier budget', schema: bytes(1), default: 256 * MiB },
    diskDir: { doc: 'directory of the disk tier (default: no disk tier)', schema: str() },
    disk: { doc: 'disk tier budget (with diskDir)', schema: bytes(1), default: 1024 * MiB },
    shmDir: { doc: 'keep the memory tier as page files in this tmpfs directory, read directly by clients on this host (not with diskDir)', schema: str() },
    shmGroup: { doc: 'group (name or gid) that may read shmDir too (default: the worker user only)', schema: str() },
    pageSize: { doc: 'cache page size; every worker of a cluster should agree', schema: bytes(1, 0x7fff_ffff), default: MiB },
    policy: { doc: 'eviction policy of both tiers', schema: oneOf(['lru', 's3fifo'] as const), default: 'lru' },
    leaseTtl: { doc: 'etcd lease TTL in seconds', schema: int(2, 3600), default: 10 },
    allow: { doc: 'store URL prefixes the worker may read (default: s3://, and file:// under fileRoot; http(s):// only when listed)', schema: list() },
    fileRoot: { doc: 'serve file:// URLs under this directory (default: file:// off)', schema: str() },
    insecure: { doc: 'allow a non-loopback host without a token (logged as a warning at start)', schema: bool(), default: false },
    metadataTtl: { doc: 'how long stat and list answers are cached', schema: duration(0), default: 10_000 },
    tlsCert: { doc: 'PEM certificate to serve HTTPS with (with tlsKey; default: plain HTTP)', schema: str() },
    tlsKey: { doc: 'PEM private key of tlsCert', schema: str() },
    headersTimeout: { doc: 'a connection must send its request headers within this long, else 408 and closed', schema: duration(1), default: 10_000 },
    requestTimeout: { doc: 'a connection must send a whole request within this long (at least headersTimeout)', schema: duration(1), default: 60_000 },
    maxRead: { doc: 'largest byte range one read request may ask for (larger: 400 GRANARY_ERR_RANGE_TOO_LARGE)', schema: bytes(1), default: 256 * MiB },
    maxRequests: { doc: 'requests handled at once in total; the excess is answered 503 GRANARY_ERR_BUSY with Retry-After', schema: int(1), default: 1024 },
    maxRequestsPerConnection: { doc: 'requests handled at once on one connection (pipelining); the excess as above', schema: int(1), default: 16 },
  }),
  cluster: section({
    etcd: { doc: 'etcd client URLs', schema: urlList(), env: 'GRANARY_ETCD' },
    cluster: { doc: 'cluster name: workers live under /granary/<name>/workers/', schema: str(), env: 'GRANARY_CLUSTER', default: 'default' },
    workers: { doc: 'worker URLs, instead of etcd', schema: urlList(), env: 'GRANARY_WORKERS' },
    token: { doc: 'bearer token the workers require', schema: str(), env: 'GRANARY_TOKEN' },
    etcdUser: { doc: 'etcd user, for an etcd with auth enabled', schema: str(), env: 'GRANARY_ETCD_USER' },
    etcdPassword: { doc: 'etcd password (no flag: a command line shows in ps)', schema: str(), env: 'GRANARY_ETCD_PASSWORD' },
    etcdPasswordFile: { doc: 'file holding the etcd password', schema: str(), env: 'GRANARY_ETCD_PASSWORD_FILE' },
    etcdCa: { doc: 'PEM CA file that signed etcd\'s certificate (https:// endpoints)', schema: str(), env: 'GRANARY_ETCD_CA' },
    etcdCert: { doc: 'PEM client certificate for etcd (--client-cert-auth)', schema: str(), env: 'GRANARY_ETCD_CERT' },
    etcdKey: { doc: 'PEM private key of etcdCert', schema: str(), env: 'GRANARY_ETCD_KEY' },
    tlsCa: { doc: 'PEM CA that signed the workers\' certificates (https:// workers; default: the system CAs)', schema: str(), env: 'GRANARY_TLS_CA' },
  }),
  store: section({
    s3Endpoint: { doc: 'S3-compatible endpoint for s3:// URLs', schema: str(), env: 'GRANARY_S3_ENDPOINT' },
    s3Region: { doc: 'S3 region (default: AWS_REGION, else us-east-1)', schema: str(), env: 'GRANARY_S3_REGION' },
    s3PathStyle: { doc: 'address buckets as endpoint/bucket/key', schema: bool(), env: 'GRANARY_S3_PATH_STYLE' },
  }),
};

export type SectionName = keyof typeof SECTIONS;

/** The resolved values of a section: keys with a default are always set. */
export type SectionValues<S extends SectionSpec> = {
  [K in keyof S]: S[K] extends { default: unknown } ? z.output<S[K]['schema']> : z.output<S[K]['schema']> | undefined;
};

export type ConfigValues<N extends SectionName> = SectionValues<(typeof SECTIONS)[N]>;

function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
}

/** The environment variable of a key. */
export function envName(sectionName: SectionName, key: string): string {
  const spec = (SECTIONS[sectionName] as SectionSpec)[key];
  return spec?.env ?? `GRANARY_${sectionName.toUpperCase()}_${snake(key)}`;
}

/** The command-line flag of a key. */
export function flagName(sectionName: SectionName, key: string): string {
  const spec = (SECTIONS[sectionName] as SectionSpec)[key];
  return spec?.flag ?? `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The environment variable naming the config file (when no `--config` is given). */
export const CONFIG_ENV = 'GRANARY_CONFIG';

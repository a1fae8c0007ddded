/** The options of `startWorker` and the types a worker hands back. */
import type { UfsOptions } from '../ufs/router.js';
import type { UnderFileSystem } from '../ufs/types.js';
import type { EvictionPolicyName } from './eviction.js';
import type { WorkerHintOptions, WorkerHintStats } from './hints.js';
import type { EtcdSecurityOptions } from './etcd-security.js';
import type { ShortCircuitInfo } from './short-circuit-tier.js';
import type { WorkerLimitOptions } from './worker-limits.js';
import type { WorkerTlsOptions } from './worker-tls.js';

export interface WorkerOptions extends WorkerLimitOptions {
  /**
   * Address to bind. Anything but loopback needs a `token` (or `insecure: true`).
   * @default '127.0.0.1'
   */
  host?: string;
  /** Port; 0 picks a free one. @default 0 */
  port?: number;
  /** Worker id, stable across restarts if you want a restarted worker to own the same keys. @default a random UUID */
  id?: string;
  /** URL that clients should use to reach this worker. @default `http://<host>:<port>` (`https://` with `tls`) */
  advertiseUrl?: string;
  /** Page size in bytes; every worker and client of a cluster should agree. @default 1 MiB */
  pageSize?: number;
  /** Memory tier budget in bytes. @default 256 MiB */
  memoryBytes?: number;
  /**
   * Directory of the disk tier; no disk tier when absent. A restart on the same directory
   * finds its pages again. One worker per directory: a lock with a heartbeat refuses a
   * second (`GRANARY_ERR_CONFIG`); a worker killed without closing leaves a lock that
   * is taken over once it missed 4 heartbeats (20 s).
   */
  diskDir?: string;
  /** Disk tier budget in bytes. @default 1 GiB when `diskDir` is set */
  diskBytes?: number;
  /**
   * Keep the memory tier as page files in this directory on a tmpfs, so clients on the
   * same host read pages straight from it (short-circuit reads, docs/cache.md). The tier
   * keeps `memoryBytes` (page files with their headers) and survives `drop_caches` and a
   * restart of the worker. Not with `diskDir`. Created 0700 (files 0600) unless `shmGroup`.
   * @default undefined (the memory tier lives in the worker's heap)
   * @example '/dev/shm/granary-w1'
   */
  shmDir?: string;
  /**
   * A group (name or gid) that may read `shmDir` too: the directory becomes 02750 and its
   * files 0640, owned by that group. The worker's user must belong to it.
   * @default undefined (the worker's user only)
   */
  shmGroup?: string | number;
  /** Eviction policy of both tiers. @default 'lru' */
  policy?: EvictionPolicyName;
  /** How the worker reaches the store (same options as `createUfs`), or a ready store client. */
  ufs?: UfsOptions | UnderFileSystem;
  /** Register in etcd under `/granary/<cluster>/workers/<id>` with a lease; absent: no registration (static membership). */
  etcd?: {
    endpoints: string[];
    cluster?: string;
    /** Lease TTL in seconds (at least 2): a dead worker leaves the ring after about this long. @default 10 */
    ttlSeconds?: number;
    /** How long `startWorker` waits for the first registration before it returns anyway (it keeps trying). @default 10_000 */
    registerTimeoutMs?: number;
  } & EtcdSecurityOptions;
  /** Require `Authorization: Bearer <token>` on every endpoint but `/healthz` (compared in constant time). */
  token?: string;
  /**
   * Store URL prefixes this worker may read; any other URL is refused with
   * `GRANARY_ERR_FORBIDDEN_PREFIX`. Without it: `s3://` and (with `fileRoot`) `file://`.
   * `http(s)://` stores are read only under a prefix listed here; `'https://'` allows any
   * public host, and loopback, link-local or private addresses only when a prefix names the host.
   * Host names are resolved and checked before each request; when `ufs` is given as
   * options (not a ready client) the worker's own connections check them again at
   * connect time and follow no redirects.
   * @default undefined (s3:// only, plus file:// under `fileRoot`)
   * @example ['s3://datasets/train/', 'https://data.example.com/public/']
   */
  allow?: string[];
  /**
   * Serve `file://` URLs under this directory (`..`, encoded `..` and symlinks out of it
   * are refused). Without it a worker refuses every `file://` URL; clients then read
   * those files themselves.
   * @default undefined (file:// off)
   * @example '/data/datasets'
   */
  fileRoot?: string;
  /**
   * Start on a non-loopback `host` without a `token`. Logged as a warning at start.
   * @default false
   */
  insecure?: boolean;
  /** How long stat and list answers are cached. @default 10_000 */
  metadataTtlMs?: number;
  /**
   * Serve HTTPS with this certificate and key (PEM files, read at start). The worker's
   * URL is then `https://…`; clients verify the certificate (`tlsCa`, or the system CAs).
   * @default undefined (plain HTTP)
   * @example { certFile: '/etc/granary/worker.crt', keyFile: '/etc/granary/worker.key' }
   */
  tls?: WorkerTlsOptions;
  /** Largest byte range one read request may ask for; a larger one is answered 400 `GRANARY_ERR_RANGE_TOO_LARGE`. @default 256 MiB */
  maxReadBytes?: number;
  /** Largest run of consecutive missing pages fetched from the store in one request. @default 8 */
  fetchRunPages?: number;
  /**
   * Clairvoyant hints (`POST /v1/hints`, docs/hints.md): prefetch the pages jobs announce,
   * and evict by their next use (Belady; LRU for unhinted pages) when `policy` is `'lru'`.
   * `false` refuses hints and keeps the plain policy. @default {} (on)
   */
  hints?: boolean | WorkerHintOptions;
  /** Abort starting: `startWorker` rejects with the signal's reason and releases what it opened. */
  signal?: AbortSignal;
}

export interface WorkerInfoResponse {
  id: string;
  url: string;
  pageSize: number;
  capacity: { memoryBytes: number; diskBytes: number };
  usage: { memoryBytes: number; diskBytes: number; memoryPages: number; diskPages: number };
  counters: { hits: number; misses: number; storeRequests: number; bytesServed: number; bytesFromStore: number; evictions: number };
  /** Hint registry, prefetch and read-class counters; absent when hints are off. */
  hints?: WorkerHintStats;
  /** Where same-host clients read pages directly; absent without `shmDir`. */
  shortCircuit?: ShortCircuitInfo;
}

export interface CacheWorker extends AsyncDisposable {
  readonly id: string;
  readonly url: string;
  readonly pageSize: number;
  info(): WorkerInfoResponse;
  /** Stop accepting requests, revoke the etcd lease (clients drop this worker at once), finish in-flight requests. Idempotent. */
  close(): Promise<void>;
  /** Stop at once: cut connections, abort store reads (with `err`), release the page store. Idempotent. */
  destroy(err?: Error): Promise<void>;
}

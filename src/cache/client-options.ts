/**
 * What a `CacheClient` is built from: the options as users give them, and the checks
 * and defaults that turn them into settings.
 */
import { InvalidArgumentError } from '../errors.js';
import type { UfsOptions } from '../ufs/router.js';
import type { RequestCounts, UnderFileSystem } from '../ufs/types.js';
import { optionalInt } from '../util/validate.js';
import type { BreakerOptions } from './breaker.js';
import type { EtcdSecurityOptions } from './etcd-security.js';
import { EtcdMembership, StaticMembership, type Membership } from './membership.js';
import type { ShortCircuitStats } from './short-circuit.js';

const MiB = 1024 * 1024;

export interface CacheClientOptions {
  /** Find workers in etcd (watching `/granary/<cluster>/workers/`). */
  etcd?: { endpoints: string[]; cluster?: string } & EtcdSecurityOptions;
  /** Or a fixed list of worker URLs. */
  workers?: string[];
  /** The store, for fallback reads, writes and deletes: `createUfs` options or a ready client. */
  ufs?: UfsOptions | UnderFileSystem;
  /** Bearer token the workers require. */
  token?: string;
  /**
   * PEM file of the CA that signed the workers' certificates (`https://` workers). Without
   * it the system's CAs are trusted; a worker whose certificate does not verify is
   * never read from (its parts come from the store). Verification cannot be turned off.
   * @default undefined (system CAs)
   * @example '/etc/granary/ca.crt'
   */
  tlsCa?: string;
  /**
   * Bytes of an object placed together on one worker. Smaller blocks spread a large file
   * over more workers. Every client of a cluster should use the same value.
   * @default 16 MiB
   */
  blockSize?: number;
  /** A read larger than this is split into parallel requests. @default 4 MiB */
  partSize?: number;
  /** Requests in flight to workers, over all reads. @default 32 */
  concurrency?: number;
  /** How long stat and list answers are trusted. @default 10_000 */
  metadataTtlMs?: number;
  /** A worker request slower than this fails over to the store. @default 10_000 */
  requestTimeoutMs?: number;
  /** Circuit breaker per worker. */
  breaker?: BreakerOptions;
  /** Workers tried per block before the store (1 = the owner only). @default 1 */
  replicas?: number;
  /**
   * A page cache inside this process, checked before any worker (like a client-side
   * cache of the system granary is modelled on). Off unless given.
   */
  localCache?: { memoryBytes: number; diskDir?: string; diskBytes?: number; pageSize?: number };
  /**
   * Read pages of workers on this host straight from their tmpfs tier (`shmDir`), with
   * no HTTP request, once the worker's nonce file proves the directory is shared
   * (docs/cache.md). Any page that is absent or fails its checks goes over HTTP.
   * @default true, unless GRANARY_SHORT_CIRCUIT is 0, false, no or off
   */
  shortCircuit?: boolean;
  /**
   * Verify every page a worker sends against the CRC-32 the worker computed when it read
   * the page from the store (docs/cache.md, "Checksums"). A mismatch, or an answer without
   * checksums, is `GRANARY_ERR_CORRUPT`: counted in `stats().corrupt`, reported to the
   * worker (which drops the pages), and the part is read from the store instead.
   * @default true
   */
  checksums?: boolean;
}

export interface CacheClientStats {
  /** Reads (parts) answered wholly from a cache: the local one or a worker's. */
  hits: number;
  /** Parts a worker had to read (wholly or partly) from the store. */
  misses: number;
  /** Parts read straight from the store because no worker could answer. */
  fallbacks: number;
  bytesFromCache: number;
  bytesFromUfs: number;
  /** Parts a worker sent with bytes that failed their page checksums (or without checksums): each was read from the store instead. */
  corrupt: number;
  /** Requests this client itself sent to the store (workers' own store reads not included). */
  ufsRequests: number;
  /** Requests to the store by kind, from this client. */
  ufs: RequestCounts;
  /** Parts read straight from a same-host worker's tmpfs tier, parts that fell back to HTTP, and bytes read so. */
  shortCircuit: ShortCircuitStats;
}

/** The numeric options, checked, with their defaults filled in. */
export interface ClientSettings {
  blockSize: number;
  partSize: number;
  concurrency: number;
  metadataTtlMs: number;
  requestTimeoutMs: number;
  replicas: number;
}

export function clientSettings(options: CacheClientOptions): ClientSettings {
  if (options.checksums !== undefined && typeof options.checksums !== 'boolean') {
    throw new InvalidArgumentError(`Expected \`checksums\` to be a boolean, got \`${String(options.checksums)}\` (${typeof options.checksums})`);
  }
  return {
    blockSize: optionalInt('blockSize', options.blockSize, 16 * MiB),
    partSize: optionalInt('partSize', options.partSize, 4 * MiB),
    concurrency: optionalInt('concurrency', options.concurrency, 32),
    metadataTtlMs: optionalInt('metadataTtlMs', options.metadataTtlMs, 10_000, 0),
    requestTimeoutMs: optionalInt('requestTimeoutMs', options.requestTimeoutMs, 10_000),
    replicas: optionalInt('replicas', options.replicas, 1),
  };
}

/** The membership the options name: etcd, or a fixed list (none: every read goes to the store). */
export function membershipFor(options: CacheClientOptions): Membership {
  if (options.etcd && options.workers) throw new InvalidArgumentError('Give `etcd` or `workers`, not both');
  return options.etcd
    ? new EtcdMembership({
        endpoints: options.etcd.endpoints,
        cluster: options.etcd.cluster ?? 'default',
        auth: options.etcd.auth,
        tls: options.etcd.tls,
      })
    : new StaticMembership(options.workers ?? []);
}


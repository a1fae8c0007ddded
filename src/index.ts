// The public API of granary, and nothing else: every name users import from 'granary'.
// Test and demo tooling (dataset generators, the fault proxy, an embedded S3 store,
// CLI config loading) is the second entry point, 'granary/testing' (src/testing.ts).
// test/api/exports.test.ts lists both, so a new export is a decision, not an accident.

export {
  ErrorCodes,
  GranaryError,
  InvalidUrlError,
  UnsupportedSchemeError,
  UnsupportedOperationError,
  InvalidArgumentError,
  NotFoundError,
  NoSuchBucketError,
  AccessDeniedError,
  VersionChangedError,
  RangeNotSatisfiableError,
  PathEscapeError,
  TimeoutError,
  UnavailableError,
  ClosedError,
  CorruptDataError,
  DecodeError,
  SchemaMismatchError,
  UnknownColumnError,
  BadRequestError,
  ForbiddenPrefixError,
  UnauthorizedError,
  ConfigError,
  InternalError,
  MissingDependencyError,
  AlreadyExistsError,
  WorkerBusyError,
  RangeTooLargeError,
  errorFromCode,
  isGranaryError,
  isRetryableError,
  type GranaryErrorCode,
  type GranaryErrorOptions,
} from './errors.js';

export type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, UnderFileSystem, WriteData } from './ufs/types.js';
export { createUfs, UfsRouter, type UfsOptions } from './ufs/router.js';
export { S3Ufs, type S3Credentials, type S3UfsOptions } from './ufs/s3.js';
export { LocalUfs, type LocalUfsOptions } from './ufs/local.js';
export { HttpUfs, type HttpStats, type HttpUfsOptions } from './ufs/http.js';

export { startWorker, type CacheWorker, type WorkerOptions, type WorkerInfoResponse, type LoadJob } from './cache/worker.js';
export type { HintAccess, HintRequest, WorkerHintOptions, WorkerHintStats } from './cache/hints.js';
export type { BreakerOptions } from './cache/breaker.js';
export { CacheClient, type CacheClientOptions, type CacheClientStats } from './cache/client.js';
export type { WorkerInfo } from './cache/membership.js';
export type { EtcdAuthOptions, EtcdSecurityOptions, EtcdTlsOptions } from './cache/etcd-security.js';
export type { WorkerTlsOptions } from './cache/worker-tls.js';
export type { WorkerLimitOptions } from './cache/worker-limits.js';
export type { EvictionPolicyName } from './cache/eviction.js';

export { Dataset, DecodePool, ufsFromSpec, ufsSpecOf } from './loader/index.js';
export type {
  BatchStream,
  BatchesOptions,
  DatasetOptions,
  DatasetReadStats,
  DecodeCallOptions,
  DecodePoolOptions,
  FilesDatasetOptions,
  LoaderState,
  PartitionInfo,
  ReadStatsOptions,
  StreamStats,
  UfsSpec,
} from './loader/index.js';
export type { LoaderHintOptions } from './loader/hints.js';

// The order is part of the contract (a pure function of seed, epoch and world size):
// these let a user compute what each rank reads without a loader (docs/shuffle.md).
export { planEpoch, permutation } from './shuffle/index.js';
export type { BatchRows, EpochPlanInput, RankPlan, ShuffleMode } from './shuffle/types.js';

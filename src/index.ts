// The public API of granary, and nothing else.

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
  errorFromCode,
  isGranaryError,
  isRetryableError,
  type GranaryErrorCode,
} from './errors.js';

export type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, UnderFileSystem, WriteData } from './ufs/types.js';
export { createUfs, UfsRouter, type UfsOptions } from './ufs/router.js';
export { S3Ufs, type S3UfsOptions } from './ufs/s3.js';
export { LocalUfs, type LocalUfsOptions } from './ufs/local.js';
export { HttpUfs, type HttpUfsOptions } from './ufs/http.js';
export { MemoryUfs } from './ufs/memory.js';

export { startWorker, type CacheWorker, type WorkerOptions, type WorkerInfoResponse, type LoadJob } from './cache/worker.js';
export { CacheClient, type CacheClientOptions, type CacheClientStats } from './cache/client.js';
export { EtcdMembership, StaticMembership, type Membership, type WorkerInfo } from './cache/membership.js';
export { registerWorker, type Registration } from './cache/registration.js';
export { HashRing, ringKey } from './cache/ring.js';
export { PageStore, type PageStoreOptions, type PageStoreStats } from './cache/page-store.js';
export type { EvictionPolicy, EvictionPolicyName } from './cache/eviction.js';

export { Dataset, DecodePool, ufsFromSpec, ufsSpecOf } from './loader/index.js';
export type { BatchStream, BatchesOptions, DatasetOptions, FilesDatasetOptions, PartitionInfo, LoaderState, StreamStats, UfsSpec, DatasetReadStats } from './loader/index.js';

export { planEpoch, permutation } from './shuffle/index.js';
export type { EpochPlanInput, RankPlan, ShuffleMode, BatchRows } from './shuffle/types.js';

export { generateParquetDataset } from './gen/parquet.js';
export { generateArrowDataset } from './gen/arrow.js';
export { generateFileDataset } from './gen/files.js';
export type { DatasetSummary, GeneratedFile, ParquetGenOptions } from './gen/types.js';

export { loadConfig, flagsFromCommand, type LoadedConfig, type ConfigSource } from './config/index.js';
export { startFaultProxy, PROFILES, type FaultProfile, type FaultProxy } from './netem/fault-proxy.js';

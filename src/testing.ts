// 'granary/testing': tooling for tests, demos and benchmarks, not for training jobs.
// Synthetic datasets, an in-memory store, a TCP proxy that injects network faults, an
// S3 server on this machine (needs the npm package s3rver), and the CLI's config loading.
// The production API is 'granary' (src/index.ts).

export { generateParquetDataset } from './gen/parquet.js';
export { generateArrowDataset } from './gen/arrow.js';
export { generateFileDataset } from './gen/files.js';
export { verifyDataset, type VerifyOptions, type VerifyResult } from './gen/verify.js';
export type {
  ArrowGenOptions,
  CommonGenOptions,
  DatasetFormat,
  DatasetSummary,
  FileGenOptions,
  GeneratedFile,
  ParquetCodec,
  ParquetGenOptions,
  TableGenOptions,
} from './gen/types.js';

export { MemoryUfs } from './ufs/memory.js';

export {
  PROFILES,
  PROFILE_NAMES,
  startFaultProxy,
  type CutMode,
  type FaultDirection,
  type FaultProfile,
  type FaultProxy,
  type FaultProxyOptions,
  type FaultProxyStats,
  type ProfileName,
  type RefuseMode,
} from './netem/fault-proxy.js';
export { startEmbeddedS3, type EmbeddedS3, type EmbeddedS3Options } from './demo/embedded-s3.js';

export {
  flagsFromCommand,
  loadConfig,
  type ConfigSource,
  type LoadConfigOptions,
  type LoadedConfig,
  type SectionName,
  type SectionValues,
} from './config/index.js';

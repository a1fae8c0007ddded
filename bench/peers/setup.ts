/**
 * The peers bench's store: s3rver in its own process, the counting fault proxy in
 * front of it in another, the data uploaded; and the loader rows, imported from
 * bench/peers-loader.ts when that file exists.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ProfileName } from '../../src/netem/fault-proxy.js';
import type { LoaderRow, LoaderRowsOptions } from '../peers-loader.js';
import { startS3rver, type S3rverHandle } from '../../test/support/s3rver.js';
import { startProxyProcess, type ProxyProcess } from '../lib/proxy.js';
import { uploadData, type Workload } from './data.js';
import type { Cleanups } from './system.js';

export interface Store {
  s3: S3rverHandle;
  proxy: ProxyProcess;
  bucket: string;
  /** key -> sha256 hex of every uploaded object. */
  digests: Map<string, string>;
}

export async function startStore(cleanups: Cleanups, profile: ProfileName, ws: readonly Workload[], seed: number, log: (line: string) => void): Promise<Store> {
  const bucket = 'bench';
  const s3 = await startS3rver({ buckets: [bucket] });
  cleanups.add(`stop s3rver ${s3.pid}`, () => s3.close());
  const proxy = await startProxyProcess(s3.port, profile, { countRequests: true });
  cleanups.add(`stop fault proxy ${proxy.handle.pid}`, () => proxy.handle.stop());
  const t0 = Date.now();
  const digests = await uploadData(s3.endpoint, bucket, ws, seed);
  log(`uploaded ${digests.size} objects to s3rver (pid ${s3.pid}) in ${((Date.now() - t0) / 1000).toFixed(1)} s; fault proxy pid ${proxy.handle.pid} at ${proxy.url}`);
  return { s3, proxy, bucket, digests };
}

export type { LoaderRow, LoaderRowsOptions } from '../peers-loader.js';

interface LoaderModule {
  loaderRows(o: LoaderRowsOptions): Promise<LoaderRow[]>;
}

export const LOADER_MODULE = join(dirname(fileURLToPath(import.meta.url)), '..', 'peers-loader.ts');

/** The loader module, or why it is absent. */
export async function importLoader(): Promise<LoaderModule | string> {
  if (!existsSync(LOADER_MODULE)) return 'bench/peers-loader.ts does not exist yet';
  const m = (await import(pathToFileURL(LOADER_MODULE).href)) as Partial<LoaderModule>;
  return typeof m.loaderRows === 'function' ? (m as LoaderModule) : 'bench/peers-loader.ts exports no loaderRows()';
}

import { addCounts, emptyCounts } from '../ufs/counters.js';
import type { RequestCounts } from '../ufs/types.js';

/** What a dataset's store clients did: `ds.readStats()`. */
export interface DatasetReadStats {
  /** Requests sent to the store (for a `CacheClient`: its fallbacks and direct reads), summed over the dataset's clients. */
  requests: RequestCounts;
  /** Present when `fs` is a `CacheClient`: its reads served by workers and by the store. */
  cache?: { hits: number; misses: number; fallbacks: number; bytesFromCache: number; bytesFromUfs: number } | undefined;
}

interface CacheLike {
  stats(): { hits: number; misses: number; fallbacks: number; bytesFromCache: number; bytesFromUfs: number; ufs: RequestCounts };
}

/** The counters one client keeps (a store adapter's requests, or a cache client's). */
export function readStatsOf(fs: unknown): DatasetReadStats {
  const f = fs as Partial<CacheLike> & { requestCounts?: () => RequestCounts };
  if (typeof f.stats === 'function') {
    const s = f.stats();
    if (s && typeof s === 'object' && 'ufs' in s) {
      const { hits, misses, fallbacks, bytesFromCache, bytesFromUfs } = s;
      return { requests: { ...s.ufs }, cache: { hits, misses, fallbacks, bytesFromCache, bytesFromUfs } };
    }
  }
  if (typeof f.requestCounts === 'function') return { requests: f.requestCounts() };
  return { requests: emptyCounts() };
}

export function addReadStats(a: DatasetReadStats, b: DatasetReadStats): DatasetReadStats {
  const out: DatasetReadStats = { requests: addCounts(a.requests, b.requests) };
  if (a.cache || b.cache) {
    const x = a.cache ?? { hits: 0, misses: 0, fallbacks: 0, bytesFromCache: 0, bytesFromUfs: 0 };
    const y = b.cache ?? { hits: 0, misses: 0, fallbacks: 0, bytesFromCache: 0, bytesFromUfs: 0 };
    out.cache = {
      hits: x.hits + y.hits,
      misses: x.misses + y.misses,
      fallbacks: x.fallbacks + y.fallbacks,
      bytesFromCache: x.bytesFromCache + y.bytesFromCache,
      bytesFromUfs: x.bytesFromUfs + y.bytesFromUfs,
    };
  }
  return out;
}

/** `after - before`, field by field: what a client did between two `readStatsOf` snapshots. */
export function diffReadStats(after: DatasetReadStats, before: DatasetReadStats): DatasetReadStats {
  const sub = <T extends object>(a: T, b: T | undefined): T =>
    Object.fromEntries(Object.entries(a).map(([k, v]) => [k, (v as number) - (((b as Record<string, number> | undefined)?.[k]) ?? 0)])) as T;
  const out: DatasetReadStats = { requests: sub(after.requests, before.requests) };
  if (after.cache) out.cache = sub(after.cache, before.cache);
  return out;
}

/** What a pipeline's reads did: its `fs`, plus the decode threads' own clients when they read (`remoteStats`). */
export function sourceReadStats(source: { fs?: unknown; remoteStats?: DatasetReadStats | undefined }): DatasetReadStats {
  const own = readStatsOf(source.fs);
  return source.remoteStats ? addReadStats(own, source.remoteStats) : own;
}

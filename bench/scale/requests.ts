/**
 * Store requests per epoch for one dataset shape, read directly and through granary,
 * from the request sizes the code uses: S3Ufs splits a read into 8 MiB ranged GETs
 * (src/ufs/s3.ts `partSize`); CacheClient asks a worker for at most 4 MiB at a time
 * (`partSize` in src/cache/client-options.ts) and a worker fetches one missing run of
 * pages with one GET (src/cache/worker-core.ts `fetchRun`); a listing page holds 1,000
 * objects; a Parquet footer is one GET of the file's tail.
 */

/** A dataset: `objects` objects read in pieces of `readBytes` (a row group, or a whole object). */
export interface Shape {
  name: string;
  objects: number;
  readBytes: number;
}

export interface EpochRequests {
  shape: string;
  direct: { epoch: number; start: number };
  granary: { cold: number; warmLru: number; warmHints: number; start: number; listsPerEpoch: number };
  /** S3 prefix partitions (5,500 GET/s each) the peak GET rate needs. */
  partitions: { direct: number; cold: number; warm: number };
  note: string;
  binding: string;
}

const MiB = 2 ** 20;
const S3_PART = 8 * MiB;
const CLIENT_PART = 4 * MiB;
const LIST_PAGE = 1000;
/** S3's documented request rate per partitioned prefix (GET/HEAD). */
const GET_RPS_PER_PARTITION = 5500;

export function storeRequestsPerEpoch(
  s: Shape,
  o: { dataset: number; ranks: number; epochS: number; metadataTtlS: number; lruShare: number; hintsShare: number },
): EpochRequests {
  const reads = o.dataset / s.readBytes;
  const parquet = s.name.startsWith('Parquet');
  const lists = Math.ceil(s.objects / LIST_PAGE);
  const directEpoch = reads * Math.ceil(s.readBytes / S3_PART);
  // Every rank opens the dataset: lists the prefix, and reads every footer (Parquet).
  const directStart = o.ranks * (lists + (parquet ? s.objects : 0));
  const cold = reads * Math.ceil(s.readBytes / CLIENT_PART);
  // The listing is served by one worker and revalidated once per metadata TTL.
  const listsPerEpoch = lists * Math.max(1, o.epochS / o.metadataTtlS);
  const start = lists + (parquet ? s.objects : 0);
  const rate = (n: number): number => n / o.epochS;
  const partitions = {
    direct: rate(directEpoch) / GET_RPS_PER_PARTITION,
    cold: rate(cold + listsPerEpoch) / GET_RPS_PER_PARTITION,
    warm: rate(cold * o.hintsShare + listsPerEpoch) / GET_RPS_PER_PARTITION,
  };
  const note = parquet
    ? `granary's cold epoch sends ${(cold / directEpoch).toFixed(1)}× direct's GETs (4 MiB client parts vs 8 MiB ranged GETs); its job start reads each footer once instead of once per rank (${(directStart / start).toFixed(0)}× fewer requests).`
    : `one GET per object either way when cold; the listing (${lists.toLocaleString('en')} pages) is revalidated every ${o.metadataTtlS} s: ${Math.round(listsPerEpoch).toLocaleString('en')} LISTs per ${Math.round(o.epochS)} s epoch, and a listing's pages are sequential (continuation tokens), so at ~50 ms a page one listing takes ${((lists * 0.05) / 3600).toFixed(1)} h.`;
  const binding = parquet
    ? `${s.name}: the store's request rate binds first. Direct needs ${Math.ceil(partitions.direct)} S3 prefix partitions every epoch; granary's cold epoch needs ${Math.ceil(partitions.cold)}, its warm epochs ${Math.ceil(partitions.warm)} (cache holding ${o.hintsShare === 0 ? 'the whole dataset' : `part of it, hints on`}). The workers' NICs come next, then etcd, far behind.`
    : `${s.name}: listing binds first (${lists.toLocaleString('en')} sequential pages per TTL), then the store's request rate (${Math.round(rate(cold)).toLocaleString('en')} GET/s cold = ${Math.ceil(partitions.cold)} prefix partitions). Raise \`metadataTtlMs\` above the epoch length and shard the prefix; pack small objects into larger files (Parquet/tar shards) where the format allows.`;
  return {
    shape: s.name,
    direct: { epoch: directEpoch, start: directStart },
    granary: { cold, warmLru: cold * o.lruShare + listsPerEpoch, warmHints: cold * o.hintsShare + listsPerEpoch, start, listsPerEpoch },
    partitions,
    note,
    binding,
  };
}

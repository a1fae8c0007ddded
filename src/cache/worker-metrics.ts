/** The Prometheus metrics a cache worker serves on `/metrics` (docs/observability.md). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface WorkerMetrics {
  readonly registry: Registry;
  hits: Counter;
  misses: Counter;
  bytesServed: Counter;
  bytesFromStore: Counter;
  storeRequests: Counter<'kind'>;
  evictions: Gauge;
  /** Disk tier operations that failed (ENOSPC, EIO, ...) since start: each page was served from memory or the store instead. */
  diskErrors: Gauge;
  requests: Counter<'endpoint' | 'status'>;
  /** Requests refused by the worker's policy (token, allow, fileRoot, address guard), by reason. */
  refused: Counter<'reason'>;
  /** Reports from clients of pages whose bytes failed their checksum (the pages are dropped). */
  corruptReports: Counter;
  /** Page files that failed their CRCs (on read or at recovery) and were dropped. */
  corruptPages: Gauge;
  latency: Histogram<'endpoint'>;
  usage: Gauge<'tier'>;
  capacity: Gauge<'tier'>;
}

export function createWorkerMetrics(workerId: string): WorkerMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ worker: workerId });
  const r = [registry];
  const m: WorkerMetrics = {
    registry,
    hits: new Counter({ name: 'granary_worker_page_hits_total', help: 'Pages served from the cache', registers: r }),
    misses: new Counter({ name: 'granary_worker_page_misses_total', help: 'Pages read through from the store', registers: r }),
    bytesServed: new Counter({ name: 'granary_worker_bytes_served_total', help: 'Bytes sent to clients by read requests', registers: r }),
    bytesFromStore: new Counter({ name: 'granary_worker_store_bytes_total', help: 'Bytes read from the store', registers: r }),
    storeRequests: new Counter({
      name: 'granary_worker_store_requests_total',
      help: 'Requests made to the store, by kind',
      labelNames: ['kind'],
      registers: r,
    }),
    evictions: new Gauge({ name: 'granary_worker_evictions', help: 'Pages evicted since start (both tiers)', registers: r }),
    diskErrors: new Gauge({ name: 'granary_worker_disk_errors', help: 'Disk tier writes, reads and unlinks that failed since start', registers: r }),
    requests: new Counter({
      name: 'granary_worker_requests_total',
      help: 'HTTP requests, by endpoint and status',
      labelNames: ['endpoint', 'status'],
      registers: r,
    }),
    refused: new Counter({
      name: 'granary_worker_refused_total',
      help: 'Requests refused by policy (token, allow prefixes, file root, private addresses), by reason',
      labelNames: ['reason'],
      registers: r,
    }),
    corruptReports: new Counter({
      name: 'granary_worker_corrupt_reports_total',
      help: 'Client reports of pages that failed their end-to-end checksum (each drops those pages)',
      registers: r,
    }),
    corruptPages: new Gauge({ name: 'granary_worker_corrupt_pages', help: 'Page files that failed their checksums since start (dropped, refetched on demand)', registers: r }),
    latency: new Histogram({
      name: 'granary_worker_request_seconds',
      help: 'Request latency, by endpoint',
      labelNames: ['endpoint'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: r,
    }),
    usage: new Gauge({ name: 'granary_worker_cache_bytes', help: 'Bytes held, by tier', labelNames: ['tier'], registers: r }),
    capacity: new Gauge({ name: 'granary_worker_cache_capacity_bytes', help: 'Byte budget, by tier', labelNames: ['tier'], registers: r }),
  };
  collectDefaultMetrics({ register: registry });
  return m;
}

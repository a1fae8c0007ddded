import type { Command } from 'commander';
import { Agent, fetch } from 'undici';
import type { WorkerInfo } from '../cache/membership.js';
import { Paths } from '../cache/protocol.js';
import type { WorkerInfoResponse } from '../cache/worker.js';
import { ErrorCodes } from '../errors.js';
import { loadClientCa } from '../cache/worker-tls.js';
import { formatBytes, formatTable } from '../util/format.js';
import { addCacheClientOptions, openCache, type CacheClientCliOptions } from './cache-options.js';

interface WorkersOptions extends CacheClientCliOptions {
  json?: boolean | undefined;
}

/** One member of the cluster, with what its `/v1/info` said, or why it said nothing. */
export interface WorkerRow {
  id: string;
  url: string;
  /** Page hits / (hits + misses) since the worker started; null before its first read. */
  hitRate: number | null;
  info?: WorkerInfoResponse;
  error?: { code: string; message: string };
}

const INFO_TIMEOUT_MS = 5000;

async function fetchInfo(w: WorkerInfo, token: string | undefined, dispatcher: Agent): Promise<WorkerRow> {
  const row: WorkerRow = { id: w.id, url: w.url, hitRate: null };
  try {
    const res = await fetch(`${w.url}${Paths.info}`, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(INFO_TIMEOUT_MS),
      dispatcher,
    });
    const body: unknown = await res.json();
    if (!res.ok) {
      const e = body as { code?: unknown; message?: unknown };
      row.error = {
        code: typeof e.code === 'string' ? e.code : ErrorCodes.UNAVAILABLE,
        message: `${w.url}${Paths.info} answered ${res.status}${typeof e.message === 'string' ? `: ${e.message}` : ''}`,
      };
      return row;
    }
    const info = body as WorkerInfoResponse;
    row.info = info;
    const reads = info.counters.hits + info.counters.misses;
    row.hitRate = reads > 0 ? info.counters.hits / reads : null;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    row.error = { code: ErrorCodes.UNAVAILABLE, message: `${w.url}${Paths.info} unreachable: ${msg}` };
  }
  return row;
}

function usedOf(used: number, capacity: number): string {
  return capacity > 0 ? `${formatBytes(used)} / ${formatBytes(capacity)}` : '-';
}

export function registerWorkers(program: Command): void {
  const cmd = program
    .command('workers')
    .description('List the cache workers of a cluster with their usage, hit rate and store requests (from each worker\'s /v1/info).')
    .option('--json', 'print the list as JSON');
  addCacheClientOptions(cmd);
  cmd.addHelpText(
    'after',
    `
A worker that does not answer is listed with its error; the command still exits 0.

Examples:
  granary workers --etcd http://127.0.0.1:2379 --cluster train
  granary workers --workers http://127.0.0.1:7070,http://127.0.0.1:7071 --json`,
  );
  cmd.action(async (options: WorkersOptions, command: Command) => {
    await using cache = await openCache(options, command, { commandName: 'granary workers', requireWorkers: true });
    const members = cache.client?.workers() ?? [];
    // https:// workers are verified against --tls-ca (GRANARY_TLS_CA), else the system's CAs.
    const ca = loadClientCa(options.tlsCa);
    const dispatcher = new Agent(ca ? { connect: { ca } } : {});
    const rows = await Promise.all(members.map((w) => fetchInfo(w, options.token, dispatcher))).finally(() => dispatcher.close());
    if (options.json) {
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return;
    }
    if (rows.length === 0) {
      const where = cache.source.kind === 'etcd' ? `cluster ${cache.source.cluster} in etcd ${cache.source.endpoints.join(',')}` : 'the list';
      process.stdout.write(`no workers in ${where}\n`);
      return;
    }
    const body = rows.map((r) => {
      const i = r.info;
      if (!i) return [r.id, r.url, `unreachable: ${r.error?.code ?? ''}`];
      return [
        r.id,
        r.url,
        usedOf(i.usage.memoryBytes, i.capacity.memoryBytes),
        usedOf(i.usage.diskBytes, i.capacity.diskBytes),
        `${i.usage.memoryPages} / ${i.usage.diskPages}`,
        r.hitRate === null ? '-' : `${(r.hitRate * 100).toFixed(1)}%`,
        String(i.counters.storeRequests),
      ];
    });
    process.stdout.write(`${formatTable(['id', 'url', 'memory', 'disk', 'pages (mem / disk)', 'hit rate', 'store requests'], body, { leftColumns: 2 })}\n`);
    for (const r of rows) if (r.error) process.stderr.write(`granary workers: ${r.error.code}: ${r.error.message}\n`);
  });
}

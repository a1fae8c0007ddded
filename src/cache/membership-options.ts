/**
 * What a worker publishes about itself (`WorkerInfo`), and the checks every
 * membership and registration option goes through: cluster names, worker ids, worker
 * URLs and etcd endpoints. One zod schema describes `WorkerInfo`, for options
 * (`registerWorker({ info })`, `new StaticMembership([...])`) and for the JSON that
 * etcd holds under each worker key alike.
 */
import { z } from 'zod';
import { InvalidArgumentError } from '../errors.js';

/** What a worker publishes about itself; stored as JSON in its etcd key. */
export interface WorkerInfo {
  /** Stable worker id; the last segment of its etcd key. No `/`. */
  id: string;
  /** Base URL of the worker's HTTP endpoint, e.g. `http://127.0.0.1:7070`. */
  url: string;
  /** Total cache capacity (memory + disk) in bytes. */
  capacityBytes?: number;
  /** When the worker process started (ms since epoch). */
  startedAt?: number;
  /** granary version the worker runs. */
  version?: string;
  /** Host name of the machine the worker runs on. */
  host?: string;
  /** The worker's page size in bytes. */
  pageSize?: number;
  /** Free-form labels (zone, node name). */
  labels?: Record<string, string>;
}

const CLUSTER_RE = /^[A-Za-z0-9._-]{1,128}$/;
const WORKER_ID_RE = /^[A-Za-z0-9._:@-]{1,200}$/;
const WORKER_ID_EXPECTED = "1-200 characters of [A-Za-z0-9._:@-] (no '/')";

/** A value as it came in, quoted when a string, for an error message. */
export function describe(v: unknown): string {
  if (typeof v === 'string') return `${JSON.stringify(v)} (string)`;
  if (v === null) return 'null';
  if (typeof v === 'object') {
    let json: string | undefined;
    try {
      json = JSON.stringify(v);
    } catch {
      json = undefined;
    }
    return `${json === undefined ? 'an unserialisable value' : json.slice(0, 200)} (${Array.isArray(v) ? 'array' : 'object'})`;
  }
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${v.toString()} (${typeof v})`;
  if (typeof v === 'symbol') return `${v.toString()} (symbol)`;
  return typeof v === 'undefined' ? 'undefined' : `a ${typeof v}`;
}

export function validateCluster(cluster: unknown, option = 'cluster'): asserts cluster is string {
  if (typeof cluster !== 'string' || !CLUSTER_RE.test(cluster)) {
    throw new InvalidArgumentError(
      `Expected \`${option}\` to be 1-128 characters of [A-Za-z0-9._-], got ${describe(cluster)}`,
    );
  }
}

export function validateWorkerId(id: unknown, option = 'id'): asserts id is string {
  if (typeof id !== 'string' || !WORKER_ID_RE.test(id)) {
    throw new InvalidArgumentError(`Expected \`${option}\` to be ${WORKER_ID_EXPECTED}, got ${describe(id)}`);
  }
}

/** The normalised form of a worker URL, or undefined when it is not an http(s) URL without credentials, query or fragment. */
function normaliseWorkerUrl(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return undefined;
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.search !== '' || u.hash !== '' || u.username !== '') return undefined;
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

/** An http(s) URL with no query or fragment; returned without a trailing slash. */
export function validateWorkerUrl(value: unknown, option = 'url'): string {
  const url = normaliseWorkerUrl(value);
  if (url === undefined) {
    throw new InvalidArgumentError(
      `Expected \`${option}\` to be an http(s) URL without credentials, query or fragment, got ${describe(value)}`,
    );
  }
  return url;
}

/** Normalise `endpoints` (a string, comma-separated string, or array) for etcd3's `hosts`. */
export function validateEndpoints(value: unknown, option = 'endpoints'): readonly string[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
  if (!Array.isArray(list) || list.length === 0) {
    throw new InvalidArgumentError(`Expected \`${option}\` to be a non-empty list of etcd URLs, got ${describe(value)}`);
  }
  return list.map((e: unknown, i) => {
    try {
      if (typeof e !== 'string') throw new TypeError('not a string');
      const u = new URL(e);
      if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.port === '' || u.pathname !== '/') throw new TypeError('bad');
      return `${u.protocol}//${u.host}`;
    } catch {
      throw new InvalidArgumentError(
        `Expected \`${option}[${i}]\` to be an etcd client URL like http://127.0.0.1:2379, got ${describe(e)}`,
      );
    }
  });
}

function byKey([a]: [string, string], [b]: [string, string]): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * `WorkerInfo` as zod parses it: each field's `error` says what was expected. The
 * output is normalised (URL without a trailing slash, labels sorted, unknown fields
 * dropped, fixed field order), so two equal infos serialise identically.
 */
export const workerInfoSchema = z
  .object({
    id: z.string({ error: WORKER_ID_EXPECTED }).regex(WORKER_ID_RE, { error: WORKER_ID_EXPECTED }),
    url: z.unknown().transform((v, ctx) => {
      const url = normaliseWorkerUrl(v);
      if (url === undefined) {
        ctx.addIssue({ code: 'custom', message: 'an http(s) URL without credentials, query or fragment', input: v });
        return z.NEVER;
      }
      return url;
    }),
    capacityBytes: z.int({ error: 'an integer >= 0' }).min(0, { error: 'an integer >= 0' }).optional(),
    startedAt: z.number({ error: 'a finite number' }).optional(),
    version: z.string({ error: 'a string' }).optional(),
    host: z.string({ error: 'a string' }).optional(),
    pageSize: z.int({ error: 'an integer > 0' }).min(1, { error: 'an integer > 0' }).optional(),
    labels: z.record(z.string(), z.string(), { error: 'an object mapping strings to strings' }).optional(),
  }, { error: 'an object { id, url, ... }' })
  .transform((v): WorkerInfo => {
    const out: WorkerInfo = { id: v.id, url: v.url };
    if (v.capacityBytes !== undefined) out.capacityBytes = v.capacityBytes;
    if (v.startedAt !== undefined) out.startedAt = v.startedAt;
    if (v.version !== undefined) out.version = v.version;
    if (v.host !== undefined) out.host = v.host;
    if (v.pageSize !== undefined) out.pageSize = v.pageSize;
    if (v.labels !== undefined) out.labels = Object.fromEntries(Object.entries(v.labels).sort(byKey));
    return out;
  });

/** `option.path[0].to` for an issue's path under `option`. */
function issuePath(option: string, path: readonly PropertyKey[]): string {
  let out = option;
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `.${String(p)}`;
  return out;
}

/**
 * Parse a WorkerInfo with `workerInfoSchema` without throwing (for values read off the
 * wire); on failure, the message names the field under `option` (`info.capacityBytes`),
 * what it expected and what came in.
 */
export function checkWorkerInfo(value: unknown, option: string): { info: WorkerInfo } | { message: string } {
  const r = workerInfoSchema.safeParse(value, { reportInput: true });
  if (r.success) return { info: r.data };
  const issue = r.error.issues[0];
  if (issue === undefined) return { message: `Expected \`${option}\` to be a WorkerInfo, got ${describe(value)}` };
  const input = issue.path.length === 0 ? value : issue.input;
  return { message: `Expected \`${issuePath(option, issue.path)}\` to be ${issue.message}, got ${describe(input)}` };
}

/**
 * Check a WorkerInfo and return a normalised copy with only the known fields (fixed
 * field order, so two equal infos serialise identically). Throws InvalidArgumentError
 * naming `option` and the offending value.
 */
export function validateWorkerInfo(value: unknown, option = 'info'): WorkerInfo {
  const r = checkWorkerInfo(value, option);
  if ('message' in r) throw new InvalidArgumentError(r.message);
  return r.info;
}

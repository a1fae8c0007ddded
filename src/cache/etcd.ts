/**
 * The etcd plumbing that membership (the clients' watch) and registration (the
 * workers' lease) share: the client, the key layout `/granary/<cluster>/workers/<id>`,
 * the encoding of the `WorkerInfo` each key holds, which etcd errors are terminal,
 * and how long to wait before trying etcd again.
 */
import type * as Etcd3Module from 'etcd3';
import type { Etcd3 } from 'etcd3';
import { AccessDeniedError, GranaryError, UnavailableError } from '../errors.js';
import type { BackoffOptions } from '../util/retry.js';
import type { EtcdClientSecurity } from './etcd-security.js';
import { checkWorkerInfo, validateCluster, validateWorkerId, type WorkerInfo } from './membership-options.js';

/**
 * The backoff between attempts to reach etcd (list, grant, put): up to 100 ms before
 * the second, doubling, at most 2 s, so a returning etcd is noticed within seconds.
 */
export const ETCD_BACKOFF: BackoffOptions = Object.freeze({ baseMs: 100, maxMs: 2000 });

/** `/granary/<cluster>/workers/`: the prefix every worker key of a cluster lives under. */
export function workersPrefix(cluster: string): string {
  validateCluster(cluster);
  return `/granary/${cluster}/workers/`;
}

/** `/granary/<cluster>/workers/<id>` */
export function workerKey(cluster: string, id: string): string {
  validateWorkerId(id, 'info.id');
  return `${workersPrefix(cluster)}${id}`;
}

/** The value a worker key holds: its (already validated) info as JSON. */
export function encodeWorkerInfo(info: WorkerInfo): string {
  return JSON.stringify(info);
}

/**
 * Read the value of a key under `prefix`. The key is the identity: the id is its last
 * segment, and a different id inside the value is overridden. Returns the reason
 * instead of throwing for anything that is not a valid WorkerInfo: whatever another
 * program wrote under the prefix must never stop the watch.
 */
export function decodeWorkerInfo(prefix: string, key: string, value: Uint8Array): { info: WorkerInfo } | { reason: string } {
  if (!key.startsWith(prefix)) return { reason: `key ${JSON.stringify(key)} is outside ${prefix}` };
  const id = key.slice(prefix.length);
  try {
    validateWorkerId(id, 'key');
  } catch (err) {
    return { reason: (err as Error).message };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8'));
  } catch (err) {
    return { reason: `value is not JSON: ${(err as Error).message}` };
  }
  const r = checkWorkerInfo(typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? { ...raw, id } : raw, 'value');
  return 'info' in r ? r : { reason: r.message };
}

/**
 * etcd3 (with gRPC and protobufjs, ~6 MiB of heap), loaded on first use: a process
 * that never talks to etcd (a static worker list, a loader thread) does not carry it.
 */
let etcd3: typeof Etcd3Module | undefined;
let etcd3Loading: Promise<typeof Etcd3Module> | undefined;
function loadEtcd3(): Promise<typeof Etcd3Module> {
  etcd3Loading ??= import('etcd3').then((m) => (etcd3 = m));
  return etcd3Loading;
}

/**
 * An etcd3 client for granary: watch reconnects back off from 100 ms to at most 1 s
 * (etcd3's default grows to 30 s, far too slow to notice that etcd is back).
 */
export async function createEtcdClient(endpoints: readonly string[], security?: EtcdClientSecurity): Promise<Etcd3> {
  const { Etcd3: Client } = await loadEtcd3();
  return new Client({
    hosts: [...endpoints],
    faultHandling: { watchBackoff: watchBackoff(100) },
    ...(security?.auth !== undefined ? { auth: security.auth } : {}),
    ...(security?.credentials !== undefined ? { credentials: security.credentials } : {}),
  });
}

/**
 * A TLS failure that retrying cannot fix: etcd's certificate is not trusted, or etcd
 * refused ours (or our lack of one). gRPC reports these as UNAVAILABLE, like an etcd
 * that is down, so they are told apart by their text.
 */
const TLS_FAILURE_RE =
  /certificate|self[- ]signed|unable to (?:get|verify)|SSL|TLS|handshake|wrong version number|alert|unknown ca|ERR_SSL|ERR_TLS/i;

/** etcd3's backoff strategy interface: the current wait and the next strategy. */
function watchBackoff(ms: number): { readonly duration: number; next(): ReturnType<typeof watchBackoff> } {
  return { duration: ms, next: () => watchBackoff(Math.min(ms * 2, 1000)) };
}

/** An etcd with `auth enable` asked without a user: etcd3 reports it as a generic INVALID_ARGUMENT. */
const NO_USER_RE = /etcdserver: user name is empty/;

/** Errors that retrying cannot fix: bad credentials, missing permission, a refused TLS handshake, a closed client. */
export function isTerminalEtcdError(err: unknown): boolean {
  if (err instanceof GranaryError) return !(err instanceof UnavailableError);
  if (err instanceof Error && (TLS_FAILURE_RE.test(err.message) || NO_USER_RE.test(err.message))) return true;
  // No etcd3 error can exist before etcd3 is loaded.
  const m = etcd3;
  return (
    m !== undefined &&
    (err instanceof m.EtcdAuthenticationFailedError ||
      err instanceof m.EtcdInvalidAuthTokenError ||
      err instanceof m.EtcdPermissionDeniedError ||
      err instanceof m.EtcdUserNotFoundError ||
      err instanceof m.GRPCUnauthenticatedError)
  );
}

/** Wrap an etcd3 error as a coded granary error naming the endpoints and the operation. */
export function etcdError(err: unknown, endpoints: readonly string[], doing: string): GranaryError {
  if (err instanceof GranaryError) return err;
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  const msg = `etcd ${endpoints.join(',')} ${doing}: ${detail}`;
  return isTerminalEtcdError(err) ? new AccessDeniedError(msg, { cause: err }) : new UnavailableError(msg, { cause: err });
}

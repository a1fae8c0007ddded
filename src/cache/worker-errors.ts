/**
 * What a worker's answer means for the client: a coded error that belongs to the
 * request (the caller sees it), or a `WorkerFault` (the worker failed; the client
 * reads from the next replica or the store instead).
 */
import { ErrorCodes, errorFromCode } from '../errors.js';
import type { WorkerInfo } from './membership.js';
import { isWorkerFault } from './protocol.js';

/** The worker, not the request, failed: the client falls back. Never reaches a caller. */
export class WorkerFault extends Error {
  override name = 'WorkerFault';
  /**
   * The worker answered, and well, but declined this request (busy, a range over its
   * limit): the client reads the store without counting it against the worker's breaker.
   */
  readonly declined: boolean;

  constructor(message: string, options: { declined?: boolean } = {}) {
    super(message);
    this.declined = options.declined ?? false;
  }
}

/** Turn a worker's non-200 answer (status and body text) into a coded error or a `WorkerFault`. */
export function errorFromAnswer(w: WorkerInfo, statusCode: number, text: string, url: string): Error {
  let payload: { code?: unknown; message?: unknown } = {};
  try {
    payload = JSON.parse(text) as typeof payload;
  } catch {
    return new WorkerFault(`worker ${w.id} answered ${statusCode} with a malformed body for ${url}`);
  }
  const code = typeof payload.code === 'string' ? payload.code : '';
  const message = typeof payload.message === 'string' ? payload.message : `worker ${w.id} answered ${statusCode}`;
  if (code === ErrorCodes.BUSY || code === ErrorCodes.RANGE_TOO_LARGE) return new WorkerFault(`worker ${w.id}: ${statusCode} ${message}`, { declined: true });
  if (isWorkerFault(statusCode) || !code.startsWith('GRANARY_ERR_')) return new WorkerFault(`worker ${w.id}: ${statusCode} ${message}`);
  // A worker that may not read this prefix (or outside its file root), or whose
  // credentials the store refuses, is not the last word: the client's own store access may succeed.
  if (code === ErrorCodes.FORBIDDEN_PREFIX || code === ErrorCodes.PATH_ESCAPE || code === ErrorCodes.UNAUTHORIZED || code === ErrorCodes.ACCESS_DENIED) {
    return new WorkerFault(`worker ${w.id}: ${message}`);
  }
  return errorFromCode(code, message, url);
}

/** What the HTTP store's read and list paths need from the adapter: its requests, retries and counters. */
import type { Dispatcher } from 'undici';
import type { RequestCounter } from '../counters.js';
import type { FileInfo } from '../types.js';

export interface HttpContext {
  readonly counter: RequestCounter;
  readonly stats: { rangeIgnoredResponses: number; bytesDiscarded: number; retries: number };
  /** Origins seen answering a ranged GET with the whole body. */
  readonly rangeIgnoring: Set<string>;
  readonly listConcurrency: number;
  send(u: URL, method: 'GET' | 'HEAD', signal: AbortSignal, extra?: Record<string, string>): Promise<Dispatcher.ResponseData>;
  /**
   * One logical request: attempts with a per-attempt timeout, retrying transient failures.
   * `abortAttempt` cuts the attempt's transfer (its connection is closed).
   */
  withRetry<T>(kind: 'stat' | 'get' | 'list', url: string, signal: AbortSignal | undefined, attempt: (signal: AbortSignal, abortAttempt: () => void) => Promise<T>): Promise<T>;
  throwForStatus(status: number, url: string, op: string): never;
  stat(u: URL, url: string, signal: AbortSignal | undefined): Promise<FileInfo>;
  checkOpen(url: string): void;
}

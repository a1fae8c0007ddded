import type { RequestCounts } from './types.js';

export function emptyCounts(): RequestCounts {
  return { list: 0, stat: 0, get: 0, put: 0, delete: 0, bytesRead: 0, bytesWritten: 0 };
}

export function addCounts(a: RequestCounts, b: RequestCounts): RequestCounts {
  return {
    list: a.list + b.list,
    stat: a.stat + b.stat,
    get: a.get + b.get,
    put: a.put + b.put,
    delete: a.delete + b.delete,
    bytesRead: a.bytesRead + b.bytesRead,
    bytesWritten: a.bytesWritten + b.bytesWritten,
  };
}

/** Counts one adapter's requests: one increment per request sent to the store (retries included). */
export class RequestCounter {
  #counts: RequestCounts = emptyCounts();

  count(kind: 'list' | 'stat' | 'get' | 'put' | 'delete', n = 1): void {
    this.#counts[kind] += n;
  }

  read(bytes: number): void {
    this.#counts.bytesRead += bytes;
  }

  written(bytes: number): void {
    this.#counts.bytesWritten += bytes;
  }

  snapshot(): RequestCounts {
    return { ...this.#counts };
  }

  reset(): void {
    this.#counts = emptyCounts();
  }
}

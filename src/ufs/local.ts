// Placeholder: being written now; replaced by the real adapter.
import type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, WriteData } from './types.js';

export interface LocalUfsOptions {
  [key: string]: unknown;
}

export class LocalUfs implements StoreAdapter {
  readonly schemes: readonly string[] = [];
  constructor(_options: LocalUfsOptions = {}) {}
  requestCounts(): RequestCounts {
    throw new Error('not implemented');
  }
  stat(_url: string, _o?: OpOptions): Promise<FileInfo> {
    throw new Error('not implemented');
  }
  list(_url: string, _o?: OpOptions): AsyncIterable<FileInfo> {
    throw new Error('not implemented');
  }
  read(_url: string, _offset: number, _length: number, _o?: ReadOptions): Promise<Uint8Array> {
    throw new Error('not implemented');
  }
  write(_url: string, _data: WriteData, _o?: OpOptions): Promise<FileInfo> {
    throw new Error('not implemented');
  }
  delete(_url: string, _o?: OpOptions): Promise<void> {
    throw new Error('not implemented');
  }
  close(): Promise<void> {
    throw new Error('not implemented');
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

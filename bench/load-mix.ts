/** What `npm run bench -- load` asks its client processes to do, and what they answer. */
import type { S3UfsOptions } from '../src/ufs/s3/options.js';

export interface LoadClientConfig {
  workers: string[];
  s3: S3UfsOptions;
  hot: { url: string; size: number }[];
  cold: { url: string; size: number }[];
  listPrefix: string;
  clients: number;
  seconds: number;
  seed: number;
}

export const KINDS = ['cached-small', 'cached-large', 'uncached-small', 'uncached-large', 'stat', 'list'] as const;
export type Kind = (typeof KINDS)[number];
/** Cumulative weights of the mix, in percent. */
export const MIX: [Kind, number][] = [
  ['cached-small', 40],
  ['cached-large', 55],
  ['uncached-small', 70],
  ['uncached-large', 85],
  ['stat', 95],
  ['list', 100],
];

export interface LoadClientResult {
  ops: Record<Kind, number>;
  latenciesMs: Record<Kind, number[]>;
  errors: number;
  errorSamples: string[];
  bytes: number;
}


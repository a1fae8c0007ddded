/**
 * The reading process of the peers bench, one per contender and workload, so no
 * reader shares an event loop with a server or with the harness. It reads as a user
 * would: list the prefix, then read every object whole, in a seeded shuffled order,
 * with N concurrent readers. argv: one JSON `ReaderConfig`.
 *
 * Protocol (IPC in, stdout out): `READY {}`; on `{ type: 'pass' }` it runs a pass and
 * prints `RESULT { phase: 'stopped', ... }` as the clock stops; on `{ type: 'verify' }`
 * it hashes what it read (outside the clock) and prints `RESULT { phase: 'verified',
 * digests }`, then drops the bytes.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { CacheClient } from '../../src/cache/client.js';
import { createUfs } from '../../src/ufs/router.js';
import type { UnderFileSystem } from '../../src/ufs/types.js';
import { announceReady, announceResult, exitWithParent } from '../lib/child.js';
import { seededShuffle } from './data.js';

export type ReaderConfig =
  | { mode: 'sdk'; endpoint: string; bucket: string; prefix: string; concurrency: number; seed: number }
  | { mode: 'granary'; storeEndpoint: string; workers: string[]; bucket: string; prefix: string; concurrency: number; seed: number }
  | { mode: 'files'; mount: string; prefix: string; concurrency: number; seed: number };

export interface PassStopped {
  phase: 'stopped';
  wallS: number;
  files: number;
  bytes: number;
  listed: number;
}

export interface PassVerified {
  phase: 'verified';
  /** key (relative to the bucket) -> sha256 hex of the bytes read. */
  digests: Record<string, string>;
}

const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

/** How a contender lists and reads; keys are relative to the bucket. */
interface Access {
  list(): Promise<string[]>;
  read(key: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

function sdkAccess(c: Extract<ReaderConfig, { mode: 'sdk' }>): Access {
  const agent = new http.Agent({ keepAlive: true, maxSockets: c.concurrency });
  const s3 = new S3Client({
    endpoint: c.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: CREDENTIALS,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { httpAgent: agent },
  });
  return {
    async list() {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const r = await s3.send(new ListObjectsV2Command({ Bucket: c.bucket, Prefix: c.prefix, ContinuationToken: token }));
        for (const o of r.Contents ?? []) if (o.Key) keys.push(o.Key);
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
      return keys;
    },
    async read(key) {
      const r = await s3.send(new GetObjectCommand({ Bucket: c.bucket, Key: key }));
      if (!r.Body) throw new Error(`GetObject ${key}: no body`);
      return r.Body.transformToByteArray();
    },
    async close() {
      s3.destroy();
      agent.destroy();
    },
  };
}

/**
 * granary's read of one whole object: the one call a user makes. `read(url)` with
 * offset and length omitted reads the whole current version in one request.
 */
export function readWhole(fs: UnderFileSystem, url: string): Promise<Uint8Array> {
  return fs.read(url);
}

function granaryAccess(c: Extract<ReaderConfig, { mode: 'granary' }>): Access {
  const ufs = createUfs({ s3: { endpoint: c.storeEndpoint, region: 'us-east-1', forcePathStyle: true, credentials: CREDENTIALS } });
  const fs = new CacheClient({ workers: c.workers, ufs });
  const base = `s3://${c.bucket}/`;
  return {
    async list() {
      const keys: string[] = [];
      for await (const f of fs.list(`${base}${c.prefix}`)) keys.push(f.url.slice(base.length));
      return keys;
    },
    read: (key) => readWhole(fs, `${base}${key}`),
    async close() {
      await fs.close();
      await ufs.close();
    },
  };
}

function filesAccess(c: Extract<ReaderConfig, { mode: 'files' }>): Access {
  return {
    async list() {
      const root = join(c.mount, c.prefix);
      const entries = await readdir(root, { recursive: true, withFileTypes: true });
      return entries.filter((e) => e.isFile()).map((e) => relative(c.mount, join(e.parentPath, e.name)));
    },
    read: (key) => readFile(join(c.mount, key)),
    async close() {},
  };
}

const config = JSON.parse(process.argv[2] ?? '{}') as ReaderConfig;
const access = config.mode === 'sdk' ? sdkAccess(config) : config.mode === 'granary' ? granaryAccess(config) : filesAccess(config);
let held = new Map<string, Uint8Array>();
let passes = 0;

async function pass(): Promise<PassStopped> {
  held = new Map();
  const t0 = performance.now();
  const keys = (await access.list()).sort();
  const order = seededShuffle(keys, config.seed + passes++);
  let next = 0;
  let bytes = 0;
  const reader = async (): Promise<void> => {
    for (let i = next++; i < order.length; i = next++) {
      const key = order[i]!;
      const b = await access.read(key);
      bytes += b.byteLength;
      held.set(key, b);
    }
  };
  await Promise.all(Array.from({ length: config.concurrency }, reader));
  const wallS = (performance.now() - t0) / 1000;
  return { phase: 'stopped', wallS, files: held.size, bytes, listed: keys.length };
}

function verify(): PassVerified {
  const digests: Record<string, string> = {};
  for (const [key, b] of held) digests[key] = createHash('sha256').update(b).digest('hex');
  held = new Map();
  return { phase: 'verified', digests };
}

let queue = Promise.resolve();
process.on('message', (m: { type?: string }) => {
  queue = queue.then(async () => {
    try {
      if (m.type === 'pass') announceResult(await pass());
      else if (m.type === 'verify') announceResult(verify());
    } catch (err) {
      announceResult({ phase: 'error', message: (err as Error).stack ?? String(err) });
    }
  });
});
exitWithParent(() => access.close());
announceReady({ pid: process.pid });

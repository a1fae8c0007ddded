/**
 * The peers bench's data: workloads, seeded random object bytes, the upload to the
 * store (straight to s3rver, not through the proxy), each object's sha256, and the
 * seeded shuffle the readers use.
 */
import { createCipheriv, createHash } from 'node:crypto';
import http from 'node:http';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';

export const MiB = 1024 * 1024;
export const KiB = 1024;

export interface Workload {
  /** `w1`, `w2`: also the key prefix. */
  id: string;
  title: string;
  objects: number;
  objectBytes: number;
  /** How its rate is reported. */
  unit: 'MiB/s' | 'files/s';
}

export function workloads(quick: boolean): Workload[] {
  return quick
    ? [
        { id: 'w1', title: 'W1 4 x 16 MiB (quick)', objects: 4, objectBytes: 16 * MiB, unit: 'MiB/s' },
        { id: 'w2', title: 'W2 120 x 100 KiB (quick)', objects: 120, objectBytes: 100 * KiB, unit: 'files/s' },
      ]
    : [
        { id: 'w1', title: 'W1 8 x 64 MiB', objects: 8, objectBytes: 64 * MiB, unit: 'MiB/s' },
        { id: 'w2', title: 'W2 2,000 x 100 KiB', objects: 2000, objectBytes: 100 * KiB, unit: 'files/s' },
      ];
}

export function keyOf(w: Workload, i: number): string {
  return `${w.id}/${String(i).padStart(5, '0')}.bin`;
}

/** Deterministic pseudo-random bytes for object `name`: AES-CTR over zeros, keyed by a hash of seed and name. */
export function seededBytes(seed: number, name: string, size: number): Buffer {
  const key = createHash('sha256').update(`${seed}:${name}`).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

/** A 32-bit seeded PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A Fisher-Yates shuffle of a copy of `xs`, a pure function of `seed`. */
export function seededShuffle<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  const r = prng(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * Upload every workload's objects straight to s3rver, 8 at a time; returns each
 * key's sha256 (hex).
 */
export async function uploadData(endpoint: string, bucket: string, ws: readonly Workload[], seed: number): Promise<Map<string, string>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const s3 = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { httpAgent: agent },
  });
  const digests = new Map<string, string>();
  const jobs = ws.flatMap((w) => Array.from({ length: w.objects }, (_, i) => ({ key: keyOf(w, i), size: w.objectBytes })));
  let next = 0;
  const uploader = async (): Promise<void> => {
    for (let j = jobs[next++]; j !== undefined; j = jobs[next++]) {
      const body = seededBytes(seed, j.key, j.size);
      digests.set(j.key, createHash('sha256').update(body).digest('hex'));
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: j.key, Body: body, ContentLength: body.byteLength }));
    }
  };
  try {
    await Promise.all(Array.from({ length: 8 }, uploader));
  } finally {
    s3.destroy();
    agent.destroy();
  }
  return digests;
}

/**
 * Store connections are reused: small reads through one adapter, sequential or 8 at a
 * time, open at most as many connections as there are reads in flight. Counted at a
 * TCP proxy in front of the store (its accepts are the adapter's new connections).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpUfs } from '../../src/ufs/http.js';
import { S3Ufs } from '../../src/ufs/s3.js';
import type { UnderFileSystem } from '../../src/ufs/types.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startHttpServer, type TestHttpServer } from '../support/http-server.js';
import { startS3rver, type S3rverHandle } from '../support/s3rver.js';

const N = 200;
const SIZE = 10_000;

async function readAll(urls: readonly string[], concurrency: number, read: (u: string) => Promise<Uint8Array>): Promise<number> {
  const queue = [...urls];
  let bytes = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let u = queue.shift(); u !== undefined; u = queue.shift()) {
        const got = await read(u);
        bytes += got.byteLength;
      }
    }),
  );
  return bytes;
}

function connectionCases(name: string, setup: () => Promise<{ ufs: UnderFileSystem; proxy: FaultProxy; urls: string[]; close(): Promise<void> }>): void {
  describe(`${name}: connection reuse`, () => {
    let env: Awaited<ReturnType<typeof setup>>;
    beforeAll(async () => {
      env = await setup();
    }, 60_000);
    afterAll(async () => {
      await env.close();
    });

    for (const [label, read] of [
      ['ranged reads', (ufs: UnderFileSystem, u: string) => ufs.read(u, 0, SIZE)],
      ['whole-object reads', (ufs: UnderFileSystem, u: string) => ufs.read(u)],
      ['stats', async (ufs: UnderFileSystem, u: string) => new Uint8Array((await ufs.stat(u)).size)],
    ] as const) {
      it(`opens at most 8 connections for ${N} sequential and ${N} 8-concurrent ${label}`, async () => {
        const before = env.proxy.stats().connections;
        expect(await readAll(env.urls, 1, (u) => read(env.ufs, u))).toBe(N * SIZE);
        expect(await readAll(env.urls, 8, (u) => read(env.ufs, u))).toBe(N * SIZE);
        expect({ newConnections: env.proxy.stats().connections - before }).toEqual({ newConnections: expect.toSatisfy((n: number) => n <= 8) as number });
      }, 60_000);
    }
  });
}

for (const leanReads of [true, false]) connectionCases(`S3 (s3rver, ${leanReads ? 'lean' : 'SDK'} reads)`, async () => {
  const s3: S3rverHandle = await startS3rver({ buckets: ['conn'] });
  const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: s3.port } });
  const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
  const writer = new S3Ufs({ endpoint: s3.endpoint, credentials });
  const urls = Array.from({ length: N }, (_, i) => `s3://conn/obj-${i}.bin`);
  const queue = [...urls];
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let u = queue.shift(); u !== undefined; u = queue.shift()) await writer.write(u, randomBytes(SIZE));
  }));
  await writer.close();
  const ufs = new S3Ufs({ endpoint: proxy.url, credentials, leanReads });
  return {
    ufs,
    proxy,
    urls,
    async close() {
      await ufs.close();
      await proxy.close();
      await s3.close();
    },
  };
});

connectionCases('HTTP store', async () => {
  const root = await mkdtemp(join(tmpdir(), 'granary-http-conn-'));
  const urls: string[] = [];
  for (let i = 0; i < N; i++) await writeFile(join(root, `obj-${i}.bin`), randomBytes(SIZE));
  const server: TestHttpServer = await startHttpServer({ root });
  const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: server.port } });
  for (let i = 0; i < N; i++) urls.push(`${proxy.url}/obj-${i}.bin`);
  const ufs = new HttpUfs();
  return {
    ufs,
    proxy,
    urls,
    async close() {
      await ufs.close();
      await proxy.close();
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

/**
 * CPU per store request of the S3 read path: the AWS SDK called directly, the S3
 * adapter with its reads through the SDK (`leanReads: false`), and the adapter's lean
 * SigV4 requests (the default), side by side in one run against s3rver (in its own
 * process, so only the client's CPU is counted). Per mode: N sequential and N
 * 8-concurrent GETs of small objects (ranged and whole), N HEADs and full listings;
 * CPU-µs per request from `process.cpuUsage()`, and new TCP connections per pass
 * (the `net.client.socket` diagnostics channel).
 *
 *   npx tsx bench/s3-requests.ts [--objects 500] [--size-kib 100] [--rounds 2]
 *   node --cpu-prof --import tsx bench/s3-requests.ts --only sdk   # where the CPU goes
 *
 * Prints a markdown table (the last round's numbers; earlier rounds warm the JIT) and
 * writes bench/results/s3-requests.json. Every GET's bytes are checked.
 */
import { randomBytes } from 'node:crypto';
import { subscribe } from 'node:diagnostics_channel';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent } from 'node:http';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { S3Ufs } from '../src/ufs/s3.js';
import { startS3rver } from '../test/support/s3rver.js';

const { values: args } = parseArgs({
  options: {
    objects: { type: 'string', default: '500' },
    'size-kib': { type: 'string', default: '100' },
    rounds: { type: 'string', default: '2' },
    only: { type: 'string' },
  },
});
const N = Number(args.objects);
const SIZE = Math.round(Number(args['size-kib']) * 1024);
const ROUNDS = Number(args.rounds);

let sockets = 0;
subscribe('net.client.socket', () => {
  sockets++;
});

interface Client {
  get(key: string): Promise<Uint8Array>;
  whole(key: string): Promise<Uint8Array>;
  head(key: string): Promise<number>;
  list(): Promise<number>;
  close(): Promise<void>;
}

const s3 = await startS3rver({ buckets: ['bench'] });
const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
const keys = Array.from({ length: N }, (_, i) => `small/${String(i).padStart(6, '0')}.bin`);
const bodies = new Map<string, Buffer>();
{
  const w = new S3Ufs({ endpoint: s3.endpoint, credentials });
  const queue = [...keys];
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let k = queue.shift(); k !== undefined; k = queue.shift()) {
        const b = randomBytes(SIZE);
        bodies.set(k, b);
        await w.write(`s3://bench/${k}`, b);
      }
    }),
  );
  await w.close();
}

function adapter(leanReads: boolean): Client {
  const ufs = new S3Ufs({ endpoint: s3.endpoint, credentials, leanReads });
  return {
    get: (k) => ufs.read(`s3://bench/${k}`, 0, SIZE),
    whole: (k) => ufs.read(`s3://bench/${k}`),
    head: async (k) => (await ufs.stat(`s3://bench/${k}`)).size,
    list: async () => {
      let n = 0;
      for await (const _ of ufs.list('s3://bench/small/')) n++;
      return n;
    },
    close: () => ufs.close(),
  };
}

function sdk(): Client {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const c = new S3Client({
    endpoint: s3.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { httpAgent: agent },
  });
  const get = async (k: string, range: boolean): Promise<Uint8Array> => {
    const r = await c.send(new GetObjectCommand({ Bucket: 'bench', Key: k, ...(range ? { Range: `bytes=0-${SIZE - 1}` } : {}) }));
    return (r.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
  };
  return {
    get: (k) => get(k, true),
    whole: (k) => get(k, false),
    head: async (k) => (await c.send(new HeadObjectCommand({ Bucket: 'bench', Key: k }))).ContentLength ?? 0,
    list: async () => {
      let n = 0;
      let token: string | undefined;
      do {
        const p = await c.send(new ListObjectsV2Command({ Bucket: 'bench', Prefix: 'small/', ...(token ? { ContinuationToken: token } : {}) }));
        n += p.Contents?.length ?? 0;
        token = p.IsTruncated ? p.NextContinuationToken : undefined;
      } while (token);
      return n;
    },
    close: async () => {
      c.destroy();
      agent.destroy();
    },
  };
}

async function pass(concurrency: number, fn: (k: string) => Promise<void>, items: readonly string[]): Promise<{ cpuUs: number; wallMs: number; sockets: number }> {
  const queue = [...items];
  const s0 = sockets;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let k = queue.shift(); k !== undefined; k = queue.shift()) await fn(k);
    }),
  );
  const c = process.cpuUsage(c0);
  return { cpuUs: c.user + c.system, wallMs: performance.now() - t0, sockets: sockets - s0 };
}

const check = (k: string, got: Uint8Array): void => {
  if (!Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(bodies.get(k) as Buffer)) throw new Error(`wrong bytes for ${k}`);
};

const modes: Array<[string, () => Client]> = [
  ['AWS SDK directly', sdk],
  ['adapter, SDK reads', () => adapter(false)],
  ['adapter, lean reads', () => adapter(true)],
];
const rows: Array<Record<string, string | number>> = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const [name, make] of modes) {
    if (args.only !== undefined && !name.toLowerCase().includes(args.only)) continue;
    const c = make();
    const lists = Math.max(2, Math.round(N / 100));
    const results: Array<[string, number, Awaited<ReturnType<typeof pass>>]> = [
      ['ranged GET, sequential', N, await pass(1, async (k) => check(k, await c.get(k)), keys)],
      ['ranged GET, 8 concurrent', N, await pass(8, async (k) => check(k, await c.get(k)), keys)],
      ['whole GET, 8 concurrent', N, await pass(8, async (k) => check(k, await c.whole(k)), keys)],
      ['HEAD, 8 concurrent', N, await pass(8, async (k) => void (await c.head(k)), keys)],
    ];
    const pages = Math.ceil(N / 1000);
    const l = await pass(1, async () => void (await c.list()), Array.from({ length: lists }, String));
    results.push(['LIST page (full listings)', lists * pages, l]);
    await c.close();
    if (round < ROUNDS) continue;
    for (const [kind, requests, r] of results) {
      rows.push({ client: name, request: kind, requests, 'CPU-µs/request': Math.round(r.cpuUs / requests), 'wall ms': Math.round(r.wallMs), 'new connections': r.sockets });
    }
  }
}
await s3.close();

const cols = ['client', 'request', 'requests', 'CPU-µs/request', 'wall ms', 'new connections'];
console.log(`\n${N} objects of ${SIZE} bytes, s3rver on loopback (own process); round ${ROUNDS} of ${ROUNDS}\n`);
console.log(`| ${cols.join(' | ')} |\n| ${cols.map(() => '---').join(' | ')} |`);
for (const r of rows) console.log(`| ${cols.map((c) => String(r[c])).join(' | ')} |`);
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 's3-requests.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify({ objects: N, sizeBytes: SIZE, rows }, null, 2)}\n`);

/**
 * Entry of the demo's store process: s3rver and, in front of it, the fault proxy
 * with a network profile. Started by `startEmbeddedS3` (embedded-s3.ts); prints one
 * line `GRANARY_STORE_READY {"s3Port":N,"proxyPort":M}` once both listen, exits on
 * SIGTERM or when its parent goes away (the IPC channel closes).
 */
import { createRequire } from 'node:module';
import { startFaultProxy, type FaultProfile } from '../netem/fault-proxy.js';

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;

const require = createRequire(import.meta.url);
const S3rver = require(process.env.GRANARY_S3RVER_MODULE ?? 's3rver') as S3rverClass;

const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  silent: true,
  directory: process.env.GRANARY_STORE_DIR,
  configureBuckets: (JSON.parse(process.env.GRANARY_STORE_BUCKETS ?? '[]') as string[]).map((name) => ({ name })),
});

process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));

try {
  const { port } = await server.run();
  const profile = JSON.parse(process.env.GRANARY_STORE_PROFILE ?? '{}') as FaultProfile;
  const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port }, ...profile });
  process.stdout.write(`GRANARY_STORE_READY ${JSON.stringify({ s3Port: port, proxyPort: proxy.port })}\n`);
} catch (err) {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}

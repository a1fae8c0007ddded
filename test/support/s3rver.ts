/**
 * A real s3rver in a child process, on 127.0.0.1 and an ephemeral port, storing
 * into a temp dir. A child process rather than in-process because paginated
 * ListObjectsV2 needs `--openssl-legacy-provider` (s3rver's continuation tokens
 * use DES), and because a benchmark must not share its event loop with the server.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stopChild, waitForOutput } from '../../src/util/child-process.js';

export interface S3rverHandle {
  /** `http://127.0.0.1:<port>`: use with `forcePathStyle: true`. */
  endpoint: string;
  port: number;
  /** s3rver's built-in account; it verifies signatures, so other keys get 403. */
  accessKeyId: 'S3RVER';
  secretAccessKey: 'S3RVER';
  /** The directory s3rver stores objects in (removed by `close`). */
  dir: string;
  pid: number;
  /** Stop the server by PID and remove its directory. Idempotent. */
  close(): Promise<void>;
}

export interface StartS3rverOptions {
  /** Buckets to create before the server answers (default `['test']`). */
  buckets?: readonly string[];
  /** How long to wait for the server to report its port (default 20 s). */
  startTimeoutMs?: number;
}

const CHILD_SCRIPT = `
const S3rver = require(process.env.S3RVER_MODULE);
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  silent: true,
  directory: process.env.S3RVER_DIR,
  configureBuckets: JSON.parse(process.env.S3RVER_BUCKETS).map((name) => ({ name })),
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
server.run().then(
  (addr) => { process.stdout.write('S3RVER_PORT=' + addr.port + '\\n'); },
  (err) => { process.stderr.write(String(err && err.stack || err) + '\\n'); process.exit(1); },
);
`;

export async function startS3rver(options: StartS3rverOptions = {}): Promise<S3rverHandle> {
  const buckets = options.buckets ?? ['test'];
  const dir = await mkdtemp(join(tmpdir(), 'granary-s3rver-'));
  const require = createRequire(import.meta.url);
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', CHILD_SCRIPT], {
    env: {
      ...process.env,
      NODE_OPTIONS: '',
      // A bundled bench (no node_modules beside it) points this at a bundled s3rver.
      S3RVER_MODULE: process.env.GRANARY_S3RVER_MODULE ?? require.resolve('s3rver'),
      S3RVER_DIR: dir,
      S3RVER_BUCKETS: JSON.stringify(buckets),
    },
    // The IPC channel makes the child exit when this process dies without closing it.
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const pid = child.pid;
  if (pid === undefined) {
    await rm(dir, { recursive: true, force: true });
    throw new Error('s3rver child process did not start (no pid)');
  }
  let port: number;
  try {
    port = Number(await waitForOutput(child, /S3RVER_PORT=(\d+)/, options.startTimeoutMs ?? 20_000, (what, stderr) => new Error(`s3rver ${what}; stderr: ${stderr}`)));
  } catch (err) {
    await stopChild(child);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  // Keep draining so a chatty child never blocks on a full pipe.
  child.stdout?.resume();
  child.stderr?.resume();
  let closing: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    dir,
    pid,
    close() {
      closing ??= (async () => {
        await stopChild(child);
        await rm(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

/** SIGTERM by PID, then SIGKILL if it lingers (shared with the demo's embedded store). */
export { stopChild };

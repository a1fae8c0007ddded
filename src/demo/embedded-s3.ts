/**
 * A cloud store on this machine: npm `s3rver` behind the fault proxy with a network profile, both in one child process of the
 * same `node`, on 127.0.0.1 and ephemeral ports, storing into a directory.
 *
 * A child process rather than the demo's own event loop, for two reasons. The store
 * and its network must not steal time from the loader they are compared with: on a
 * 2-core machine an in-process server and proxy would make "the store is slow" mean
 * "the loader's event loop was busy", and the profile's latency and bandwidth would
 * stretch with the loader's load. And paginated ListObjectsV2 needs
 * `--openssl-legacy-provider` (s3rver encrypts continuation tokens with DES), a flag
 * a process cannot give itself. The child is tied to this one by an IPC channel and
 * exits when it goes away.
 *
 * s3rver is a development and optional peer dependency, not a dependency: installing
 * granary as a library installs no S3 server. A clone's `npm install` has it; anyone
 * else gets `GRANARY_ERR_MISSING_DEPENDENCY` saying what to install.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { MissingDependencyError, UnavailableError } from '../errors.js';
import type { FaultProfile } from '../netem/fault-proxy.js';
import { stopChild, waitForOutput } from '../util/child-process.js';

export interface EmbeddedS3 extends AsyncDisposable {
  /** s3rver itself, `http://127.0.0.1:<port>` (path-style): fast, no network profile. */
  readonly endpoint: string;
  /** The same store through the fault proxy: what a client in the cloud would see. */
  readonly proxyEndpoint: string;
  readonly port: number;
  readonly proxyPort: number;
  /** s3rver's built-in account; it checks signatures, so other keys get 403. */
  readonly credentials: { accessKeyId: 'S3RVER'; secretAccessKey: 'S3RVER' };
  readonly dir: string;
  readonly pid: number;
  /** Stop the process (SIGTERM, then SIGKILL after 3 s). Idempotent. The directory is left as it is. */
  close(): Promise<void>;
}

export interface EmbeddedS3Options {
  /** Where s3rver keeps its objects (created if missing). */
  dir: string;
  /** Buckets to create before it answers. */
  buckets: readonly string[];
  /** Network conditions of the proxy. */
  profile: FaultProfile;
  /** How long to wait for both to listen. @default 20_000 */
  startTimeoutMs?: number;
  /**
   * The s3rver module: a package name or a path, resolved from granary's own location.
   * @default process.env.GRANARY_S3RVER_MODULE ?? 's3rver'
   */
  s3rverModule?: string;
}

/** The version range of s3rver the store is known to work with (package.json's devDependencies and peerDependencies). */
export const S3RVER_RANGE = '^3.7.1';

/**
 * The file of the s3rver module, or `GRANARY_ERR_MISSING_DEPENDENCY` saying what to
 * install. Resolved here, before anything starts, so a missing package is one clear
 * message rather than a child process's stack trace.
 */
export function resolveS3rver(module = process.env.GRANARY_S3RVER_MODULE ?? 's3rver'): string {
  const require = createRequire(import.meta.url);
  try {
    return require.resolve(module);
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if (code !== 'MODULE_NOT_FOUND') throw err;
    const what = module === 's3rver' ? 'the npm package `s3rver`' : `the s3rver module \`${module}\``;
    throw new MissingDependencyError(
      `The demo store needs ${what}, which is not installed: granary lists s3rver as an optional peer dependency, ` +
        `so installing granary as a library installs no S3 server. Install it next to granary with \`npm install s3rver@${S3RVER_RANGE}\` ` +
        '(in a clone of the granary repository, `npm install` installs it).',
      { cause: err },
    );
  }
}

/** How to run the child entry: the .ts source through tsx under tsx/vitest, the .js file from dist/. */
function childCommand(): { entry: string; execArgv: string[] } {
  const self = new URL(import.meta.url);
  const isTs = self.pathname.endsWith('.ts');
  const entry = new URL(isTs ? './store-child.ts' : './store-child.js', self);
  if (!isTs) return { entry: entry.pathname, execArgv: [] };
  let tsx = 'tsx';
  try {
    tsx = import.meta.resolve('tsx');
  } catch {
    // Fall back to resolving `tsx` from the working directory.
  }
  return { entry: entry.pathname, execArgv: ['--import', tsx] };
}

/** Start s3rver and the fault proxy in a child process; resolves once both listen. */
export async function startEmbeddedS3(options: EmbeddedS3Options): Promise<EmbeddedS3> {
  const s3rver = resolveS3rver(options.s3rverModule);
  const { entry, execArgv } = childCommand();
  const child = spawn(process.execPath, ['--openssl-legacy-provider', ...execArgv, entry], {
    env: {
      ...process.env,
      NODE_OPTIONS: '',
      GRANARY_S3RVER_MODULE: s3rver,
      GRANARY_STORE_DIR: options.dir,
      GRANARY_STORE_BUCKETS: JSON.stringify(options.buckets),
      GRANARY_STORE_PROFILE: JSON.stringify(options.profile),
    },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const pid = child.pid;
  if (pid === undefined) throw new UnavailableError(`Could not start the demo store (${process.execPath} ${entry} gave no pid)`);
  let ports: { s3Port: number; proxyPort: number };
  try {
    const ready = await waitForOutput(child, /GRANARY_STORE_READY (\{.*\})\n/, options.startTimeoutMs ?? 20_000, (what, stderr) =>
      new UnavailableError(`The demo store (pid ${String(child.pid)}) ${what}; stderr: ${stderr}`),
    );
    ports = JSON.parse(ready) as { s3Port: number; proxyPort: number };
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  child.stdout?.resume();
  child.stderr?.resume();
  // The IPC channel exists only so the child notices our death; it must not keep us alive.
  child.unref();
  child.channel?.unref();
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => (closing ??= stopChild(child));
  return {
    endpoint: `http://127.0.0.1:${ports.s3Port}`,
    proxyEndpoint: `http://127.0.0.1:${ports.proxyPort}`,
    port: ports.s3Port,
    proxyPort: ports.proxyPort,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    dir: options.dir,
    pid,
    close,
    [Symbol.asyncDispose]: close,
  };
}

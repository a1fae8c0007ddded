/**
 * Shared pieces of the CSI tests: whether they can run here, `granary csi` started from
 * source, a gRPC client over its unix socket, and cleanup (by path and PID) of every
 * mount and process a test left, even after a failure.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { credentials, loadPackageDefinition, type GrpcObject, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { LOADER_OPTIONS, PROTO_PATH } from '../../src/csi/proto.js';
import { mountAt } from '../../src/fuse/mount-table.js';
import { whichBinary, requireOrSkip } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { alive, childrenOf, CLEAN_ENV, fuseRunnable } from '../fuse/fixture.js';

export { alive, childrenOf, CLEAN_ENV };

const missing = ['unshare', 'nsenter', 'stat', 'umount'].filter((b) => whichBinary(b) === undefined);
/** The CSI suites mount for real: FUSE (root, /dev/fuse, mount(8)) and util-linux's namespace tools. */
export const csiRunnable = fuseRunnable && requireOrSkip('CSI node plugin', missing.length === 0, `missing binaries: ${missing.join(', ')}`);

export interface Plugin {
  pid: number;
  socket: string;
  /** Everything the plugin wrote to stdout and stderr so far. */
  output(): string;
  /** Signal it and wait for it to exit. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

const startedPlugins = new Set<ChildProcess>();

/** `granary csi` from source on `<dir>/csi.sock` with state in `<dir>/state`; resolves once it serves. */
export async function startPlugin(dir: string, args: readonly string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Plugin> {
  const socket = join(dir, 'csi.sock');
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'csi', '--endpoint', `unix://${socket}`, '--node-id', 'node-1', '--state-dir', join(dir, 'state'), ...args], {
    cwd: process.cwd(),
    // Tests leave the machine's cgroups alone unless they ask (container-restart.test.ts).
    env: { ...CLEAN_ENV, GRANARY_CSI_MOUNT_CGROUP: 'off', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  startedPlugins.add(child);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await waitFor(() => out.includes('serving on') || child.exitCode !== null, { timeoutMs: 60_000, intervalMs: 20, what: 'granary csi to serve' });
  if (!out.includes('serving on')) throw new Error(`granary csi exited ${String(child.exitCode)}: ${out}`);
  return {
    pid: child.pid ?? -1,
    socket,
    output: () => out,
    kill: async (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
      startedPlugins.delete(child);
    },
  };
}

type Callback = (err: ServiceError | null, res: unknown) => void;
type RawClient = Record<string, (req: object, cb: Callback) => void> & { close(): void };

export interface CsiClient {
  identity<T = Record<string, unknown>>(method: string, req?: object): Promise<T>;
  node<T = Record<string, unknown>>(method: string, req?: object): Promise<T>;
  close(): void;
}

/** A CSI client over the plugin's unix socket, built from the same proto file. */
export function csiClient(socket: string): CsiClient {
  const pkg = loadPackageDefinition(loadSync(PROTO_PATH, LOADER_OPTIONS));
  const v1 = (pkg.csi as GrpcObject).v1 as GrpcObject;
  const make = (name: string): RawClient => {
    const Ctor = v1[name] as unknown as new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => RawClient;
    return new Ctor(`unix:${socket}`, credentials.createInsecure());
  };
  const identity = make('Identity');
  const node = make('Node');
  const call = <T>(client: RawClient, method: string, req: object): Promise<T> =>
    new Promise((resolve, reject) => {
      const fn = client[method];
      if (!fn) return reject(new Error(`no method ${method}`));
      fn.call(client, req, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  return {
    identity: (method, req = {}) => call(identity, method, req),
    node: (method, req = {}) => call(node, method, req),
    close: () => {
      identity.close();
      node.close();
    },
  };
}

/** The gRPC status code a call rejected with. */
export async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    return (err as ServiceError).code;
  }
  return 0;
}

/** A mount volume_capability as the kubelet sends for a read-only PersistentVolume. */
export const READ_ONLY_MANY = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'MULTI_NODE_READER_ONLY' } };

export interface Record_ {
  volumeId: string;
  targetPath: string;
  stagings: { dir: string; holderPid: number }[];
}

/** The records in a plugin's state directory. */
export function records(stateDir: string): Record_[] {
  const root = join(stateDir, 'volumes');
  if (!existsSync(root)) return [];
  return readdirSync(root).flatMap((d) => {
    try {
      return [JSON.parse(readFileSync(join(root, d, 'record.json'), 'utf8')) as Record_];
    } catch {
      return [];
    }
  });
}

/** The serving process of a holder (its node child). */
export function servingOf(holderPid: number): number | undefined {
  return childrenOf(holderPid).find((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('src/cli/main.ts');
    } catch {
      return false;
    }
  });
}

/** Kill plugins, unmount every target and staging mount found in the state dirs, kill their holders and serving processes. */
export async function cleanupCsi(stateDirs: readonly string[], extraDirs: readonly string[] = []): Promise<void> {
  for (const child of startedPlugins) child.kill('SIGKILL');
  startedPlugins.clear();
  const pids: number[] = [];
  const dirs = [...extraDirs];
  for (const s of stateDirs) {
    for (const r of records(s)) {
      dirs.push(r.targetPath, ...r.stagings.map((x) => x.dir));
      for (const st of r.stagings) if (st.holderPid > 0) pids.push(st.holderPid, ...childrenOf(st.holderPid));
    }
  }
  for (const dir of dirs) for (let i = 0; i < 16 && mountAt(dir) !== undefined; i++) spawnSync('umount', ['-l', dir]);
  // Only granary's own processes: a recorded PID may have been reused since.
  const ours = (pid: number): boolean => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('src/cli/main.ts');
    } catch {
      return false;
    }
  };
  for (const pid of pids) if (alive(pid) && ours(pid)) process.kill(pid, 'SIGKILL');
  for (const pid of pids) await waitFor(() => !alive(pid) || isZombie(pid), { what: `process ${pid} to exit` });
}

export function isZombie(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true;
  }
}

/**
 * What the plugin runs to mount and unmount, each as a child process with a timeout
 * (never a FUSE stat on the plugin's own threads): `granary mount` on a staging
 * directory, started detached so that its holder outlives the plugin; `mount --bind`
 * of the staging mount onto the target (on top of whatever is there, a dead mount
 * included); `umount`, lazily where the mount is dead or busy.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { TimeoutError, UnavailableError } from '../errors.js';
import type { MountSpec } from './state.js';

export interface CmdResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command; a run past `timeoutMs` is killed and rejects with TimeoutError. */
export function runCmd(cmd: string, args: readonly string[], o: { timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<CmdResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: o.env ?? { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      child.unref();
      reject(new TimeoutError(`${cmd} ${args[0] ?? ''} did not finish within ${o.timeoutMs} ms`));
    }, o.timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new UnavailableError(`cannot run ${cmd}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: stdout.trim(), stderr: stderr.trim() });
    });
  });
}

/** How the plugin starts `granary mount`, from its own configuration. */
export interface MounterOptions {
  /** The command line that runs granary: [node, ...execArgv, main script]. */
  granary: readonly string[];
  /** Where mounts find workers when the volume does not say. */
  defaults: { etcd?: string | undefined; cluster?: string | undefined; workers?: string | undefined };
  /** Flags without secrets appended to every mount (store endpoint, etcd TLS files, TTLs). */
  extraArgs: readonly string[];
  /** Secrets from the plugin's own configuration (token, etcd password), by environment variable. */
  secretEnv: Readonly<Record<string, string>>;
  /** Limit for one `granary mount` to be ready. */
  mountTimeoutMs: number;
  /** Limit for mount --bind and umount. */
  commandTimeoutMs: number;
  /** `--mount-cgroup`: where each mount's processes are moved, out of the plugin container's cgroup ('off': nowhere). */
  mountCgroup: string;
  /** `--require-mount-cgroup`: a mount that cannot be moved fails its NodePublishVolume instead of running with a warning. */
  requireMountCgroup: boolean;
}

/** The arguments of `granary mount` for a volume (no secret ever goes here: `ps` shows them). */
export function mountArgs(o: MounterOptions, spec: MountSpec, staging: string, logFile: string): string[] {
  const args = ['mount', spec.source, staging, '--log-file', logFile];
  const workers = spec.workers ?? (spec.etcd === undefined ? o.defaults.workers : undefined);
  const etcd = spec.etcd ?? (spec.workers === undefined ? o.defaults.etcd : undefined);
  if (workers !== undefined) args.push('--workers', workers);
  else if (etcd !== undefined) args.push('--etcd', etcd, '--cluster', spec.cluster ?? o.defaults.cluster ?? 'default');
  return [...args, ...o.extraArgs];
}

/**
 * The mount's environment: the plugin's, without its GRANARY_* settings (the mount gets
 * them as flags, resolved once by the plugin), plus the secrets.
 */
export function mountEnv(o: MounterOptions, secretEnv: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GRANARY_')));
  return { ...env, ...o.secretEnv, ...secretEnv };
}

/**
 * `granary mount` on `staging`, in the background: it returns once the mount answers,
 * leaving a holder that is in its own session (not the plugin's child). Resolves with
 * the holder's PID. `redact` scrubs secrets from anything that becomes an error.
 */
export async function startMount(o: MounterOptions, spec: MountSpec, staging: string, logFile: string, secretEnv: Readonly<Record<string, string>>, redact: (s: string) => string): Promise<number> {
  const [cmd = process.execPath, ...pre] = o.granary;
  const r = await runCmd(cmd, [...pre, ...mountArgs(o, spec, staging, logFile)], { timeoutMs: o.mountTimeoutMs, env: mountEnv(o, secretEnv) });
  const pid = /holder pid (\d+)/.exec(r.stdout)?.[1];
  if (r.code !== 0 || pid === undefined) {
    const why = r.stderr.split('\n').filter((l) => l.trim() !== '').slice(-3).join('; ');
    throw new UnavailableError(redact(`granary mount ${spec.source} failed (exit ${String(r.code)}): ${why || r.stdout}`));
  }
  return Number(pid);
}

/** Make a staging mount private, so mounts stacked on the target never propagate back onto it. */
export async function makePrivate(o: MounterOptions, dir: string): Promise<void> {
  const r = await runCmd('mount', ['--make-private', dir], { timeoutMs: o.commandTimeoutMs });
  if (r.code !== 0) throw new UnavailableError(`mount --make-private ${dir} failed: ${r.stderr}`);
}

/** Bind `staging` onto `target`, read-only, on top of whatever is mounted there. */
export async function bindOnto(o: MounterOptions, staging: string, target: string): Promise<void> {
  const r = await runCmd('mount', ['--bind', '-o', 'ro', staging, target], { timeoutMs: o.commandTimeoutMs });
  if (r.code !== 0) throw new UnavailableError(`mount --bind ${staging} ${target} failed: ${r.stderr}`);
}

/** Unmount the top mount at `dir`: plainly when `lazy` is false and it is not busy, else lazily. */
export async function unmountOnce(o: MounterOptions, dir: string, lazy: boolean): Promise<'unmounted' | 'detached lazily'> {
  if (!lazy) {
    const r = await runCmd('umount', [dir], { timeoutMs: o.commandTimeoutMs }).catch(() => undefined);
    if (r?.code === 0) return 'unmounted';
  }
  const l = await runCmd('umount', ['-l', dir], { timeoutMs: o.commandTimeoutMs });
  if (l.code !== 0) throw new UnavailableError(`umount -l ${dir} failed: ${l.stderr}`);
  return 'detached lazily';
}

/** Whether `pid` is the holder of the mount at `staging` (a PID may have been reused). */
export function isHolderOf(pid: number, staging: string): boolean {
  if (pid <= 0) return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes('mount') && argv.includes(staging) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * Shared pieces of the FUSE tests: whether a real mount can be made here, `granary mount`
 * run from source in the background, its processes found through /proc, and cleanup by
 * path and PID that works even after a failed test.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mountAt } from '../../src/fuse/mount-table.js';
import { requireOrSkip } from '../support/services.js';
import { waitFor } from '../support/wait.js';

function unavailableReason(): string | undefined {
  if (!existsSync('/dev/fuse')) return '/dev/fuse is absent';
  if (process.getuid?.() !== 0) return 'not root: granary mount mounts with its /dev/fuse fd, which needs CAP_SYS_ADMIN';
  if (spawnSync('mount', ['--version']).status !== 0) return 'mount(8) is not installed';
  return undefined;
}

const reason = unavailableReason();
/** Whether the FUSE suites run: skipped with a printed reason, failing under GRANARY_REQUIRE_SERVICES=1. */
export const fuseRunnable = requireOrSkip('FUSE mount', reason === undefined, reason ?? '');

/** Keep the developer's own GRANARY_* settings out of the children. */
export const CLEAN_ENV: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GRANARY_')));

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI from source and wait for it to exit; `wrap` runs it through another command (nsenter, setpriv). */
export function granary(args: readonly string[], env: NodeJS.ProcessEnv = {}, wrap: readonly string[] = []): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const argv = [...wrap, process.execPath, '--import', 'tsx', 'src/cli/main.ts', ...args];
    const child = spawn(argv[0] as string, argv.slice(1), {
      cwd: process.cwd(),
      env: { ...CLEAN_ENV, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface ToolRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Start a program; `done` resolves with its exit and output (stdout as bytes). */
export function startTool(cmd: string, args: readonly string[], options: { cwd?: string; wrap?: readonly string[] } = {}): { pid: number; done: Promise<ToolRun> } {
  const argv = [...(options.wrap ?? []), cmd, ...args];
  const child = spawn(argv[0] as string, argv.slice(1), { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const done = new Promise<ToolRun>((resolve, reject) => {
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr }));
  });
  return { pid: child.pid ?? -1, done };
}

/** Run a program and collect its output. */
export function runTool(cmd: string, args: readonly string[], options: { cwd?: string; wrap?: readonly string[] } = {}): Promise<ToolRun> {
  return startTool(cmd, args, options).done;
}

export function md5(bytes: Uint8Array): string {
  return createHash('md5').update(bytes).digest('hex');
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Child PIDs of a process (/proc/<pid>/task/<pid>/children). */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/** The serving process of a holder: its one node child (mount(8) runs only while mounting). */
export function servingPid(holderPid: number): number | undefined {
  return childrenOf(holderPid).find((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('src/cli/main.ts');
    } catch {
      return false;
    }
  });
}

export interface Mounted {
  dir: string;
  holderPid: number;
  stderr: string;
}

/** Every mount and process the tests started, for cleanup even after a failure. */
const started = { dirs: new Set<string>(), pids: new Set<number>() };

/** `granary mount <prefix> <dir> ...args` in the background; resolves once it is ready. */
export async function mount(prefix: string, dir: string, args: readonly string[], env: NodeJS.ProcessEnv, wrap: readonly string[] = []): Promise<Mounted> {
  started.dirs.add(dir);
  const r = await granary(['mount', prefix, dir, ...args], env, wrap);
  const pid = /holder pid (\d+)/.exec(r.stdout)?.[1];
  if (r.code !== 0 || pid === undefined) throw new Error(`granary mount exited ${String(r.code)}: ${r.stdout}${r.stderr}`);
  const holderPid = Number(pid);
  started.pids.add(holderPid);
  const serving = servingPid(holderPid);
  if (serving !== undefined) started.pids.add(serving);
  return { dir, holderPid, stderr: r.stderr };
}

/** Remember a mount point to unmount at cleanup (a mount made without `mount()`). */
export function trackDir(dir: string): void {
  started.dirs.add(dir);
}

/** Remember a PID to kill at cleanup (a replacement serving process). */
export function track(pid: number | undefined): void {
  if (pid !== undefined) started.pids.add(pid);
}

/** Wait until the holder runs a serving process other than `previous`; returns its PID. */
export async function nextServingPid(holderPid: number, previous: number): Promise<number> {
  let pid: number | undefined;
  await waitFor(
    () => {
      pid = servingPid(holderPid);
      return pid !== undefined && pid !== previous;
    },
    { timeoutMs: 30_000, intervalMs: 20, what: `a serving process to replace ${previous}` },
  );
  track(pid);
  return pid as number;
}

/** Unmount every directory mounted by the tests (lazily) and kill every process they started, by PID. */
export async function cleanupMounts(): Promise<void> {
  for (const dir of started.dirs) {
    for (let i = 0; i < 4 && mountAt(dir) !== undefined; i++) spawnSync('umount', ['-l', dir]);
  }
  for (const pid of started.pids) {
    for (const child of childrenOf(pid)) if (alive(child)) process.kill(child, 'SIGKILL');
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  for (const pid of started.pids) await waitFor(() => !alive(pid) || isZombie(pid), { what: `process ${pid} to exit` });
  started.dirs.clear();
  started.pids.clear();
}

function isZombie(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true;
  }
}

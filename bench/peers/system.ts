/**
 * The machine side of the peers bench: finding and installing tools, dropping the
 * page cache, reading a process's CPU time and peak memory from /proc, mounts, and
 * the cleanup list that stops every process and unmounts every mount this run made,
 * by PID and by path, also on failure or Ctrl-C.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export function which(bin: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(':')) if (d && existsSync(join(d, bin))) return join(d, bin);
  return undefined;
}

export function runCommand(cmd: string, argv: readonly string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', (e) => resolve({ code: -1, out: String(e) }));
    c.on('exit', (code) => resolve({ code, out }));
  });
}

/** The Debian packages the bench uses, by the binary that shows each is installed. */
const PACKAGES: readonly { pkg: string; bin: string }[] = [
  { pkg: 's3fs', bin: 's3fs' },
  { pkg: 'rclone', bin: 'rclone' },
  { pkg: 'fuse3', bin: 'fusermount3' },
];

/**
 * Install the missing peers with apt-get (as root, where apt-get exists). Returns one
 * line per package saying what was found or done; a failed install is reported, and
 * the peer is then skipped as missing.
 */
export async function ensurePackages(log: (line: string) => void): Promise<string[]> {
  const missing = PACKAGES.filter((p) => which(p.bin) === undefined);
  const notes = PACKAGES.filter((p) => !missing.includes(p)).map((p) => `${p.pkg}: installed (${which(p.bin) ?? ''})`);
  if (missing.length === 0) return notes;
  const names = missing.map((p) => p.pkg);
  if (process.getuid?.() !== 0 || which('apt-get') === undefined) {
    return [...notes, ...names.map((n) => `${n}: missing, not installed (needs root and apt-get: apt-get install -y ${n})`)];
  }
  log(`installing ${names.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = await runCommand('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...names], env);
  if (r.code !== 0) {
    await runCommand('apt-get', ['update', '-q'], env);
    r = await runCommand('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...names], env);
  }
  return [...notes, ...missing.map((p) => (which(p.bin) ? `${p.pkg}: installed now by apt-get` : `${p.pkg}: apt-get install failed: ${r.out.trim().split('\n').slice(-2).join(' ')}`))];
}

/** Drop the page cache; false when this process may not (a container without the privilege). */
export function dropPageCache(): boolean {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    return false;
  }
  return true;
}

/** Flush dirty pages first, as `sync; echo 3 > drop_caches` does. */
export async function syncAndDropPageCache(): Promise<boolean> {
  await runCommand('sync', []);
  return dropPageCache();
}

const TICK = 100; // USER_HZ on Linux

/** CPU seconds a process used (utime + stime), plus its reaped children's when `children`. NaN once it is gone. */
export function cpuSeconds(pid: number, children = true): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces), starting at field 3.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    const [utime, stime, cutime, cstime] = [f[11] ?? 0, f[12] ?? 0, f[13] ?? 0, f[14] ?? 0];
    return (utime + stime + (children ? cutime + cstime : 0)) / TICK;
  } catch {
    return Number.NaN;
  }
}

/** `pid` and every process below it (a FUSE daemon's serving processes), from /proc/<pid>/task/<tid>/children. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i]!;
    try {
      for (const tid of readdirSync(`/proc/${p}/task`)) {
        for (const c of readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8').split(' ')) if (c.trim() !== '') out.push(Number(c));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** A process's peak resident set (VmHWM) in MiB; NaN once it is gone. */
export function peakRssMiB(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Reset a process's VmHWM to its current RSS, so the next reading is the peak of what follows. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export function isMounted(path: string): boolean {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === path);
}

/** Unmount a FUSE mount this run made, by path: fusermount3 -u, then a lazy umount if busy. */
export async function unmount(path: string): Promise<void> {
  if (!isMounted(path)) return;
  const fm = which('fusermount3') ?? which('fusermount');
  if (fm && (await runCommand(fm, ['-u', path])).code === 0) return;
  await runCommand('umount', ['-l', path]);
}

/** Wait until `path` is a mount point, or the daemon exits, or `timeoutMs` passes. */
export async function waitForMount(path: string, alive: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!isMounted(path)) {
    if (!alive() || Date.now() > deadline) return false;
    // Polling /proc/mounts: a FUSE daemon announces nothing else we can wait on.
    await sleep(50);
  }
  return true;
}

type Cleanup = () => Promise<void>;

/**
 * What to undo, newest first: stop processes by PID, unmount by path, remove temp
 * dirs. `run()` on normal exit, on error and on SIGINT / SIGTERM.
 */
export class Cleanups {
  readonly #stack: { what: string; fn: Cleanup }[] = [];

  add(what: string, fn: Cleanup): () => Promise<void> {
    const entry = { what, fn };
    this.#stack.push(entry);
    return async () => {
      const i = this.#stack.indexOf(entry);
      if (i >= 0) this.#stack.splice(i, 1);
      await fn();
    };
  }

  dir(path: string): () => Promise<void> {
    return this.add(`remove ${path}`, () => rm(path, { recursive: true, force: true }));
  }

  mount(path: string): () => Promise<void> {
    return this.add(`unmount ${path}`, () => unmount(path));
  }

  async run(log: (line: string) => void): Promise<void> {
    for (let e = this.#stack.pop(); e !== undefined; e = this.#stack.pop()) {
      try {
        await e.fn();
      } catch (err) {
        log(`cleanup: ${e.what} failed: ${(err as Error).message}`);
      }
    }
  }
}

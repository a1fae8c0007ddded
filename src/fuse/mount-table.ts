/**
 * The kernel side of mounting: /proc/self/mountinfo, mount(8) with the /dev/fuse fd,
 * unmounting (lazily when busy), cleaning a dead mount, and raising readahead on the
 * mount's backing device.
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { InvalidArgumentError, UnavailableError, UnsupportedOperationError } from '../errors.js';

export const FS_TYPE = 'fuse.granary';

export interface MountEntry {
  /** `major:minor` of the mount's anonymous device (its bdi is /sys/class/bdi/<dev>). */
  dev: string;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** `\040` and friends, as mountinfo escapes spaces, tabs, newlines and backslashes. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function mountTable(): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    out.push({ dev: left[2] ?? '', mountPoint: unescape(left[4] ?? ''), fsType: right[0] ?? '', source: unescape(right[1] ?? '') });
  }
  return out;
}

/** The topmost mount at `dir`, if any. */
export function mountAt(dir: string): MountEntry | undefined {
  return mountTable()
    .filter((m) => m.mountPoint === dir)
    .at(-1);
}

export interface RunResult {
  code: number | null;
  stderr: string;
}

export function run(cmd: string, args: readonly string[], extraFds: number[] = []): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe', ...extraFds] });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr: stderr.trim() }));
  });
}

/** Whether the path answers ENOTCONN: a FUSE mount whose server is gone. */
export function isDeadMount(dir: string): boolean {
  try {
    statSync(dir);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOTCONN';
  }
}

/**
 * Unmount `dir`; when it is busy, detach it lazily (it goes away when the last file on
 * it is closed). Resolves with how it went.
 */
export async function unmount(dir: string): Promise<'unmounted' | 'detached lazily'> {
  // An ordinary user unmounts through the setuid fusermount3 (-z: lazily).
  const root = process.getuid?.() === 0;
  const r = root ? await run('umount', [dir]) : await run('fusermount3', ['-u', dir]);
  if (r.code === 0) return 'unmounted';
  const lazy = root ? await run('umount', ['-l', dir]) : await run('fusermount3', ['-u', '-z', dir]);
  if (lazy.code === 0) return 'detached lazily';
  throw new UnavailableError(`unmounting ${dir} failed: ${r.stderr}; lazily: ${lazy.stderr}`);
}

/**
 * Make `dir` ready to mount on: a dead granary (or other FUSE) mount there is
 * unmounted, never hidden; a live granary mount is refused. Returns what was cleaned.
 */
export async function prepareMountPoint(dir: string): Promise<string | undefined> {
  const existing = mountAt(dir);
  if (existing && isDeadMount(dir)) {
    await (process.getuid?.() === 0 ? run('umount', ['-l', dir]) : run('fusermount3', ['-u', '-z', dir]));
    if (isDeadMount(dir)) throw new UnavailableError(`${dir} holds a dead mount (${existing.fsType}) that umount -l did not remove`);
    return `${dir} held a dead ${existing.fsType} mount (ENOTCONN): detached it`;
  }
  if (existing?.fsType === FS_TYPE) throw new InvalidArgumentError(`${dir} already holds a live granary mount of ${existing.source}; granary umount ${dir} first`);
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    throw new InvalidArgumentError(`mount point ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (!st.isDirectory()) throw new InvalidArgumentError(`mount point ${dir} is not a directory`);
  return undefined;
}

/**
 * For callers that mount with the fd themselves (the CSI node plugin): that needs
 * CAP_SYS_ADMIN. `granary mount` has a second way for ordinary users (src/fuse/fusermount.ts).
 */
export function checkCanMount(): void {
  if (process.getuid?.() === 0) return;
  throw new UnsupportedOperationError(
    'mounting with a /dev/fuse fd needs root (CAP_SYS_ADMIN): run it as root, or in a container with CAP_SYS_ADMIN and /dev/fuse',
  );
}

/** Mount the FUSE connection open on `fd` at `dir` (as root: mount(8) does mount(2) with fd=3). */
export async function mountFd(fd: number, dir: string, source: string, maxRead: number): Promise<void> {
  const options = ['fd=3', 'rootmode=40000', 'user_id=0', 'group_id=0', 'ro', 'default_permissions', 'allow_other', `max_read=${maxRead}`].join(',');
  const r = await run('mount', ['-i', '-t', FS_TYPE, '-o', options, source, dir], [fd]);
  if (r.code !== 0) throw new UnavailableError(`mount -t ${FS_TYPE} on ${dir} failed (exit ${String(r.code)}): ${r.stderr}`);
}

/** Raise the mount's readahead (its bdi's read_ahead_kb); returns the value set, or why not. */
export function raiseReadahead(dir: string, kb: number): string {
  const m = mountAt(dir);
  if (!m) return 'no mount found';
  const path = `/sys/class/bdi/${m.dev}/read_ahead_kb`;
  try {
    writeFileSync(path, String(kb));
    return `${path} = ${kb}`;
  } catch (err) {
    return `${path} not writable (${(err as NodeJS.ErrnoException).code ?? String(err)}): readahead stays at the kernel's default`;
  }
}

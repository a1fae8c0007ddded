/**
 * Moving a mount's processes out of the plugin container's cgroup. A container runtime
 * stopping the plugin's container kills every process in the container's cgroup (runc
 * kills the cgroup; with hostPID no PID namespace ends them first), so a `granary mount`
 * left there would die with the plugin. The plugin writes the holder's PID, then its
 * descendants', into `cgroup.procs` of a cgroup outside its own: on cgroup v2 the
 * unified hierarchy's, on a hybrid v1 host also every v1 hierarchy's matching cgroup.
 * Processes the holder starts later (a replacement serving process) inherit it.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

/** `--mount-cgroup` default: a cgroup of this name under each hierarchy's root, as the plugin sees it. */
export const DEFAULT_MOUNT_CGROUP = 'granary-mounts';
/** `--mount-cgroup off`: leave mounts in the plugin's cgroup (they die with its container). */
export const MOUNT_CGROUP_OFF = 'off';

/** Why a mount's processes could not be moved out of the plugin's cgroup. */
export type CgroupReason =
  /** `--mount-cgroup off`. */
  | 'disabled'
  /** No cgroup2 or cgroup v1 hierarchy in /proc/self/mountinfo (none mounted in the container). */
  | 'no-hierarchy'
  /** The cgroup directory could not be created (read-only cgroupfs: the container's own, not the host's). */
  | 'mkdir-failed'
  /** Writing a PID into cgroup.procs failed (permissions, a threaded or domain-invalid cgroup). */
  | 'write-failed'
  /** The move worked but the target is inside the plugin's own cgroup (a cgroup namespace, no host /sys/fs/cgroup mounted). */
  | 'inside-plugin-cgroup';

export type CgroupMove = { moved: true; where: string[]; pids: number } | { moved: false; reason: CgroupReason; detail: string };

interface Hierarchy {
  /** 'v2', or the v1 hierarchy's controllers as in /proc/PID/cgroup ("cpu,cpuacct", "name=systemd"). */
  key: string;
  dir: string;
}

/** The cgroup hierarchies mounted where the plugin sees them: at most one per hierarchy, /sys/fs/cgroup first. */
export function hierarchies(mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): Hierarchy[] {
  const found = new Map<string, string>();
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (pre === undefined || post === undefined) continue;
    const mountPoint = unescape(pre.split(' ')[4] ?? '');
    const [fsType, , superOpts = ''] = post.split(' ');
    let key: string | undefined;
    if (fsType === 'cgroup2') key = 'v2';
    else if (fsType === 'cgroup') key = superOpts.split(',').filter((o) => o !== 'rw' && o !== 'ro' && !o.startsWith('release_agent') && o !== 'clone_children' && o !== 'noprefix' && o !== 'xattr' && o !== 'cpuset_v2_mode' && o !== 'favordynmods').sort().join(',');
    if (key === undefined || key === '') continue;
    const prev = found.get(key);
    if (prev === undefined || (mountPoint === '/sys/fs/cgroup' && prev !== mountPoint)) found.set(key, mountPoint);
  }
  return [...found].map(([key, dir]) => ({ key, dir }));
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** A process's cgroup path per hierarchy key ('v2' for the `0::` line), from /proc/PID/cgroup. */
export function cgroupsOf(pid: number | 'self'): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1] === '0' && m[2] === '' ? 'v2' : (m[2] ?? '').split(',').sort().join(',');
    out.set(key, m[3] ?? '');
  }
  return out;
}

/** Whether cgroup `path` is `self` or below it (paths relative to one cgroup namespace; "/.." is outside its root). */
export function isWithin(path: string, self: string): boolean {
  if (self === '/') return !path.startsWith('/..');
  return path === self || path.startsWith(`${self}/`);
}

/** A new v1 cpuset cgroup has no CPUs or memory nodes (no process may join it) until given its parent's. */
function inheritCpuset(dir: string): void {
  for (const f of ['cpuset.cpus', 'cpuset.mems']) {
    if (readFileSync(join(dir, f), 'utf8').trim() === '') writeFileSync(join(dir, f), readFileSync(join(dir, '..', f), 'utf8'));
  }
}

/** Every descendant of `pid`, parents before children (from each process's parent PID in /proc). */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const queue = [...(children.get(pid) ?? [])];
  for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
    out.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return out;
}

/**
 * Move `pid` and its descendants into the mount cgroup `setting` (a relative cgroup path
 * created under every hierarchy's root, or an absolute directory of the cgroup2
 * hierarchy; 'off' moves nothing), then check that the holder left the plugin's cgroup.
 */
export function moveToMountCgroup(setting: string, pid: number, mountinfo?: string): CgroupMove {
  if (setting === MOUNT_CGROUP_OFF) return { moved: false, reason: 'disabled', detail: '--mount-cgroup off' };
  const all = hierarchies(mountinfo);
  const targets: Hierarchy[] = isAbsolute(setting) ? [{ key: 'v2', dir: setting }] : all.map((h) => ({ key: h.key, dir: join(h.dir, setting) }));
  if (targets.length === 0) return { moved: false, reason: 'no-hierarchy', detail: 'no cgroup hierarchy is mounted (/proc/self/mountinfo)' };
  const pids = [pid];
  for (const t of targets) {
    try {
      mkdirSync(t.dir, { recursive: true });
      if (t.key.split(',').includes('cpuset')) inheritCpuset(t.dir);
    } catch (err) {
      return { moved: false, reason: 'mkdir-failed', detail: `mkdir ${t.dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
    }
  }
  // Parents first: a process forked after its parent moved is born in the new cgroup.
  const failed = (t: Hierarchy, p: number, err: unknown): CgroupMove => ({ moved: false, reason: 'write-failed', detail: `echo ${p} > ${join(t.dir, 'cgroup.procs')}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
  for (const t of targets) {
    try {
      writeFileSync(join(t.dir, 'cgroup.procs'), `${pid}\n`);
    } catch (err) {
      return failed(t, pid, err);
    }
  }
  for (const p of descendants(pid)) {
    for (const t of targets) {
      try {
        writeFileSync(join(t.dir, 'cgroup.procs'), `${p}\n`);
        if (t === targets[0]) pids.push(p);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') return failed(t, p, err);
      }
    }
  }
  const mine = cgroupsOf('self');
  const its = cgroupsOf(pid);
  for (const t of targets) {
    const own = mine.get(t.key);
    const now = its.get(t.key);
    if (own !== undefined && now !== undefined && isWithin(now, own)) {
      return { moved: false, reason: 'inside-plugin-cgroup', detail: `${t.key} cgroup ${now} is inside the plugin's own ${own} (mount the host's /sys/fs/cgroup into the plugin's container)` };
    }
  }
  return { moved: true, where: targets.map((t) => t.dir), pids: pids.length };
}

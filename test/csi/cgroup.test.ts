/** The mount cgroup's parts that need no privileges: hierarchies from mountinfo, paths, and each coded failure. */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hierarchies, isWithin, moveToMountCgroup } from '../../src/csi/cgroup.js';

const HYBRID = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
41 22 0:37 / /host/sys/fs/cgroup\\040x rw,relatime - cgroup2 cgroup2 rw
42 22 0:37 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw`;

describe('the mount cgroup', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('finds one mount per hierarchy, keyed as /proc/PID/cgroup names them, preferring /sys/fs/cgroup', () => {
    expect(hierarchies(HYBRID)).toEqual([
      { key: 'cpu,cpuacct', dir: '/sys/fs/cgroup/cpu,cpuacct' },
      { key: 'name=systemd', dir: '/sys/fs/cgroup/systemd' },
      { key: 'v2', dir: '/sys/fs/cgroup' },
    ]);
  });

  it('tells a cgroup inside the plugin\'s from one outside, "/.." being above a namespace\'s root', () => {
    expect(isWithin('/kubepods/pod1/c1', '/kubepods/pod1/c1')).toBe(true);
    expect(isWithin('/kubepods/pod1/c1/granary-mounts', '/kubepods/pod1/c1')).toBe(true);
    expect(isWithin('/granary-mounts', '/kubepods/pod1/c1')).toBe(false);
    expect(isWithin('/kubepods/pod1/c10', '/kubepods/pod1/c1')).toBe(false);
    expect(isWithin('/granary-mounts', '/')).toBe(true);
    expect(isWithin('/../../../granary-mounts', '/')).toBe(false);
  });

  it('says why a move did not happen, with a code', async () => {
    expect(moveToMountCgroup('off', process.pid)).toMatchObject({ moved: false, reason: 'disabled' });
    expect(moveToMountCgroup('granary-mounts', process.pid, '')).toMatchObject({ moved: false, reason: 'no-hierarchy' });
    const fake = await mkdtemp(join(tmpdir(), 'granary-cgroup-'));
    dirs.push(fake);
    await writeFile(join(fake, 'a-file'), '');
    expect(moveToMountCgroup('granary-mounts', process.pid, `1 0 0:1 / ${join(fake, 'a-file')} rw - cgroup2 cgroup2 rw`)).toMatchObject({ moved: false, reason: 'mkdir-failed' });
    // A directory that is not a cgroup takes the write, but the process stays where it was.
    const r = moveToMountCgroup('granary-mounts', process.pid, `1 0 0:1 / ${fake} rw - cgroup2 cgroup2 rw`);
    expect(r).toMatchObject({ moved: false, reason: 'inside-plugin-cgroup' });
    expect(await readFile(join(fake, 'granary-mounts', 'cgroup.procs'), 'utf8')).toMatch(/^\d+\n$/);
  });
});

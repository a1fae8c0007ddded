/**
 * A restart of the plugin's container, emulated with a cgroup: the plugin runs in a
 * "container" cgroup under the cgroup2 hierarchy, and the container stops as a runtime
 * stops it, by writing 1 to the cgroup's cgroup.kill. The plugin moved the mount's
 * processes into its mount cgroup (`--mount-cgroup`) before publishing, so the volume
 * keeps serving (an open file and a new read), and a plugin started in a new container
 * cgroup re-adopts it and unpublishes it.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroupsOf, hierarchies } from '../../src/csi/cgroup.js';
import { mountAt } from '../../src/fuse/mount-table.js';
import { requireOrSkip } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { alive, cleanupCsi, csiClient, csiRunnable, isZombie, READ_ONLY_MANY, records, startPlugin, type CsiClient, type Plugin } from './fixture.js';

const BIG = Buffer.alloc(2 * 1024 * 1024 + 5, 0x3c);

/** A scratch cgroup under the cgroup2 hierarchy, when this process may create one (root, a writable cgroup2 with cgroup.kill). */
function scratchCgroup(): string | undefined {
  const v2 = hierarchies().find((h) => h.key === 'v2');
  if (!v2 || !existsSync(join(v2.dir, 'cgroup.procs'))) return undefined;
  const dir = join(v2.dir, `granary-test-${randomBytes(4).toString('hex')}`);
  try {
    mkdirSync(dir);
  } catch {
    return undefined;
  }
  if (existsSync(join(dir, 'cgroup.kill'))) return dir;
  rmdirSync(dir);
  return undefined;
}

const base = csiRunnable ? scratchCgroup() : undefined;
const runnable = csiRunnable && requireOrSkip('container restart (cgroup2)', base !== undefined, 'cannot create a cgroup2 cgroup with cgroup.kill here (not root, or no writable cgroup2 hierarchy)');

const procsOf = (cg: string): number[] =>
  readFileSync(join(cg, 'cgroup.procs'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map(Number);

describe.runIf(runnable)('a published volume through a restart of the plugin container', () => {
  const root = base ?? '';
  const mounts = join(root, 'mounts');
  const containers = [join(root, 'container-1'), join(root, 'container-2')];
  let work: string;
  let target: string;
  let source: string;
  let plugin: Plugin | undefined;
  let csi: CsiClient | undefined;
  let file: FileHandle | undefined;
  const state = (): string => join(work, 'state');
  const startIn = async (cg: string): Promise<Plugin> => {
    mkdirSync(cg);
    const p = await startPlugin(work, ['--mount-cgroup', mounts, '--heartbeat-timeout', '4s', '--metadata-ttl', '20s']);
    writeFileSync(join(cg, 'cgroup.procs'), `${p.pid}\n`);
    return p;
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'granary-csi-cgroup-'));
    await mkdir(join(work, 'data'));
    await writeFile(join(work, 'data', 'hello.txt'), 'hello from the store\n');
    await writeFile(join(work, 'data', 'big.bin'), BIG);
    source = `file://${join(work, 'data')}/`;
    target = join(work, 'pods', 'uid-1', 'pv', 'mount');
  });

  afterAll(async () => {
    await file?.close().catch(() => undefined);
    csi?.close();
    await plugin?.kill('SIGKILL');
    await cleanupCsi([state()], [target]);
    for (const cg of [...containers, mounts, root]) {
      if (!existsSync(cg)) continue;
      // cgroup.procs empties before the exiting processes are gone; cgroup.events says when they are.
      await waitFor(() => /^populated 0$/m.test(readFileSync(join(cg, 'cgroup.events'), 'utf8')), { timeoutMs: 30_000, what: `${cg} to empty` });
      rmdirSync(cg);
    }
    await rm(work, { recursive: true, force: true });
  }, 90_000);

  it('keeps serving when the container cgroup is killed, and a plugin in a new container re-adopts it', async () => {
    plugin = await startIn(containers[0] ?? '');
    csi = csiClient(plugin.socket);
    await csi.node('NodePublishVolume', { volume_id: 'pv-x', target_path: target, volume_capability: READ_ONLY_MANY, readonly: true, volume_context: { source } });
    const staging = (records(state())[0]?.stagings.at(-1) ?? { holderPid: -1 }) as { holderPid: number; cgroup?: string };
    const holder = staging.holderPid;
    expect(staging.cgroup).toBe(`moved to ${mounts}`);
    expect(procsOf(mounts)).toContain(holder);
    expect(cgroupsOf(holder).get('v2')).toMatch(/\/mounts$/);
    expect(procsOf(containers[0] ?? '')).toEqual([plugin.pid]);
    // The plugin's mount timing flags reach the mount (the holder runs `granary mount` again with its arguments).
    const argv = readFileSync(`/proc/${holder}/cmdline`, 'utf8').split('\0');
    expect(argv.slice(argv.indexOf('--heartbeat-timeout'), argv.indexOf('--heartbeat-timeout') + 2)).toEqual(['--heartbeat-timeout', '4000ms']);
    expect(argv.slice(argv.indexOf('--metadata-ttl'), argv.indexOf('--metadata-ttl') + 2)).toEqual(['--metadata-ttl', '20000ms']);

    file = await open(join(target, 'big.bin'));
    const head = Buffer.alloc(4096);
    expect((await file.read(head, 0, head.length, 0)).bytesRead).toBe(head.length);

    // What a runtime does when the container stops.
    const pluginPid = plugin.pid;
    csi.close();
    writeFileSync(join(containers[0] ?? '', 'cgroup.kill'), '1\n');
    await waitFor(() => !alive(pluginPid) || isZombie(pluginPid), { timeoutMs: 30_000, what: 'the plugin to die with its container' });
    await plugin.kill('SIGKILL');
    plugin = undefined;

    expect(alive(holder) && !isZombie(holder)).toBe(true);
    const rest = Buffer.alloc(BIG.length);
    const { bytesRead } = await file.read(rest, 0, rest.length, 0);
    expect(rest.subarray(0, bytesRead).equals(BIG)).toBe(true);
    expect(bytesRead).toBe(BIG.length);
    await file.close();
    file = undefined;
    expect(await readFile(join(target, 'hello.txt'), 'utf8')).toBe('hello from the store\n');

    plugin = await startIn(containers[1] ?? '');
    csi = csiClient(plugin.socket);
    expect(plugin.output()).toMatch(/1 volume\(s\) adopted/);
    const stats = await csi.node<{ volume_condition: { abnormal: boolean; message: string } }>('NodeGetVolumeStats', { volume_id: 'pv-x', volume_path: target });
    expect(stats.volume_condition.abnormal).toBe(false);
    expect(stats.volume_condition.message).toContain(`holder pid ${holder}`);
    expect(stats.volume_condition.message).not.toMatch(/does not survive/);

    await csi.node('NodeUnpublishVolume', { volume_id: 'pv-x', target_path: target });
    expect(mountAt(target)).toBeUndefined();
    expect(existsSync(target)).toBe(false);
    expect(records(state())).toEqual([]);
    await waitFor(() => !alive(holder) || isZombie(holder), { timeoutMs: 30_000, what: `holder ${holder} to exit once unmounted` });
    await waitFor(() => procsOf(mounts).length === 0, { timeoutMs: 30_000, what: 'the mount cgroup to empty' });
  }, 240_000);
});

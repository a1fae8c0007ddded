/**
 * The kubelet's part emulated with mount namespaces: a "host" kubelet directory with
 * shared propagation (as /var/lib/kubelet is mounted into the plugin, Bidirectional),
 * a "container" in its own mount namespace whose mounts are slaves of the host's, with
 * the target bind-mounted into it as the runtime does for HostToContainer, and nsenter
 * to read from inside. The volume must stay readable inside the container through a
 * plugin SIGKILL and restart and a serving-process kill, and a holder kill must be
 * repaired by the next NodePublishVolume (the kubelet's periodic republish), which
 * mounts on top of the dead mount so that the running container sees the new one.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountAt } from '../../src/fuse/mount-table.js';
import { runTool } from '../fuse/fixture.js';
import { waitFor } from '../support/wait.js';
import { alive, cleanupCsi, isZombie, csiClient, csiRunnable, READ_ONLY_MANY, records, servingOf, startPlugin, type CsiClient, type Plugin } from './fixture.js';

const BIG = Buffer.alloc(3 * 1024 * 1024 + 17, 0x5a);

describe.runIf(csiRunnable)('a published volume in an emulated pod', () => {
  let work: string;
  let kubelet: string;
  let target: string;
  let ctrData: string;
  let plugin: Plugin;
  let csi: CsiClient;
  let container: ChildProcess | undefined;
  let source: string;
  const state = (): string => join(work, 'state');

  const publish = (): Promise<unknown> =>
    csi.node('NodePublishVolume', { volume_id: 'pv-train', target_path: target, volume_capability: READ_ONLY_MANY, readonly: true, volume_context: { source } });
  const stats = () => csi.node<{ volume_condition: { abnormal: boolean; message: string } }>('NodeGetVolumeStats', { volume_id: 'pv-train', volume_path: target });

  /** `cat` inside the container's mount namespace. */
  const readInside = async (name: string): Promise<{ ok: boolean; bytes: Buffer; stderr: string }> => {
    const r = await runTool('nsenter', ['-t', String(container?.pid), '-m', 'cat', join(ctrData, name)]);
    return { ok: r.code === 0, bytes: r.stdout, stderr: r.stderr };
  };
  const expectReadable = async (): Promise<void> => {
    const small = await readInside('hello.txt');
    expect(small.stderr).toBe('');
    expect(small.bytes.toString()).toBe('hello from the store\n');
    const big = await readInside('big.bin');
    expect(big.ok).toBe(true);
    expect(big.bytes.equals(BIG)).toBe(true);
  };
  const liveHolder = (): number => records(state())[0]?.stagings.at(-1)?.holderPid ?? -1;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'granary-csi-life-'));
    await mkdir(join(work, 'data'));
    await writeFile(join(work, 'data', 'hello.txt'), 'hello from the store\n');
    await writeFile(join(work, 'data', 'big.bin'), BIG);
    source = `file://${join(work, 'data')}/`;
    // The kubelet's directory, shared like /var/lib/kubelet on a host with systemd.
    kubelet = join(work, 'kubelet');
    await mkdir(join(kubelet, 'pods', 'uid-1', 'volumes', 'kubernetes.io~csi', 'pv-train'), { recursive: true });
    expect(spawnSync('mount', ['--bind', kubelet, kubelet]).status).toBe(0);
    expect(spawnSync('mount', ['--make-rshared', kubelet]).status).toBe(0);
    target = join(kubelet, 'pods', 'uid-1', 'volumes', 'kubernetes.io~csi', 'pv-train', 'mount');
    ctrData = join(work, 'container-data');
    await mkdir(ctrData);
    plugin = await startPlugin(work);
    csi = csiClient(plugin.socket);
  }, 90_000);

  afterAll(async () => {
    csi?.close();
    if (container?.pid !== undefined && alive(container.pid)) container.kill('SIGKILL');
    await plugin?.kill('SIGKILL');
    await cleanupCsi([state()], [target]);
    if (kubelet) for (let i = 0; i < 4 && mountAt(kubelet) !== undefined; i++) spawnSync('umount', ['-l', kubelet]);
    await rm(work, { recursive: true, force: true });
  }, 60_000);

  it('is readable in the container once published', async () => {
    await publish();
    // The runtime's HostToContainer mount: the container's copy of the target is a slave of the host's.
    container = spawn('unshare', ['-m', '--propagation', 'slave', 'sh', '-c', `mount --rbind "$0" "$1" && mount --make-rslave "$1" && echo ready && exec sleep 100000`, target, ctrData], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    container.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    await waitFor(() => out.includes('ready'), { timeoutMs: 10_000, what: 'the container to bind the target' });
    await expectReadable();
  }, 120_000);

  it('stays readable when the plugin is SIGKILLed and restarted, which re-adopts the mount', async () => {
    const holder = liveHolder();
    await plugin.kill('SIGKILL');
    csi.close();
    await expectReadable();
    expect(alive(holder)).toBe(true);
    plugin = await startPlugin(work);
    csi = csiClient(plugin.socket);
    expect(plugin.output()).toMatch(/1 volume\(s\) adopted/);
    await publish();
    expect(liveHolder()).toBe(holder);
    expect((await stats()).volume_condition.abnormal).toBe(false);
    await expectReadable();
  }, 120_000);

  it('stays readable when the serving process is killed (its holder starts another)', async () => {
    const holder = liveHolder();
    const serving = servingOf(holder);
    expect(serving).toBeDefined();
    process.kill(serving as number, 'SIGKILL');
    await waitFor(() => {
      const next = servingOf(holder);
      return next !== undefined && next !== serving;
    }, { timeoutMs: 60_000, intervalMs: 20, what: 'a new serving process' });
    await expectReadable();
  }, 120_000);

  it('reports a holder killed alone as abnormal, and the next NodePublishVolume replaces it on top', async () => {
    const holder = liveHolder();
    process.kill(holder, 'SIGKILL');
    await waitFor(() => !alive(holder) || isZombie(holder), { what: `holder ${holder} to exit` });
    // Its serving process still holds the connection: reads go on.
    await expectReadable();
    const before = await stats();
    expect(before.volume_condition.abnormal).toBe(true);
    expect(before.volume_condition.message).toMatch(/holder process \d+ is gone/);
    await publish();
    expect(liveHolder()).not.toBe(holder);
    expect((await stats()).volume_condition.abnormal).toBe(false);
    await expectReadable();
  }, 180_000);

  it('is repaired by the next NodePublishVolume when the holder dies, mounting on top of the dead mount', async () => {
    const holder = liveHolder();
    const serving = servingOf(holder);
    process.kill(holder, 'SIGKILL');
    if (serving !== undefined) process.kill(serving, 'SIGKILL');
    const gone = (pid: number | undefined): boolean => pid === undefined || !alive(pid) || isZombie(pid);
    await waitFor(() => gone(holder) && gone(serving), { what: 'the holder and its serving process to exit' });
    const dead = await readInside('hello.txt');
    expect(dead.ok).toBe(false);
    expect(dead.stderr).toMatch(/Transport endpoint is not connected|Software caused connection abort/);
    const before = await stats();
    expect(before.volume_condition.abnormal).toBe(true);
    expect(before.volume_condition.message).toMatch(/ENOTCONN|ECONNABORTED/);

    await publish();
    await expectReadable();
    expect(liveHolder()).not.toBe(holder);
    expect(records(state())[0]?.stagings).toHaveLength(1);
    expect((await stats()).volume_condition.abnormal).toBe(false);
    expect(plugin.output()).toMatch(/repairing \S+ \(volume pv-train\): .*(ENOTCONN|ECONNABORTED).*mounting a new mount on top/);
  }, 180_000);

  it('is gone after the container ends and the volume is unpublished', async () => {
    const holder = liveHolder();
    container?.kill('SIGKILL');
    await waitFor(() => container?.exitCode !== null || container.signalCode !== null, { what: 'the container to end' });
    await csi.node('NodeUnpublishVolume', { volume_id: 'pv-train', target_path: target });
    expect(mountAt(target)).toBeUndefined();
    expect(existsSync(target)).toBe(false);
    expect(records(state())).toEqual([]);
    await waitFor(() => !alive(holder) || isZombie(holder), { timeoutMs: 30_000, what: `holder ${holder} to exit once its mount is gone` });
  }, 120_000);
});

/**
 * What csi-sanity checks of a node-only plugin, over the plugin's real unix socket with
 * a gRPC client: identity, capabilities, required arguments, idempotent publish and
 * unpublish, ALREADY_EXISTS for an incompatible publish, NodeGetVolumeStats, and an
 * ephemeral inline volume.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVER_NAME, EPHEMERAL_CONTEXT_KEY } from '../../src/csi/constants.js';
import { mountAt } from '../../src/fuse/mount-table.js';
import { cleanupCsi, csiClient, csiRunnable, READ_ONLY_MANY, records, startPlugin, statusOf, type CsiClient, type Plugin } from './fixture.js';

const PLUGIN_CAPS = ['CONTROLLER_SERVICE', 'VOLUME_ACCESSIBILITY_CONSTRAINTS', 'GROUP_CONTROLLER_SERVICE'];
const NODE_CAPS = ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER', 'VOLUME_MOUNT_GROUP'];

describe.runIf(csiRunnable)('granary csi over its unix socket (csi-sanity node checks)', () => {
  let work: string;
  let plugin: Plugin;
  let csi: CsiClient;
  let source: string;
  let pods: string;

  const publishReq = (target: string, extra: Record<string, unknown> = {}) => ({
    volume_id: 'vol-1',
    target_path: target,
    volume_capability: READ_ONLY_MANY,
    readonly: true,
    volume_context: { source },
    ...extra,
  });

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'granary-csi-conf-'));
    await mkdir(join(work, 'data', 'sub'), { recursive: true });
    await writeFile(join(work, 'data', 'a.txt'), 'alpha\n');
    await writeFile(join(work, 'data', 'sub', 'b.bin'), Buffer.alloc(100_000, 7));
    source = `file://${join(work, 'data')}/`;
    pods = join(work, 'pods');
    await mkdir(pods);
    plugin = await startPlugin(work);
    csi = csiClient(plugin.socket);
  }, 90_000);

  afterAll(async () => {
    csi?.close();
    await plugin?.kill('SIGTERM');
    await cleanupCsi([join(work, 'state')]);
    await rm(work, { recursive: true, force: true });
  }, 60_000);

  it('names itself with a DNS-like name of at most 63 characters and a version', async () => {
    const info = await csi.identity<{ name: string; vendor_version: string }>('GetPluginInfo');
    expect(info.name).toBe(DRIVER_NAME);
    expect(info.name.length).toBeGreaterThan(0);
    expect(info.name.length).toBeLessThanOrEqual(63);
    expect(info.name).toMatch(/^[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?$/);
    expect(info.vendor_version).not.toBe('');
  });

  it('reports plugin and node capabilities of known types, and answers Probe', async () => {
    const plug = await csi.identity<{ capabilities: { service?: { type: string } }[] }>('GetPluginCapabilities');
    for (const c of plug.capabilities) expect(PLUGIN_CAPS).toContain(c.service?.type);
    const node = await csi.node<{ capabilities: { rpc: { type: string } }[] }>('NodeGetCapabilities');
    const types = node.capabilities.map((c) => c.rpc.type);
    for (const t of types) expect(NODE_CAPS).toContain(t);
    expect(types).toEqual(expect.arrayContaining(['GET_VOLUME_STATS', 'VOLUME_CONDITION']));
    const probe = await csi.identity<{ ready: { value: boolean } | null }>('Probe');
    expect(probe.ready?.value ?? true).toBe(true);
  });

  it('gives a non-empty node_id', async () => {
    const info = await csi.node<{ node_id: string; max_volumes_per_node: number }>('NodeGetInfo');
    expect(info.node_id).toBe('node-1');
  });

  it('refuses a publish without volume_id, target_path or volume_capability with INVALID_ARGUMENT', async () => {
    const target = join(pods, 'missing');
    expect(await statusOf(csi.node('NodePublishVolume', publishReq(target, { volume_id: '' })))).toBe(status.INVALID_ARGUMENT);
    expect(await statusOf(csi.node('NodePublishVolume', publishReq('', {})))).toBe(status.INVALID_ARGUMENT);
    expect(await statusOf(csi.node('NodePublishVolume', publishReq(target, { volume_capability: null })))).toBe(status.INVALID_ARGUMENT);
    expect(await statusOf(csi.node('NodePublishVolume', publishReq(target, { volume_context: {} })))).toBe(status.INVALID_ARGUMENT);
    expect(await statusOf(csi.node('NodePublishVolume', publishReq(target, { volume_context: { source, sorce: 'x' } })))).toBe(status.INVALID_ARGUMENT);
    const block = { block: {}, access_mode: { mode: 'MULTI_NODE_READER_ONLY' } };
    expect(await statusOf(csi.node('NodePublishVolume', publishReq(target, { volume_capability: block })))).toBe(status.INVALID_ARGUMENT);
    expect(existsSync(target)).toBe(false);
  });

  it('refuses an unpublish without volume_id or target_path with INVALID_ARGUMENT', async () => {
    expect(await statusOf(csi.node('NodeUnpublishVolume', { volume_id: '', target_path: join(pods, 'x') }))).toBe(status.INVALID_ARGUMENT);
    expect(await statusOf(csi.node('NodeUnpublishVolume', { volume_id: 'vol-1', target_path: '' }))).toBe(status.INVALID_ARGUMENT);
  });

  it('refuses NodeGetVolumeStats without its arguments, and answers NOT_FOUND for an unknown volume', async () => {
    expect(await statusOf(csi.node('NodeGetVolumeStats', { volume_id: '', volume_path: join(pods, 'x') }))).toBe(status.INVALID_ARGUMENT);
    expect(await statusOf(csi.node('NodeGetVolumeStats', { volume_id: 'vol-1', volume_path: '' }))).toBe(status.INVALID_ARGUMENT);
    expect(await statusOf(csi.node('NodeGetVolumeStats', { volume_id: 'nope', volume_path: join(pods, 'nope') }))).toBe(status.NOT_FOUND);
  });

  it('publishes read-only, idempotently; an incompatible publish at the same target gets ALREADY_EXISTS', async () => {
    const target = join(pods, 'pod-a', 'mount');
    await mkdir(join(pods, 'pod-a'));
    await csi.node('NodePublishVolume', publishReq(target));
    expect(readFileSync(join(target, 'a.txt'), 'utf8')).toBe('alpha\n');
    expect(readFileSync(join(target, 'sub', 'b.bin'))).toEqual(Buffer.alloc(100_000, 7));
    expect(mountAt(target)?.fsType).toBe('fuse.granary');
    await expect(writeFile(join(target, 'new.txt'), 'x')).rejects.toMatchObject({ code: 'EROFS' });

    const holders = records(join(work, 'state')).map((r) => r.stagings.map((s) => s.holderPid));
    await csi.node('NodePublishVolume', publishReq(target));
    expect(records(join(work, 'state')).map((r) => r.stagings.map((s) => s.holderPid))).toEqual(holders);

    expect(await statusOf(csi.node('NodePublishVolume', publishReq(target, { volume_id: 'vol-2' })))).toBe(status.ALREADY_EXISTS);
    expect(await statusOf(csi.node('NodePublishVolume', publishReq(target, { volume_context: { source: `${source}sub/` } })))).toBe(status.ALREADY_EXISTS);
    expect(readFileSync(join(target, 'a.txt'), 'utf8')).toBe('alpha\n');

    const stats = await csi.node<{ usage: { unit: string; total: number }[]; volume_condition: { abnormal: boolean; message: string } }>('NodeGetVolumeStats', { volume_id: 'vol-1', volume_path: target });
    expect(stats.volume_condition.abnormal).toBe(false);
    expect(stats.usage.map((u) => u.unit).sort()).toEqual(['BYTES', 'INODES']);
    expect(await statusOf(csi.node('NodeGetVolumeStats', { volume_id: 'vol-2', volume_path: target }))).toBe(status.NOT_FOUND);

    await csi.node('NodeUnpublishVolume', { volume_id: 'vol-1', target_path: target });
    expect(existsSync(target)).toBe(false);
    expect(mountAt(target)).toBeUndefined();
    expect(records(join(work, 'state'))).toEqual([]);
    await csi.node('NodeUnpublishVolume', { volume_id: 'vol-1', target_path: target });
    expect(await statusOf(csi.node('NodeGetVolumeStats', { volume_id: 'vol-1', volume_path: target }))).toBe(status.NOT_FOUND);
  }, 120_000);

  it('answers OK to an unpublish of a target it never published', async () => {
    await csi.node('NodeUnpublishVolume', { volume_id: 'never', target_path: join(pods, 'never', 'mount') });
  });

  it('publishes an ephemeral inline volume with the pod information the kubelet adds', async () => {
    const target = join(pods, 'pod-b', 'mount');
    await mkdir(join(pods, 'pod-b'));
    const context = {
      source,
      [EPHEMERAL_CONTEXT_KEY]: 'true',
      'csi.storage.k8s.io/pod.name': 'trainer-0',
      'csi.storage.k8s.io/pod.namespace': 'ml',
      'csi.storage.k8s.io/pod.uid': '3f0c1c9e-0000-4000-8000-000000000000',
      'csi.storage.k8s.io/serviceAccount.name': 'default',
    };
    const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    await csi.node('NodePublishVolume', { volume_id: 'csi-8d3b0c', target_path: target, volume_capability: cap, readonly: false, volume_context: context });
    expect(readFileSync(join(target, 'a.txt'), 'utf8')).toBe('alpha\n');
    await expect(writeFile(join(target, 'a.txt'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await csi.node('NodeUnpublishVolume', { volume_id: 'csi-8d3b0c', target_path: target });
    expect(existsSync(target)).toBe(false);
  }, 120_000);

  it('logs every publish and unpublish in one line', () => {
    expect(plugin.output()).toMatch(/NodePublishVolume volume_id=vol-1 target_path=\S+pod-a\/mount: OK/);
    expect(plugin.output()).toMatch(/NodePublishVolume volume_id=vol-2 target_path=\S+: ALREADY_EXISTS: GRANARY_ERR_ALREADY_EXISTS/);
  });
});

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CSI } from '../../deploy/kubernetes/generator/csi-constants.js';
import { at, container, flags, list, ofKind, volume } from './support.js';

/** The plugin's own constants, where the plugin is part of this tree. */
const pluginConstants = join(import.meta.dirname, '..', '..', 'src', 'csi', 'constants.ts');

interface PluginConstants {
  DRIVER_NAME: string;
  DEFAULT_ENDPOINT: string;
  DEFAULT_STATE_DIR: string;
  KUBELET_SOCKET_PATH: string;
  KUBELET_REGISTRATION_DIR: string;
  KUBELET_PODS_DIR: string;
  VOLUME_CONTEXT_KEYS: Record<string, string>;
  SECRET_KEYS: Record<string, string>;
  VOLUME_LIFECYCLE_MODES: readonly string[];
  CSI_DRIVER_SPEC: Record<string, unknown>;
}

describe('the manifests and the CSI node plugin', () => {
  if (!existsSync(pluginConstants)) console.warn('[skip] src/csi/constants.ts is not in this tree: the manifests\' CSI names are not compared with the plugin\'s');
  it.runIf(existsSync(pluginConstants))('agree on the driver name, socket, state directory, volume context and secret keys', async () => {
    const c = (await import(pathToFileURL(pluginConstants).href)) as PluginConstants;
    expect(CSI.driverName).toBe(c.DRIVER_NAME);
    expect(`unix://${CSI.socketPath}`).toBe(c.DEFAULT_ENDPOINT);
    expect(CSI.stateDir).toBe(c.DEFAULT_STATE_DIR);
    expect(CSI.volumeContext).toEqual(c.VOLUME_CONTEXT_KEYS);
    expect(CSI.secretKeys).toEqual(c.SECRET_KEYS);
    const driver = ofKind('CSIDriver')[0];
    expect(at(driver, 'spec')).toMatchObject({ ...c.CSI_DRIVER_SPEC, volumeLifecycleModes: [...c.VOLUME_LIFECYCLE_MODES] });
    const node = ofKind('DaemonSet').find((d) => list(at(d, 'spec', 'template', 'spec', 'containers')).some((x) => at(x, 'name') === 'csi-plugin'));
    if (node === undefined) throw new Error('no CSI node DaemonSet');
    const registrar = container(node, 'node-driver-registrar');
    expect(flags(registrar.args).get('kubelet-registration-path')).toBe(c.KUBELET_SOCKET_PATH);
    expect(at(volume(node, 'registration-dir'), 'hostPath', 'path')).toBe(c.KUBELET_REGISTRATION_DIR);
    expect(at(volume(node, 'pods-dir'), 'hostPath', 'path')).toBe(c.KUBELET_PODS_DIR);
  });
});

import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IMAGE } from '../../deploy/kubernetes/generator/names.js';
import { DEPLOY_DIR, kubectl, kubectlAvailable } from './support.js';

/** `kind namespace/name` of each document in kustomize's output, in order. */
async function rendered(dir: string): Promise<{ ids: string[]; text: string }> {
  const text = await kubectl(['kustomize', dir]);
  const ids = text
    .split(/^---$/m)
    .map((doc) => {
      const kind = /^kind: (\S+)$/m.exec(doc)?.[1];
      const name = /^ {2}name: (\S+)$/m.exec(doc)?.[1];
      const ns = /^ {2}namespace: (\S+)$/m.exec(doc)?.[1];
      return `${kind ?? '?'} ${ns === undefined ? '' : `${ns}/`}${name ?? '?'}`;
    });
  return { ids, text };
}

describe.runIf(kubectlAvailable())('kubectl kustomize (offline)', () => {
  it('renders the cache and the CSI driver: namespace, config, etcd, workers, driver and node plugin', async () => {
    const { ids, text } = await rendered(DEPLOY_DIR);
    expect([...ids].sort()).toEqual(
      [
        'CSIDriver csi.granary.dev',
        'ConfigMap granary/granary-config',
        'DaemonSet granary/granary-csi-node',
        'DaemonSet granary/granary-worker',
        'Namespace granary',
        'PodDisruptionBudget granary/granary-etcd',
        'Service granary/granary-etcd',
        'Service granary/granary-etcd-peer',
        'ServiceAccount granary/granary-csi-node',
        'ServiceAccount granary/granary-etcd',
        'ServiceAccount granary/granary-worker',
        'StatefulSet granary/granary-etcd',
      ].sort(),
    );
    // The example Secret (a placeholder token) is never part of what gets applied.
    expect(text).not.toMatch(/^kind: Secret$/m);
    const images = [...text.matchAll(/image: (\S+)/g)].map((m) => m[1]);
    expect(images.filter((i) => i?.startsWith(`${IMAGE.name}:`))).toEqual([IMAGE.ref, IMAGE.ref, IMAGE.ref]);
  });

  it('renders the examples: their namespace, the static volume and claim, the Job and the inline-volume pod', async () => {
    const { ids } = await rendered(join(DEPLOY_DIR, 'examples'));
    expect([...ids].sort()).toEqual(
      [
        'Job training/train-example',
        'Namespace training',
        'PersistentVolume granary-train-data',
        'PersistentVolumeClaim training/train-data',
        'Pod training/inline-volume-example',
      ].sort(),
    );
  });

  it('rewrites the granary image to the registry an operator names in the kustomization', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-kustomize-'));
    try {
      cpSync(DEPLOY_DIR, dir, { recursive: true });
      const file = join(dir, 'kustomization.yaml');
      const original = readFileSync(file, 'utf8');
      const edited = original.replace(`newName: ${IMAGE.name}\n`, 'newName: registry.example.com/ml/granary\n');
      expect(edited).not.toBe(original);
      writeFileSync(file, edited);
      const { text } = await rendered(dir);
      const images = [...text.matchAll(/image: (\S+)/g)].map((m) => m[1]).filter((i) => i?.includes('granary'));
      expect(images).toEqual(Array.from({ length: 3 }, () => `registry.example.com/ml/granary:${IMAGE.tag}`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Examples of using the driver: a static PersistentVolume and its claim, a training Job
 * reading the claim, a pod that names its data inline (an ephemeral CSI volume), and the
 * Secrets both need. Every container that reads a granary volume mounts it with
 * HostToContainer propagation: a mount repaired on the node then shows in the running container.
 */
import { Job } from 'kubernetes-models/batch/v1';
import { PersistentVolume, PersistentVolumeClaim, Pod, Secret, type IVolumeMount } from 'kubernetes-models/v1';
import { CSI } from './csi-constants.js';
import { CLUSTER_NAME, ETCD, EXAMPLES, labels, NAMESPACE, TOKEN_SECRET } from './names.js';

const meta = (name: string) => ({ name, namespace: EXAMPLES.namespace, labels: labels('example') });

const dataMount: IVolumeMount = { name: 'data', mountPath: EXAMPLES.mountPath, readOnly: true, mountPropagation: 'HostToContainer' };

const restricted = {
  runAsNonRoot: true,
  runAsUser: 1000,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
};

/** The volume attributes (CSI `volume_context`): the data, and the cluster that caches it. */
export function volumeAttributes(): Record<string, string> {
  const k = CSI.volumeContext;
  return { [k.source]: EXAMPLES.source, [k.etcd]: ETCD.clientUrl, [k.cluster]: CLUSTER_NAME };
}

/**
 * The token Secret, with a placeholder: workers read it in their namespace; CSI volumes
 * name it in `nodePublishSecretRef` (a PersistentVolume may point to any namespace, an
 * inline volume only to its pod's). Never apply the placeholder: docs/kubernetes.md
 * creates the Secrets with a random token.
 */
export function secretExamples(): Secret[] {
  return [NAMESPACE, EXAMPLES.namespace].map(
    (namespace) =>
      new Secret({
        metadata: { name: TOKEN_SECRET, namespace, labels: { 'app.kubernetes.io/part-of': 'granary' } },
        type: 'Opaque',
        stringData: { [CSI.secretKeys.token]: 'REPLACE-ME-with-the-output-of-openssl-rand-hex-32' },
      }),
  );
}

export function staticVolumeObjects() {
  const pv = new PersistentVolume({
    metadata: { name: EXAMPLES.persistentVolume, labels: labels('example') },
    spec: {
      // Nominal: a granary volume has no size of its own (the store has the data).
      capacity: { storage: '1Ti' },
      accessModes: ['ReadOnlyMany'],
      persistentVolumeReclaimPolicy: 'Retain',
      storageClassName: '',
      claimRef: { namespace: EXAMPLES.namespace, name: EXAMPLES.claim },
      csi: {
        driver: CSI.driverName,
        // Unique per PersistentVolume: the kubelet keys the volume by it.
        volumeHandle: EXAMPLES.persistentVolume,
        readOnly: true,
        volumeAttributes: volumeAttributes(),
        nodePublishSecretRef: { name: TOKEN_SECRET, namespace: NAMESPACE },
      },
    },
  });
  const pvc = new PersistentVolumeClaim({
    metadata: meta(EXAMPLES.claim),
    spec: {
      accessModes: ['ReadOnlyMany'],
      storageClassName: '',
      volumeName: EXAMPLES.persistentVolume,
      resources: { requests: { storage: '1Ti' } },
    },
  });
  return [pv, pvc];
}

/** Two passes over every file: the first fills the cache, the second reads it. */
const TRAIN_SCRIPT = `import os, time
root = '${EXAMPLES.mountPath}'
for epoch in range(2):
    files = total = 0
    t0 = time.monotonic()
    for path, _, names in os.walk(root):
        for name in sorted(names):
            with open(os.path.join(path, name), 'rb') as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
            files += 1
    secs = max(time.monotonic() - t0, 1e-9)
    print(f'epoch {epoch}: {files} files, {total / 1e6:.1f} MB in {secs:.1f} s ({total / 1e6 / secs:.1f} MB/s)', flush=True)
`;

export function trainingJob(): Job {
  return new Job({
    metadata: meta(EXAMPLES.job),
    spec: {
      backoffLimit: 2,
      ttlSecondsAfterFinished: 86_400,
      template: {
        metadata: { labels: labels('example') },
        spec: {
          restartPolicy: 'Never',
          automountServiceAccountToken: false,
          containers: [
            {
              name: 'train',
              image: EXAMPLES.trainerImage,
              command: ['python', '-c', TRAIN_SCRIPT],
              securityContext: restricted,
              resources: { requests: { cpu: '1', memory: '512Mi' }, limits: { memory: '1Gi' } },
              volumeMounts: [dataMount],
            },
          ],
          volumes: [{ name: 'data', persistentVolumeClaim: { claimName: EXAMPLES.claim, readOnly: true } }],
        },
      },
    },
  });
}

export function inlineVolumePod(): Pod {
  return new Pod({
    metadata: meta(EXAMPLES.inlinePod),
    spec: {
      automountServiceAccountToken: false,
      containers: [
        {
          name: 'shell',
          image: EXAMPLES.shellImage,
          command: ['sh', '-c', `ls -l ${EXAMPLES.mountPath} && exec sleep 3600`],
          securityContext: restricted,
          resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } },
          volumeMounts: [dataMount],
        },
      ],
      volumes: [
        {
          name: 'data',
          csi: {
            driver: CSI.driverName,
            readOnly: true,
            volumeAttributes: volumeAttributes(),
            // An inline volume's Secret lives in the pod's own namespace.
            nodePublishSecretRef: { name: TOKEN_SECRET },
          },
        },
      ],
    },
  });
}

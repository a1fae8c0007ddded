/**
 * Cache workers: one per node (a DaemonSet), each with a memory tier and a disk tier in a
 * host directory that outlives the pod, registering in etcd under the node's name so a
 * restarted worker owns the same keys and finds its pages again.
 */
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ServiceAccount } from 'kubernetes-models/v1';
import { fieldEnv, sharedEnvFrom } from './common.js';
import { CSI } from './csi-constants.js';
import { IMAGE, labels, NAMESPACE, TOKEN_SECRET, WORKER } from './names.js';

const meta = (name: string) => ({ name, namespace: NAMESPACE, labels: labels('worker') });

/**
 * `granary worker`'s arguments. The worker binds to the pod's IP, which is not loopback,
 * so it refuses to start without a token (GRANARY_TOKEN, from the Secret): no `--insecure`.
 */
export function workerArgs(): string[] {
  return [
    'worker',
    '--host=$(POD_IP)',
    `--port=${WORKER.port}`,
    `--advertise-url=http://$(POD_IP):${WORKER.port}`,
    '--id=$(NODE_NAME)',
    `--memory=${WORKER.memoryTier}`,
    `--disk-dir=${WORKER.cacheDir}`,
    `--disk=${WORKER.diskTier}`,
    `--lease-ttl=${WORKER.leaseTtlSeconds}`,
  ];
}

export function workerObjects() {
  const serviceAccount = new ServiceAccount({ metadata: meta(WORKER.name), automountServiceAccountToken: false });
  const daemonSet = new DaemonSet({
    metadata: meta(WORKER.name),
    spec: {
      selector: { matchLabels: labels('worker') },
      // One node at a time, never two workers on one page store (it is locked).
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } },
      template: {
        metadata: { labels: labels('worker') },
        spec: {
          serviceAccountName: WORKER.name,
          automountServiceAccountToken: false,
          // SIGTERM: the worker leaves the ring (revokes its lease) and finishes reads in flight.
          terminationGracePeriodSeconds: 30,
          securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
          initContainers: [
            {
              // kubelet creates the host directory as root; hand it to the worker's user, with only CAP_CHOWN.
              name: 'page-store-owner',
              image: IMAGE.ref,
              command: ['chown', `${WORKER.uid}:${WORKER.uid}`, WORKER.cacheDir],
              securityContext: {
                runAsUser: 0,
                runAsNonRoot: false,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'], add: ['CHOWN'] },
              },
              resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } },
              volumeMounts: [{ name: 'page-store', mountPath: WORKER.cacheDir }],
            },
          ],
          containers: [
            {
              name: 'worker',
              image: IMAGE.ref,
              command: ['granary'],
              args: workerArgs(),
              env: [
                fieldEnv('POD_IP', 'status.podIP'),
                fieldEnv('NODE_NAME', 'spec.nodeName'),
                { name: 'GRANARY_TOKEN', valueFrom: { secretKeyRef: { name: TOKEN_SECRET, key: CSI.secretKeys.token } } },
              ],
              envFrom: sharedEnvFrom(),
              ports: [{ name: 'http', containerPort: WORKER.port }],
              // /healthz is the one endpoint that needs no token.
              readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 5 },
              livenessProbe: { httpGet: { path: '/healthz', port: 'http' }, initialDelaySeconds: 10, periodSeconds: 10, failureThreshold: 6 },
              resources: { requests: { cpu: '500m', memory: WORKER.memoryLimit }, limits: { cpu: '2', memory: WORKER.memoryLimit } },
              securityContext: {
                runAsUser: WORKER.uid,
                runAsGroup: WORKER.uid,
                runAsNonRoot: true,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: [
                { name: 'page-store', mountPath: WORKER.cacheDir },
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
          volumes: [
            { name: 'page-store', hostPath: { path: WORKER.hostCacheDir, type: 'DirectoryOrCreate' } },
            { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
          ],
        },
      },
    },
  });
  return [serviceAccount, daemonSet];
}

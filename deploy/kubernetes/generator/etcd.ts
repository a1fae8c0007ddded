/**
 * etcd for the cluster's membership: three members in a StatefulSet, a headless
 * Service that names each member (peer traffic and bootstrap), a client Service the
 * workers and clients dial, and a disruption budget that keeps a quorum through drains.
 */
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Service, ServiceAccount } from 'kubernetes-models/v1';
import { ETCD, labels, NAMESPACE, SIDECAR_IMAGES } from './names.js';

const meta = (name: string) => ({ name, namespace: NAMESPACE, labels: labels('etcd') });

function memberPeerUrl(i: number): string {
  return `http://${ETCD.name}-${i}.${ETCD.peerService}.${NAMESPACE}.svc:${ETCD.peerPort}`;
}

/** `--initial-cluster`: every member by its stable name; used once, when the data directory is empty. */
export function initialCluster(): string {
  return Array.from({ length: ETCD.replicas }, (_, i) => `${ETCD.name}-${i}=${memberPeerUrl(i)}`).join(',');
}

export function etcdObjects() {
  const peerService = new Service({
    metadata: meta(ETCD.peerService),
    spec: {
      clusterIP: 'None',
      // Members must find each other before any is ready: a new cluster needs them all to elect.
      publishNotReadyAddresses: true,
      selector: labels('etcd'),
      ports: [
        { name: 'peer', port: ETCD.peerPort, targetPort: 'peer' },
        { name: 'client', port: ETCD.clientPort, targetPort: 'client' },
      ],
    },
  });
  const clientService = new Service({
    metadata: meta(ETCD.name),
    spec: { type: 'ClusterIP', selector: labels('etcd'), ports: [{ name: 'client', port: ETCD.clientPort, targetPort: 'client' }] },
  });
  const serviceAccount = new ServiceAccount({ metadata: meta(ETCD.name), automountServiceAccountToken: false });
  const host = `$(POD_NAME).${ETCD.peerService}.${NAMESPACE}.svc`;
  const statefulSet = new StatefulSet({
    metadata: meta(ETCD.name),
    spec: {
      serviceName: ETCD.peerService,
      replicas: ETCD.replicas,
      // All members start together: a fresh cluster has no quorum until every one is up.
      podManagementPolicy: 'Parallel',
      selector: { matchLabels: labels('etcd') },
      updateStrategy: { type: 'RollingUpdate' },
      template: {
        metadata: { labels: labels('etcd') },
        spec: {
          serviceAccountName: ETCD.name,
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, runAsUser: 65534, runAsGroup: 65534, fsGroup: 65534, seccompProfile: { type: 'RuntimeDefault' } },
          affinity: {
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                { weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: labels('etcd') } } },
              ],
            },
          },
          containers: [
            {
              name: 'etcd',
              image: SIDECAR_IMAGES.etcd,
              command: ['etcd'],
              args: [
                '--name=$(POD_NAME)',
                `--data-dir=${ETCD.dataDir}/data`,
                `--listen-peer-urls=http://0.0.0.0:${ETCD.peerPort}`,
                `--listen-client-urls=http://0.0.0.0:${ETCD.clientPort}`,
                `--advertise-client-urls=http://${host}:${ETCD.clientPort}`,
                `--initial-advertise-peer-urls=http://${host}:${ETCD.peerPort}`,
                `--initial-cluster=${initialCluster()}`,
                '--initial-cluster-state=new',
                `--initial-cluster-token=${ETCD.name}`,
                '--auto-compaction-mode=periodic',
                '--auto-compaction-retention=1h',
              ],
              env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
              ports: [
                { name: 'client', containerPort: ETCD.clientPort },
                { name: 'peer', containerPort: ETCD.peerPort },
              ],
              // Ready when this member serves (a serializable read answers without a quorum round trip).
              readinessProbe: { httpGet: { path: '/health?serializable=true', port: 'client' }, periodSeconds: 5, failureThreshold: 3 },
              // Alive while it listens: a member without quorum must not be restarted for it.
              livenessProbe: { tcpSocket: { port: 'client' }, initialDelaySeconds: 10, periodSeconds: 10, failureThreshold: 6 },
              resources: { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } },
              securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
              volumeMounts: [{ name: 'data', mountPath: ETCD.dataDir }],
            },
          ],
        },
      },
      volumeClaimTemplates: [
        {
          metadata: { name: 'data', labels: labels('etcd') },
          spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: ETCD.storage } } },
        },
      ],
    },
  });
  const budget = new PodDisruptionBudget({
    metadata: meta(ETCD.name),
    spec: { maxUnavailable: 1, selector: { matchLabels: labels('etcd') } },
  });
  return [serviceAccount, peerService, clientService, statefulSet, budget];
}

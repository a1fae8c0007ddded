/**
 * The CSI driver: the CSIDriver object that tells the kubelet how to call it, and the
 * node plugin on every node (a DaemonSet of the plugin, the kubelet registrar and a
 * liveness probe). Only the plugin container is privileged: mounting FUSE and
 * propagating the mount back to the host need it; the sidecars run with no capabilities.
 */
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { CSIDriver } from 'kubernetes-models/storage.k8s.io/v1';
import { ServiceAccount } from 'kubernetes-models/v1';
import { fieldEnv } from './common.js';
import { CSI } from './csi-constants.js';
import { CONFIG_MAP, CSI_NODE, IMAGE, labels, NAMESPACE, SIDECAR_IMAGES } from './names.js';

const meta = (name: string) => ({ name, namespace: NAMESPACE, labels: labels('csi-node') });

/** The plugin's directory on the host, where the kubelet finds its socket. */
export const hostPluginDir = `${CSI_NODE.kubeletDir}/plugins/${CSI.driverName}`;

export function csiDriverObject(): CSIDriver {
  return new CSIDriver({
    metadata: { name: CSI.driverName, labels: labels('csi-node') },
    spec: {
      // Node-only: no controller, nothing to attach.
      attachRequired: false,
      // The plugin learns which pod a volume is for (logs, the mount's name).
      podInfoOnMount: true,
      // The kubelet calls NodePublishVolume again periodically: that call repairs a dead mount in place.
      requiresRepublish: true,
      volumeLifecycleModes: ['Persistent', 'Ephemeral'],
      // A read-only FUSE view: the kubelet must not try to chown it for a pod's fsGroup.
      fsGroupPolicy: 'None',
      storageCapacity: false,
    },
  });
}

export function pluginArgs(): string[] {
  return ['csi', `--endpoint=unix://${CSI.socketPath}`, '--node-id=$(NODE_NAME)', `--state-dir=${CSI.stateDir}`];
}

export function registrarArgs(): string[] {
  return [
    `--csi-address=${CSI.socketPath}`,
    `--kubelet-registration-path=${hostPluginDir}/${CSI.socketPath.slice(CSI_NODE.socketDir.length + 1)}`,
    `--http-endpoint=127.0.0.1:${CSI_NODE.registrarHealthPort}`,
  ];
}

const unprivileged = { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } };

export function csiNodeObjects() {
  const serviceAccount = new ServiceAccount({ metadata: meta(CSI_NODE.name), automountServiceAccountToken: false });
  const socketMount = { name: 'plugin-dir', mountPath: CSI_NODE.socketDir };
  const daemonSet = new DaemonSet({
    metadata: meta(CSI_NODE.name),
    spec: {
      selector: { matchLabels: labels('csi-node') },
      // A new plugin pod starts only when an operator deletes the old one, node by node
      // (docs/kubernetes.md, Upgrades): the pods' mounts are never rolled out from under them.
      updateStrategy: { type: 'OnDelete' },
      template: {
        metadata: { labels: labels('csi-node') },
        spec: {
          serviceAccountName: CSI_NODE.name,
          automountServiceAccountToken: false,
          // Mounts outlive this pod: their processes must not live in namespaces that die with it.
          hostNetwork: true,
          hostPID: true,
          dnsPolicy: 'ClusterFirstWithHostNet',
          // Evicting the plugin under node pressure would take every pod's data with it.
          priorityClassName: 'system-node-critical',
          // Wherever a pod can run, its volumes must mount.
          tolerations: [{ operator: 'Exists' }],
          terminationGracePeriodSeconds: 10,
          containers: [
            {
              name: 'csi-plugin',
              image: IMAGE.ref,
              command: ['granary'],
              args: pluginArgs(),
              env: [fieldEnv('NODE_NAME', 'spec.nodeName')],
              // Defaults only (etcd, cluster, store endpoint), no credentials: a mount inherits the
              // plugin's environment, so store keys here would serve every pod that names the driver.
              // Each volume brings its own token and store keys in its Secret.
              envFrom: [{ configMapRef: { name: CONFIG_MAP } }],
              // mount(2) of FUSE, and a Bidirectional mount so mounts made here reach the host and the pods.
              securityContext: { privileged: true, runAsUser: 0 },
              ports: [{ name: 'healthz', containerPort: CSI_NODE.healthPort, hostPort: CSI_NODE.healthPort, protocol: 'TCP' }],
              livenessProbe: { httpGet: { host: '127.0.0.1', path: '/healthz', port: 'healthz' }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 5 },
              // No memory limit: the plugin moves each mount's processes out of this container's cgroup
              // (--mount-cgroup), but where a move fails they stay here, and an OOM kill would take a
              // pod's volume down. The request reserves room for a few mounts.
              resources: { requests: { cpu: '100m', memory: '512Mi' } },
              volumeMounts: [
                socketMount,
                { name: 'pods-dir', mountPath: CSI_NODE.podsDir, mountPropagation: 'Bidirectional' },
                { name: 'fuse-device', mountPath: '/dev/fuse' },
                // Staging mounts live here: they must reach the host, so a restarted plugin finds them.
                { name: 'state-dir', mountPath: CSI.stateDir, mountPropagation: 'Bidirectional' },
                // The host's cgroup hierarchies, over the container's own: each mount's processes move to
                // the host's granary-mounts cgroup, so a stop of this container (which kills its cgroup) spares them.
                { name: 'host-cgroup', mountPath: '/sys/fs/cgroup' },
              ],
            },
            {
              name: 'node-driver-registrar',
              image: SIDECAR_IMAGES.registrar,
              args: registrarArgs(),
              // The registrar's own socket directory on the host is root's: it writes there as root, without capabilities.
              securityContext: { ...unprivileged, runAsUser: 0 },
              ports: [{ name: 'registrar', containerPort: CSI_NODE.registrarHealthPort, hostPort: CSI_NODE.registrarHealthPort, protocol: 'TCP' }],
              livenessProbe: { httpGet: { host: '127.0.0.1', path: '/healthz', port: 'registrar' }, initialDelaySeconds: 5, periodSeconds: 10, timeoutSeconds: 5 },
              resources: { requests: { cpu: '10m', memory: '20Mi' }, limits: { memory: '64Mi' } },
              volumeMounts: [socketMount, { name: 'registration-dir', mountPath: '/registration' }],
            },
            {
              name: 'liveness-probe',
              image: SIDECAR_IMAGES.livenessProbe,
              // Calls the plugin's Probe over its socket and answers the kubelet's HTTP probe above.
              args: [`--csi-address=${CSI.socketPath}`, `--http-endpoint=127.0.0.1:${CSI_NODE.healthPort}`, '--probe-timeout=4s'],
              securityContext: { ...unprivileged, runAsUser: 0 },
              resources: { requests: { cpu: '10m', memory: '20Mi' }, limits: { memory: '64Mi' } },
              volumeMounts: [socketMount],
            },
          ],
          volumes: [
            { name: 'plugin-dir', hostPath: { path: hostPluginDir, type: 'DirectoryOrCreate' } },
            { name: 'registration-dir', hostPath: { path: CSI_NODE.registrationDir, type: 'Directory' } },
            { name: 'pods-dir', hostPath: { path: CSI_NODE.podsDir, type: 'Directory' } },
            { name: 'fuse-device', hostPath: { path: '/dev/fuse', type: 'CharDevice' } },
            { name: 'state-dir', hostPath: { path: CSI.stateDir, type: 'DirectoryOrCreate' } },
            { name: 'host-cgroup', hostPath: { path: '/sys/fs/cgroup', type: 'Directory' } },
          ],
        },
      },
    },
  });
  return [serviceAccount, daemonSet];
}

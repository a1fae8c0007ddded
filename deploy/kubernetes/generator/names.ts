/**
 * The names, labels, images, ports and paths the manifests share. Every object refers
 * to the others through these, and the tests check that the rendered objects agree.
 */
import { createRequire } from 'node:module';

const pkg = createRequire(import.meta.url)('../../../package.json') as { version: string };

export const NAMESPACE = 'granary';
export const PART_OF = 'granary';

/** The granary image; `kustomization.yaml` rewrites it (`images:`) to the registry it was pushed to. */
export const IMAGE = { name: 'granary', tag: pkg.version, get ref(): string { return `${this.name}:${this.tag}`; } };

export const SIDECAR_IMAGES = {
  etcd: 'quay.io/coreos/etcd:v3.5.21',
  registrar: 'registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0',
  livenessProbe: 'registry.k8s.io/sig-storage/livenessprobe:v2.15.0',
} as const;

/** The labels every object of a component carries; the selector is the same set. */
export function labels(component: 'etcd' | 'worker' | 'csi-node' | 'example'): Record<string, string> {
  return { 'app.kubernetes.io/name': 'granary', 'app.kubernetes.io/component': component, 'app.kubernetes.io/part-of': PART_OF };
}

export const ETCD = {
  name: 'granary-etcd',
  /** The headless Service that gives each member a stable DNS name. */
  peerService: 'granary-etcd-peer',
  replicas: 3,
  clientPort: 2379,
  peerPort: 2380,
  dataDir: '/var/lib/etcd',
  storage: '4Gi',
  /** What clients (workers, the CSI plugin's mounts, training pods) dial. */
  get clientUrl(): string {
    return `http://${this.name}.${NAMESPACE}.svc:${this.clientPort}`;
  },
} as const;

export const CLUSTER_NAME = 'default';

export const WORKER = {
  name: 'granary-worker',
  port: 7070,
  /** The page store's disk tier on each node: it survives restarts, so a restarted worker finds its pages. */
  hostCacheDir: '/var/cache/granary',
  cacheDir: '/var/cache/granary',
  memoryTier: '1GiB',
  diskTier: '50GiB',
  /** Memory tier plus the Node.js heap, buffers and in-flight reads. */
  memoryLimit: '2Gi',
  leaseTtlSeconds: 10,
  /** The unprivileged user the worker runs as (the image's `node` user). */
  uid: 1000,
} as const;

/** The Secret holding the worker token; CSI volumes name it in `nodePublishSecretRef`. */
export const TOKEN_SECRET = 'granary-token';
/** Optional Secret with store credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for workers and mounts. */
export const STORE_SECRET = 'granary-store-credentials';
/** Cluster-wide settings as GRANARY_* variables, read by workers and the CSI plugin alike. */
export const CONFIG_MAP = 'granary-config';

export const CSI_NODE = {
  name: 'granary-csi-node',
  /** Host paths: the kubelet's directories (a non-default kubelet root needs these patched). */
  kubeletDir: '/var/lib/kubelet',
  /** Where the kubelet puts volume targets (the driver has no staging step, so nothing else of the kubelet's is mounted). */
  podsDir: '/var/lib/kubelet/pods',
  registrationDir: '/var/lib/kubelet/plugins_registry',
  /** Inside the containers: where the plugin directory is mounted. */
  socketDir: '/csi',
  /** hostNetwork ports on 127.0.0.1 (the kubelet probes them from the host): away from the 9808/9809 most CSI drivers use. */
  healthPort: 9817,
  registrarHealthPort: 9818,
} as const;

export const EXAMPLES = {
  namespace: 'training',
  source: 's3://datasets/train/',
  persistentVolume: 'granary-train-data',
  claim: 'train-data',
  job: 'train-example',
  inlinePod: 'inline-volume-example',
  mountPath: '/data',
  trainerImage: 'python:3.12-slim',
  shellImage: 'busybox:1.37',
} as const;

/**
 * The CSI node plugin's facts in one place: what deploy manifests, docs and tests must
 * agree on (driver name, socket, flags, state directory, volume_context and secret keys).
 */

/** The CSI driver name (GetPluginInfo, the CSIDriver object, `csi.driver` in volumes). */
export const DRIVER_NAME = 'csi.granary.dev';

/** Where the kubelet looks for the driver's socket on the host (node-driver-registrar's --kubelet-registration-path). */
export const KUBELET_PLUGIN_DIR = `/var/lib/kubelet/plugins/${DRIVER_NAME}`;
export const KUBELET_SOCKET_PATH = `${KUBELET_PLUGIN_DIR}/csi.sock`;
/** node-driver-registrar's own registration directory on the host. */
export const KUBELET_REGISTRATION_DIR = '/var/lib/kubelet/plugins_registry';
/** The kubelet's pods directory: targets live under it; mount it with Bidirectional propagation. */
export const KUBELET_PODS_DIR = '/var/lib/kubelet/pods';

/** `--endpoint` default: the socket inside the plugin container (KUBELET_PLUGIN_DIR mounted at /csi). */
export const DEFAULT_ENDPOINT = 'unix:///csi/csi.sock';

/**
 * `--state-dir` default: one directory per published target (its record, its staging
 * mounts, the mount's log). A hostPath, so that a restarted plugin re-adopts its mounts.
 */
export const DEFAULT_STATE_DIR = '/var/lib/granary-csi';

/** The flags of `granary csi` (and their environment variables), besides the cache and store flags of `granary mount`. */
export const CSI_FLAGS = {
  endpoint: { flag: '--endpoint', env: 'CSI_ENDPOINT', default: DEFAULT_ENDPOINT },
  nodeId: { flag: '--node-id', env: 'GRANARY_CSI_NODE_ID' },
  stateDir: { flag: '--state-dir', env: 'GRANARY_CSI_STATE_DIR', default: DEFAULT_STATE_DIR },
  healthTimeout: { flag: '--health-timeout', env: 'GRANARY_CSI_HEALTH_TIMEOUT', default: '5s' },
  mountTimeout: { flag: '--mount-timeout', env: 'GRANARY_CSI_MOUNT_TIMEOUT', default: '90s' },
  maxVolumes: { flag: '--max-volumes', env: 'GRANARY_CSI_MAX_VOLUMES', default: 0 },
  /** Where each mount's processes move, out of the plugin container's cgroup (src/csi/cgroup.ts). */
  mountCgroup: { flag: '--mount-cgroup', env: 'GRANARY_CSI_MOUNT_CGROUP', default: 'granary-mounts' },
  requireMountCgroup: { flag: '--require-mount-cgroup', env: 'GRANARY_CSI_REQUIRE_MOUNT_CGROUP' },
  /** Passed to every `granary mount` when given (plugin-wide, not per volume). */
  metadataTtl: { flag: '--metadata-ttl', env: 'GRANARY_CSI_METADATA_TTL' },
  heartbeatTimeout: { flag: '--heartbeat-timeout', env: 'GRANARY_CSI_HEARTBEAT_TIMEOUT' },
} as const;

/** `volume_context` keys the plugin reads (PersistentVolume `csi.volumeAttributes`, or an inline volume's `volumeAttributes`). */
export const VOLUME_CONTEXT_KEYS = {
  /** The store prefix URL to mount (s3://bucket/prefix/, file://, http(s)://). Required. */
  source: 'source',
  /** Cache worker URLs, comma-separated, instead of the plugin's own etcd or workers. */
  workers: 'workers',
  /** etcd client URLs, comma-separated (with `cluster`), instead of the plugin's own. */
  etcd: 'etcd',
  /** Cluster name in etcd (with `etcd`). */
  cluster: 'cluster',
} as const;

/** Keys the kubelet adds itself (podInfoOnMount, inline volumes); accepted and ignored. */
export const KUBELET_CONTEXT_PREFIX = 'csi.storage.k8s.io/';
/** Set to "true" by the kubelet for an ephemeral inline volume. */
export const EPHEMERAL_CONTEXT_KEY = 'csi.storage.k8s.io/ephemeral';

/**
 * Keys of the CSI `secrets` field (a Secret named by `nodePublishSecretRef`). They reach
 * the mount through its environment, never its arguments, and are never logged.
 */
export const SECRET_KEYS = {
  /** Bearer token the cache workers require. */
  token: 'token',
  /** Store credentials for s3:// (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN). */
  awsAccessKeyId: 'awsAccessKeyId',
  awsSecretAccessKey: 'awsSecretAccessKey',
  awsSessionToken: 'awsSessionToken',
  /** etcd credentials, for an etcd with auth enabled. */
  etcdUser: 'etcdUser',
  etcdPassword: 'etcdPassword',
} as const;

/** The environment variable each secret key becomes in the mount's processes. */
export const SECRET_ENV: Record<keyof typeof SECRET_KEYS, string> = {
  token: 'GRANARY_TOKEN',
  awsAccessKeyId: 'AWS_ACCESS_KEY_ID',
  awsSecretAccessKey: 'AWS_SECRET_ACCESS_KEY',
  awsSessionToken: 'AWS_SESSION_TOKEN',
  etcdUser: 'GRANARY_ETCD_USER',
  etcdPassword: 'GRANARY_ETCD_PASSWORD',
};

/** The lifecycle modes the CSIDriver object lists. */
export const VOLUME_LIFECYCLE_MODES = ['Persistent', 'Ephemeral'] as const;

/** What the CSIDriver object must say for the plugin's repair and pod info to work. */
export const CSI_DRIVER_SPEC = { attachRequired: false, podInfoOnMount: true, requiresRepublish: true, fsGroupPolicy: 'None' } as const;

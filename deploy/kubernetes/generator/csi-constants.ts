/**
 * The CSI names the manifests share with the node plugin, as src/csi/constants.ts has
 * them; kept in this one file so that lining them up is a one-line change, and
 * test/deploy/csi-constants.test.ts compares the two where the plugin's file exists.
 */
export const CSI = {
  /** The driver name: the CSIDriver object, every volume's `driver`, the registrar's socket directory (DRIVER_NAME). */
  driverName: 'csi.granary.dev',
  /** The plugin's socket inside its container, the kubelet's plugin directory mounted on `/csi` (DEFAULT_ENDPOINT). */
  socketPath: '/csi/csi.sock',
  /** Records and staging mounts of published volumes, on the host: a restarted plugin re-adopts them (DEFAULT_STATE_DIR). */
  stateDir: '/var/lib/granary-csi',
  /** `volume_context` keys the plugin reads (VOLUME_CONTEXT_KEYS). */
  volumeContext: { source: 'source', workers: 'workers', etcd: 'etcd', cluster: 'cluster' },
  /** Keys of the CSI `secrets` (nodePublishSecretRef) the plugin reads (SECRET_KEYS). */
  secretKeys: {
    token: 'token',
    awsAccessKeyId: 'awsAccessKeyId',
    awsSecretAccessKey: 'awsSecretAccessKey',
    awsSessionToken: 'awsSessionToken',
    etcdUser: 'etcdUser',
    etcdPassword: 'etcdPassword',
  },
} as const;

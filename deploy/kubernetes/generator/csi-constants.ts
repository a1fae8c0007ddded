/**
 * The CSI names the manifests share with the node plugin (src/csi). Kept in this one
 * file so that lining them up with the plugin's own constants is a one-line change.
 */
export const CSI = {
  /** The driver name: the CSIDriver object, every volume's `driver`, the registrar's socket directory. */
  driverName: 'csi.granary.dev',
  /** The plugin's socket inside its container (the kubelet's plugin directory is mounted on `/csi`). */
  socketPath: '/csi/csi.sock',
  /** Where the plugin keeps what it needs to re-adopt mounts after a restart (a host directory). */
  stateDir: '/var/lib/granary/csi',
  /** `volume_context` keys the plugin reads. */
  volumeContext: { source: 'source', workers: 'workers', etcd: 'etcd', cluster: 'cluster' },
  /** Keys of the CSI `secrets` (nodePublishSecretRef) the plugin reads. */
  secretKeys: { token: 'token' },
} as const;

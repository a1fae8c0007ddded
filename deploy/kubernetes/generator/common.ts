/** Pieces several components share: the config map, the namespace, environment from the downward API. */
import { ConfigMap, Namespace, type IEnvVar, type IEnvFromSource } from 'kubernetes-models/v1';
import { CLUSTER_NAME, CONFIG_MAP, ETCD, NAMESPACE, PART_OF, STORE_SECRET } from './names.js';

export function namespaceObject(name: string = NAMESPACE): Namespace {
  return new Namespace({ metadata: { name, labels: { 'app.kubernetes.io/part-of': PART_OF } } });
}

/**
 * Cluster-wide settings as the GRANARY_* variables every granary command reads (flags >
 * GRANARY_* > config file > defaults): where etcd is, the cluster name, the store's region
 * and endpoint. Workers and the CSI plugin (and so every mount it starts) read the same ones.
 */
export function configMap(): ConfigMap {
  return new ConfigMap({
    metadata: { name: CONFIG_MAP, namespace: NAMESPACE, labels: { 'app.kubernetes.io/part-of': PART_OF } },
    data: { GRANARY_ETCD: ETCD.clientUrl, GRANARY_CLUSTER: CLUSTER_NAME, GRANARY_S3_REGION: 'us-east-1' },
  });
}

/** The settings above, plus store credentials when the optional Secret exists (else the AWS chain: IRSA, instance roles). */
export function sharedEnvFrom(): IEnvFromSource[] {
  return [{ configMapRef: { name: CONFIG_MAP } }, { secretRef: { name: STORE_SECRET, optional: true } }];
}

export function fieldEnv(name: string, fieldPath: string): IEnvVar {
  return { name, valueFrom: { fieldRef: { fieldPath } } };
}

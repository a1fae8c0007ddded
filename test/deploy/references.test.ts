import { describe, expect, it } from 'vitest';
import { CSI } from '../../deploy/kubernetes/generator/csi-constants.js';
import { CONFIG_MAP, ETCD, IMAGE, NAMESPACE, STORE_SECRET, TOKEN_SECRET, WORKER } from '../../deploy/kubernetes/generator/names.js';
import type { JsonObject } from '../../deploy/kubernetes/generator/yaml.js';
import { isLoopbackHost } from '../../src/cache/worker-access.js';
import { createProgram } from '../../src/cli/program.js';
import { envName, SECTIONS, type SectionName } from '../../src/config/keys.js';
import { allObjects, at, container, containers, flags, isObject, list, ofKind, one, podSpec, str, volume, label } from './support.js';

const workloads = (): JsonObject[] => allObjects().map((f) => f.object).filter((o) => ['StatefulSet', 'DaemonSet', 'Job', 'Pod'].includes(label(o.kind)));
const worker = () => one('DaemonSet', WORKER.name, NAMESPACE);
const csiNode = () => ofKind('DaemonSet').find((d) => containers(d).some((c) => c.name === 'csi-plugin')) as JsonObject;

function matches(selector: JsonValueMap, labels: JsonValueMap): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}
type JsonValueMap = Record<string, unknown>;

/** The long flags a `granary` subcommand accepts, or undefined when there is no such command. */
function cliFlags(command: string): Set<string> | undefined {
  const cmd = createProgram().commands.find((c) => c.name() === command);
  return cmd && new Set(cmd.options.map((o) => (o.long ?? '').replace(/^--/, '')));
}

/** Every `$(VAR)` an argument uses is defined in the container's env. */
function expectArgsVarsDefined(c: JsonObject): void {
  const defined = new Set(list(c.env).map((e) => str(at(e, 'name'))));
  for (const a of [...list(c.command), ...list(c.args)]) {
    for (const m of str(a).matchAll(/\$\(([A-Z_]+)\)/g)) expect(defined.has(m[1] ?? ''), `${label(c.name)}: $(${m[1]}) in ${str(a)}`).toBe(true);
  }
}

describe('deploy/kubernetes cross-references', () => {
  it('selects each workload\'s own pods, and every Service selects pods that declare its target ports', () => {
    for (const w of workloads().filter((o) => o.kind !== 'Pod' && o.kind !== 'Job')) {
      const sel = at(w, 'spec', 'selector', 'matchLabels') as JsonValueMap;
      expect(matches(sel, at(w, 'spec', 'template', 'metadata', 'labels') as JsonValueMap), label(at(w, 'metadata', 'name'))).toBe(true);
    }
    for (const svc of ofKind('Service')) {
      const sel = at(svc, 'spec', 'selector') as JsonValueMap;
      const targets = workloads().filter((w) => w.kind !== 'Pod' && matches(sel, at(w, 'spec', 'template', 'metadata', 'labels') as JsonValueMap));
      expect(targets.map((t) => at(t, 'metadata', 'name')), `Service ${label(at(svc, 'metadata', 'name'))}`).toEqual([ETCD.name]);
      const portNames = new Set(containers(targets[0] as JsonObject).flatMap((c) => list(c.ports).map((p) => at(p, 'name'))));
      for (const p of list(at(svc, 'spec', 'ports'))) expect(portNames.has(at(p, 'targetPort') ?? ''), JSON.stringify(p)).toBe(true);
    }
  });

  it('bootstraps etcd from member names that the headless Service resolves, and points clients at the client Service', () => {
    const sts = one('StatefulSet', ETCD.name, NAMESPACE);
    const peer = one('Service', str(at(sts, 'spec', 'serviceName')), NAMESPACE);
    expect(at(peer, 'spec', 'clusterIP')).toBe('None');
    expect(at(peer, 'spec', 'publishNotReadyAddresses')).toBe(true);
    const f = flags(container(sts, 'etcd').args);
    const members = str(f.get('initial-cluster')).split(',');
    expect(members).toHaveLength(Number(at(sts, 'spec', 'replicas')));
    members.forEach((m, i) => expect(m).toBe(`${ETCD.name}-${i}=http://${ETCD.name}-${i}.${label(at(peer, 'metadata', 'name'))}.${NAMESPACE}.svc:${ETCD.peerPort}`));
    expect(f.get('initial-advertise-peer-urls')).toBe(`http://$(POD_NAME).${label(at(peer, 'metadata', 'name'))}.${NAMESPACE}.svc:${ETCD.peerPort}`);
    expectArgsVarsDefined(container(sts, 'etcd'));
    const client = one('Service', ETCD.name, NAMESPACE);
    const url = new URL(str(at(one('ConfigMap', CONFIG_MAP, NAMESPACE), 'data', 'GRANARY_ETCD')));
    expect(url.hostname).toBe(`${label(at(client, 'metadata', 'name'))}.${NAMESPACE}.svc`);
    expect(list(at(client, 'spec', 'ports')).map((p) => at(p, 'port'))).toContain(Number(url.port));
  });

  it('gives the shared config map only variables granary reads, and store credentials to the workers alone', () => {
    const known = new Set((Object.keys(SECTIONS) as SectionName[]).flatMap((s) => Object.keys(SECTIONS[s]).map((k) => envName(s, k))));
    for (const key of Object.keys(at(one('ConfigMap', CONFIG_MAP, NAMESPACE), 'data') as JsonValueMap)) expect(known.has(key), key).toBe(true);
    const from = (c: JsonObject) => list(c.envFrom).map((e) => at(e, 'configMapRef', 'name') ?? at(e, 'secretRef', 'name'));
    expect(from(container(worker(), 'worker'))).toEqual([CONFIG_MAP, STORE_SECRET]);
    // Mounts inherit the plugin's environment: no store credentials there, each volume brings its own.
    const plugin = container(csiNode(), 'csi-plugin');
    expect(from(plugin)).toEqual([CONFIG_MAP]);
    expect(list(plugin.env).filter((e) => at(e, 'valueFrom', 'secretKeyRef') !== undefined)).toEqual([]);
  });

  it('runs the worker with flags `granary worker` has, bound off loopback only with the token from the Secret', () => {
    const c = container(worker(), 'worker');
    const known = cliFlags('worker');
    const args = list(c.args).map(str);
    expect(args[0]).toBe('worker');
    for (const a of args.slice(1)) expect(known?.has(a.replace(/^--/, '').split('=')[0] ?? ''), a).toBe(true);
    expectArgsVarsDefined(c);
    const f = flags(c.args);
    expect(isLoopbackHost(str(f.get('host')))).toBe(false);
    expect(args).not.toContain('--insecure');
    const token = list(c.env).find((e) => at(e, 'name') === envName('cluster', 'token'));
    expect(at(token, 'valueFrom', 'secretKeyRef')).toEqual({ name: TOKEN_SECRET, key: CSI.secretKeys.token });
    expect(f.get('advertise-url')).toBe(`http://${str(f.get('host'))}:${str(f.get('port'))}`);
    expect(list(c.ports).map((p) => at(p, 'containerPort'))).toEqual([Number(f.get('port'))]);
  });

  it('keeps the worker\'s disk tier in a host directory, with memory and CPU limits above the memory tier', () => {
    const d = worker();
    const c = container(d, 'worker');
    const f = flags(c.args);
    const mount = list(c.volumeMounts).find((m) => at(m, 'mountPath') === f.get('disk-dir'));
    expect(at(volume(d, str(at(mount, 'name'))), 'hostPath', 'path')).toBe(WORKER.hostCacheDir);
    expect(at(c, 'resources', 'limits', 'cpu')).toBeDefined();
    const gi = (s: string) => Number.parseFloat(s) * (/^[\d.]+Gi/.test(s) ? 1024 : 1);
    expect(gi(str(at(c, 'resources', 'limits', 'memory')))).toBeGreaterThan(gi(str(f.get('memory'))));
    expect(at(c, 'securityContext', 'runAsNonRoot')).toBe(true);
    const owner = container(d, 'page-store-owner');
    expect(list(owner.command)).toEqual(['chown', `${WORKER.uid}:${WORKER.uid}`, f.get('disk-dir')]);
    expect(at(owner, 'securityContext', 'capabilities', 'add')).toEqual(['CHOWN']);
  });

  it('uses one driver name in the CSIDriver, the plugin directory, the registrar and every volume', () => {
    const drivers = ofKind('CSIDriver');
    expect(drivers.map((d) => at(d, 'metadata', 'name'))).toEqual([CSI.driverName]);
    expect(at(drivers[0], 'spec')).toMatchObject({ attachRequired: false, podInfoOnMount: true, requiresRepublish: true, volumeLifecycleModes: ['Persistent', 'Ephemeral'] });
    const pvDrivers = ofKind('PersistentVolume').map((pv) => at(pv, 'spec', 'csi', 'driver'));
    const inline = workloads().flatMap((w) => list(podSpec(w).volumes).map((v) => at(v, 'csi', 'driver')).filter((x) => x !== undefined));
    expect([...pvDrivers, ...inline]).toEqual([CSI.driverName, CSI.driverName]);
    expect(str(at(volume(csiNode(), 'plugin-dir'), 'hostPath', 'path'))).toBe(`/var/lib/kubelet/plugins/${CSI.driverName}`);
  });

  it('agrees on the socket between the plugin, the registrar, the liveness probe and their mounts', () => {
    const d = csiNode();
    const endpoint = flags(container(d, 'csi-plugin').args).get('endpoint');
    expect(endpoint).toBe(`unix://${CSI.socketPath}`);
    const socket = str(endpoint).slice('unix://'.length);
    const dir = socket.slice(0, socket.lastIndexOf('/'));
    for (const name of ['csi-plugin', 'node-driver-registrar', 'liveness-probe']) {
      const c = container(d, name);
      if (name !== 'csi-plugin') expect(flags(c.args).get('csi-address'), name).toBe(socket);
      const m = list(c.volumeMounts).find((x) => at(x, 'mountPath') === dir);
      expect(at(m, 'name'), name).toBe('plugin-dir');
    }
    const registrar = container(d, 'node-driver-registrar');
    const hostDir = str(at(volume(d, 'plugin-dir'), 'hostPath', 'path'));
    expect(flags(registrar.args).get('kubelet-registration-path')).toBe(`${hostDir}${socket.slice(dir.length)}`);
    const reg = list(registrar.volumeMounts).find((x) => at(x, 'mountPath') === '/registration');
    expect(at(volume(d, str(at(reg, 'name'))), 'hostPath', 'path')).toBe('/var/lib/kubelet/plugins_registry');
    expectArgsVarsDefined(container(d, 'csi-plugin'));
  });

  it('probes the registrar and the plugin where their health endpoints listen, on the host\'s loopback', () => {
    const d = csiNode();
    const portOf = (c: JsonObject, name: string) => at(list(c.ports).find((p) => at(p, 'name') === name), 'containerPort');
    const plugin = container(d, 'csi-plugin');
    const registrar = container(d, 'node-driver-registrar');
    for (const [probed, server] of [[plugin, container(d, 'liveness-probe')], [registrar, registrar]] as const) {
      const get = at(probed, 'livenessProbe', 'httpGet');
      expect(flags(server.args).get('http-endpoint'), label(server.name)).toBe(`${label(at(get, 'host'))}:${label(portOf(probed, label(at(get, 'port'))))}`);
      expect(at(get, 'host')).toBe('127.0.0.1');
    }
  });

  it('runs the plugin with the flags `granary csi` has, once that command exists', () => {
    const known = cliFlags('csi');
    if (known === undefined) {
      console.warn('[skip] `granary csi` is not registered in src/cli/program.ts yet: its flags are not checked');
      return;
    }
    for (const a of list(container(csiNode(), 'csi-plugin').args).map(str).slice(1)) expect(known.has(a.replace(/^--/, '').split('=')[0] ?? ''), a).toBe(true);
  });

  it('privileges only the plugin container: FUSE, Bidirectional propagation of the pods directory and the state directory', () => {
    const d = csiNode();
    for (const w of workloads()) {
      for (const c of containers(w, true)) {
        const privileged = at(c, 'securityContext', 'privileged') === true;
        expect(privileged, `${label(at(w, 'metadata', 'name'))}/${label(c.name)}`).toBe(at(w, 'metadata', 'name') === at(d, 'metadata', 'name') && c.name === 'csi-plugin');
        const bidirectional = list(c.volumeMounts).filter((m) => at(m, 'mountPropagation') === 'Bidirectional');
        expect(bidirectional.length > 0).toBe(privileged);
      }
    }
    const plugin = container(d, 'csi-plugin');
    const byPath = new Map(list(plugin.volumeMounts).map((m) => [at(m, 'mountPath'), str(at(m, 'name'))]));
    expect(at(volume(d, byPath.get('/var/lib/kubelet/pods') ?? ''), 'hostPath', 'path')).toBe('/var/lib/kubelet/pods');
    expect(at(volume(d, byPath.get('/dev/fuse') ?? ''), 'hostPath')).toEqual({ path: '/dev/fuse', type: 'CharDevice' });
    expect(at(volume(d, byPath.get(CSI.stateDir) ?? ''), 'hostPath', 'path')).toBe(CSI.stateDir);
    // The host's cgroups, where the plugin moves each mount's processes out of its container's cgroup.
    expect(at(volume(d, byPath.get('/sys/fs/cgroup') ?? ''), 'hostPath', 'path')).toBe('/sys/fs/cgroup');
    expect(flags(plugin.args).get('state-dir')).toBe(CSI.stateDir);
    const propagation = new Map(list(plugin.volumeMounts).map((m) => [at(m, 'mountPath'), at(m, 'mountPropagation')]));
    expect(propagation.get('/var/lib/kubelet/pods')).toBe('Bidirectional');
    expect(propagation.get(CSI.stateDir)).toBe('Bidirectional');
    expect(at(d, 'spec', 'updateStrategy', 'type')).toBe('OnDelete');
    expect(podSpec(d)).toMatchObject({ hostNetwork: true, hostPID: true, dnsPolicy: 'ClusterFirstWithHostNet' });
  });

  it('mounts every granary volume read-only with HostToContainer propagation, so a repaired mount reaches the container', () => {
    const granaryClaims = new Set(ofKind('PersistentVolumeClaim').filter((c) => at(c, 'spec', 'volumeName') !== undefined).map((c) => at(c, 'metadata', 'name')));
    let seen = 0;
    for (const w of workloads()) {
      const names = list(podSpec(w).volumes)
        .filter((v) => at(v, 'csi', 'driver') === CSI.driverName || granaryClaims.has(at(v, 'persistentVolumeClaim', 'claimName') ?? ''))
        .map((v) => at(v, 'name'));
      for (const c of containers(w, true)) {
        for (const m of list(c.volumeMounts).filter((x) => names.includes(at(x, 'name') ?? ''))) {
          expect(m).toMatchObject({ readOnly: true, mountPropagation: 'HostToContainer' });
          seen++;
        }
      }
    }
    expect(seen).toBe(2);
  });

  it('binds the claim to the volume both ways, in the namespace of the Job that reads it', () => {
    const pv = ofKind('PersistentVolume')[0] as JsonObject;
    const ref = at(pv, 'spec', 'claimRef') as JsonValueMap;
    const pvc = one('PersistentVolumeClaim', label(ref.name), label(ref.namespace));
    expect(at(pvc, 'spec', 'volumeName')).toBe(at(pv, 'metadata', 'name'));
    expect(at(pvc, 'spec', 'storageClassName')).toBe(at(pv, 'spec', 'storageClassName'));
    expect(at(pvc, 'spec', 'accessModes')).toEqual(at(pv, 'spec', 'accessModes'));
    const job = ofKind('Job')[0] as JsonObject;
    expect(at(job, 'metadata', 'namespace')).toBe(ref.namespace);
    expect(list(podSpec(job).volumes).map((v) => at(v, 'persistentVolumeClaim', 'claimName'))).toContain(ref.name);
  });

  it('passes the volume context keys the plugin reads, and the token Secret where the kubelet looks for it', () => {
    const keys = new Set<string>(Object.values(CSI.volumeContext));
    const pv = ofKind('PersistentVolume')[0] as JsonObject;
    const pod = ofKind('Pod')[0] as JsonObject;
    const inline = list(podSpec(pod).volumes).find((v) => isObject(at(v, 'csi')));
    const secrets = ofKind('Secret');
    const hasSecret = (name: unknown, namespace: unknown) =>
      secrets.some((s) => at(s, 'metadata', 'name') === name && at(s, 'metadata', 'namespace') === namespace && at(s, 'stringData', CSI.secretKeys.token) !== undefined);
    for (const [csi, namespace] of [[at(pv, 'spec', 'csi'), at(pv, 'spec', 'csi', 'nodePublishSecretRef', 'namespace')], [at(inline, 'csi'), at(pod, 'metadata', 'namespace')]] as const) {
      const attrs = at(csi, 'volumeAttributes') as JsonValueMap;
      for (const k of Object.keys(attrs)) expect(keys.has(k), k).toBe(true);
      expect(attrs[CSI.volumeContext.source]).toMatch(/^s3:\/\/.+\/$/);
      expect(at(csi, 'readOnly')).toBe(true);
      expect(at(csi, 'nodePublishSecretRef', 'name')).toBe(TOKEN_SECRET);
      expect(hasSecret(TOKEN_SECRET, namespace), label(namespace)).toBe(true);
    }
    expect(hasSecret(TOKEN_SECRET, NAMESPACE)).toBe(true);
  });

  it('runs every granary container from one image, the one the kustomization rewrites', () => {
    const granary = workloads().flatMap((w) => containers(w, true)).filter((c) => str(c.image).split(':')[0] === IMAGE.name);
    expect(granary.length).toBe(3);
    for (const c of granary) expect(c.image).toBe(IMAGE.ref);
    for (const w of workloads()) {
      for (const c of containers(w, true)) {
        for (const probe of [at(c, 'readinessProbe'), at(c, 'livenessProbe')]) {
          const port = at(probe, 'httpGet', 'port') ?? at(probe, 'tcpSocket', 'port');
          if (typeof port === 'string') expect(list(c.ports).map((p) => at(p, 'name')), `${label(c.name)} probe port ${port}`).toContain(port);
        }
      }
    }
  });
});

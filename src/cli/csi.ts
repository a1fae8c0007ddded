import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { flagsFromCommand, loadConfig } from '../config/load.js';
import { SECTIONS } from '../config/keys.js';
import { CSI_FLAGS } from '../csi/constants.js';
import { MOUNT_CGROUP_OFF } from '../csi/cgroup.js';
import type { MounterOptions } from '../csi/mounter.js';
import { NodeService } from '../csi/node.js';
import { startCsiServer } from '../csi/server.js';
import { StateDir } from '../csi/state.js';
import { ConfigError } from '../errors.js';
import { checkCanMount } from '../fuse/mount-table.js';
import { addCacheClientOptions, durationParser } from './cache-options.js';
import { intParser } from './options.js';

interface CsiOptions {
  endpoint: string;
  nodeId?: string | undefined;
  stateDir: string;
  healthTimeout: number;
  mountTimeout: number;
  maxVolumes: number;
  mountCgroup: string;
  requireMountCgroup?: boolean | undefined;
  metadataTtl?: number | undefined;
  heartbeatTimeout?: number | undefined;
  config?: string | undefined;
}

function packageVersion(): string {
  const pkg = createRequire(import.meta.url)('../../package.json') as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

function log(line: string): void {
  try {
    process.stderr.write(`${new Date().toISOString()} granary csi: ${line}\n`);
  } catch {
    // nobody reads the log any more
  }
}

/**
 * How mounts are started, from the plugin's own configuration resolved once (flags, then
 * GRANARY_* variables, then --config): non-secret values become `granary mount` flags,
 * the token and etcd credentials its environment.
 */
async function mounterOptions(o: CsiOptions, command: Command): Promise<MounterOptions> {
  const [c, st] = await Promise.all([
    loadConfig('cluster', { flags: flagsFromCommand(command, Object.keys(SECTIONS.cluster)), configFile: o.config }),
    loadConfig('store', { flags: flagsFromCommand(command, Object.keys(SECTIONS.store)), configFile: o.config }),
  ]);
  const v = c.values;
  if (v.etcd !== undefined && v.workers !== undefined) throw new ConfigError('granary csi: give etcd or workers as the default cache, not both');
  const extraArgs: string[] = [];
  const flag = (name: string, value: string | undefined): void => {
    if (value !== undefined) extraArgs.push(name, value);
  };
  flag('--s3-endpoint', st.values.s3Endpoint);
  flag('--s3-region', st.values.s3Region);
  if (st.values.s3PathStyle === true) extraArgs.push('--s3-path-style');
  flag('--etcd-ca', v.etcdCa);
  flag('--etcd-cert', v.etcdCert);
  flag('--etcd-key', v.etcdKey);
  flag('--etcd-password-file', v.etcdPasswordFile);
  flag('--metadata-ttl', o.metadataTtl === undefined ? undefined : `${o.metadataTtl}ms`);
  flag('--heartbeat-timeout', o.heartbeatTimeout === undefined ? undefined : `${o.heartbeatTimeout}ms`);
  if (o.requireMountCgroup === true && o.mountCgroup === MOUNT_CGROUP_OFF) throw new ConfigError(`granary csi: ${CSI_FLAGS.requireMountCgroup.flag} needs a ${CSI_FLAGS.mountCgroup.flag} other than off`);
  const secretEnv: Record<string, string> = {};
  if (v.token !== undefined) secretEnv.GRANARY_TOKEN = v.token;
  if (v.etcdUser !== undefined) secretEnv.GRANARY_ETCD_USER = v.etcdUser;
  if (v.etcdPassword !== undefined) secretEnv.GRANARY_ETCD_PASSWORD = v.etcdPassword;
  const script = process.argv[1];
  if (script === undefined) throw new ConfigError('granary csi: cannot tell which script runs granary (process.argv[1] is empty)');
  return {
    granary: [process.execPath, ...process.execArgv, script],
    defaults: { etcd: v.etcd?.join(','), cluster: v.cluster, workers: v.workers?.join(',') },
    extraArgs,
    secretEnv,
    mountTimeoutMs: o.mountTimeout,
    commandTimeoutMs: Math.max(10_000, o.healthTimeout),
    mountCgroup: o.mountCgroup,
    requireMountCgroup: o.requireMountCgroup === true,
  };
}

export function registerCsi(program: Command): void {
  const f = CSI_FLAGS;
  const cmd = program
    .command('csi')
    .description('Run the CSI node plugin: Identity and Node services on a unix socket; each volume is a granary mount that outlives the plugin (needs root and /dev/fuse).')
    .addOption(new Option(`${f.endpoint.flag} <url>`, 'the CSI socket, unix:///path.sock').env(f.endpoint.env).default(f.endpoint.default))
    .addOption(new Option(`${f.nodeId.flag} <id>`, "this node's id (NodeGetInfo; in Kubernetes, the node name)").env(f.nodeId.env))
    .addOption(new Option(`${f.stateDir.flag} <dir>`, 'state directory on the host: records and staging mounts of published volumes').env(f.stateDir.env).default(f.stateDir.default))
    .addOption(new Option(`${f.healthTimeout.flag} <duration>`, 'a mount that does not answer statfs within this is hung').env(f.healthTimeout.env).argParser(durationParser(100)).default(5000, f.healthTimeout.default))
    .addOption(new Option(`${f.mountTimeout.flag} <duration>`, 'how long one granary mount may take to be ready').env(f.mountTimeout.env).argParser(durationParser(1000)).default(90_000, f.mountTimeout.default))
    .addOption(new Option(`${f.maxVolumes.flag} <n>`, 'max_volumes_per_node reported to the CO (0: no limit)').env(f.maxVolumes.env).argParser(intParser(0)).default(f.maxVolumes.default))
    .addOption(
      new Option(`${f.mountCgroup.flag} <cgroup>`, "cgroup each mount's processes move to, so a restart of the plugin's container does not kill them: a path created under every cgroup hierarchy's root, an absolute cgroup2 directory, or off")
        .env(f.mountCgroup.env)
        .default(f.mountCgroup.default),
    )
    .addOption(new Option(f.requireMountCgroup.flag, 'fail NodePublishVolume when a mount cannot be moved there (default: a warning, and the mount runs)').env(f.requireMountCgroup.env))
    .addOption(new Option(`${f.metadataTtl.flag} <duration>`, "every mount's --metadata-ttl (default: granary mount's)").env(f.metadataTtl.env).argParser(durationParser(1000)))
    .addOption(new Option(`${f.heartbeatTimeout.flag} <duration>`, "every mount's --heartbeat-timeout (default: granary mount's)").env(f.heartbeatTimeout.env).argParser(durationParser(500)));
  addCacheClientOptions(cmd);
  cmd.addHelpText(
    'after',
    `
The cache and store flags are the defaults of every mount; a volume's volume_context may name
its own workers or etcd + cluster. Secrets come from the CSI secrets field (docs/csi.md).
SIGTERM stops the plugin and leaves every mount serving; a restarted plugin re-adopts them.

Example:
  granary csi --endpoint unix:///csi/csi.sock --node-id "$NODE_NAME" --etcd http://etcd:2379 --cluster prod`,
  );
  cmd.action(async (options: CsiOptions, command: Command) => {
    if (options.nodeId === undefined || options.nodeId === '') throw new ConfigError(`granary csi needs ${f.nodeId.flag} (or ${f.nodeId.env})`);
    checkCanMount();
    const mounter = await mounterOptions(options, command);
    const state = new StateDir(resolve(options.stateDir));
    const node = new NodeService({ nodeId: options.nodeId, maxVolumes: options.maxVolumes, state, mounter, healthTimeoutMs: options.healthTimeout, log });
    const { adopted, forgotten } = node.adopt();
    const server = await startCsiServer({ endpoint: options.endpoint, node, version: packageVersion(), log });
    log(`${`serving on ${server.socketPath}`} as node ${options.nodeId}; state ${state.root}; ${adopted} volume(s) adopted${forgotten > 0 ? `, ${forgotten} stale record(s) forgotten` : ''}`);
    await new Promise<void>((done) => {
      const stop = (sig: NodeJS.Signals): void => {
        log(`${sig}: stopping; mounts stay up`);
        server.close().then(done, done);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
  });
}

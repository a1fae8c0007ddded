import { Option, type Command } from 'commander';
import type { EvictionPolicyName } from '../cache/eviction.js';
import { validateCluster, validateEndpoints, validateWorkerId, validateWorkerUrl } from '../cache/membership.js';
import { checkPageSize, DEFAULT_PAGE_SIZE } from '../cache/page-key.js';
import { startWorker, type CacheWorker, type WorkerOptions } from '../cache/worker.js';
import { flagsFromCommand, loadConfig } from '../config/load.js';
import { SECTIONS } from '../config/keys.js';
import { ClosedError, ConfigError } from '../errors.js';
import { schemeOf } from '../ufs/url.js';
import { addEtcdSecurityOptions, ETCD_SECURITY_KEYS, etcdSecurityFrom, type EtcdSecurityValues } from './etcd-options.js';
import { clusterOption, durationParser, etcdOption, splitList, tokenOption } from './cache-options.js';
import { checkUsage } from './errors.js';
import { bytesParser, choiceParser, intParser } from './options.js';
import type { UfsOptions } from '../ufs/router.js';
import { addStoreOptions, type StoreOptions } from './store.js';

const MiB = 1024 * 1024;
const POLICIES: readonly EvictionPolicyName[] = ['lru', 's3fifo'];

interface WorkerCliOptions extends StoreOptions, EtcdSecurityValues {
  host: string;
  port: number;
  id?: string | undefined;
  advertiseUrl?: string | undefined;
  memory: number;
  diskDir?: string | undefined;
  disk: number;
  shmDir?: string | undefined;
  shmGroup?: string | undefined;
  pageSize: number;
  policy: EvictionPolicyName;
  etcd?: string | undefined;
  cluster: string;
  leaseTtl: number;
  token?: string | undefined;
  allow?: string[] | undefined;
  fileRoot?: string | undefined;
  insecure?: boolean | undefined;
  metadataTtl: number;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  headersTimeout: number;
  requestTimeout: number;
  maxRead: number;
  maxRequests: number;
  maxRequestsPerConnection: number;
  json?: boolean | undefined;
  config?: string | undefined;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** The library options for the command line, checked; anything wrong is a usage error. */
function workerOptions(o: WorkerCliOptions, command: Command): Omit<WorkerOptions, 'ufs'> {
  if (o.diskDir === undefined && command.getOptionValueSource('disk') === 'cli') {
    throw new ConfigError(`--disk ${o.disk} needs --disk-dir: the disk tier lives in a directory`);
  }
  if (o.shmDir !== undefined && o.diskDir !== undefined) {
    throw new ConfigError(`--shm-dir ${o.shmDir} and --disk-dir ${o.diskDir} cannot be combined: the shared-memory tier replaces the memory tier of a worker without a disk tier`);
  }
  if (o.shmDir === undefined && o.shmGroup !== undefined) throw new ConfigError(`--shm-group ${o.shmGroup} needs --shm-dir`);
  const fromCli = (name: string) => command.getOptionValueSource(name) === 'cli';
  if (o.etcd === undefined && (fromCli('cluster') || fromCli('leaseTtl'))) {
    throw new ConfigError(`${fromCli('cluster') ? '--cluster' : '--lease-ttl'} needs --etcd (or GRANARY_ETCD): without etcd the worker does not register`);
  }
  return checkUsage(() => {
    checkPageSize(o.pageSize, '--page-size');
    if (o.id !== undefined) validateWorkerId(o.id, '--id');
    for (const p of o.allow ?? []) schemeOf(p);
    if (o.token !== undefined && o.token.length === 0) throw new ConfigError('--token (or GRANARY_TOKEN) is empty; leave it unset for no token');
    const out: Omit<WorkerOptions, 'ufs'> = {
      host: o.host,
      port: o.port,
      pageSize: o.pageSize,
      memoryBytes: o.memory,
      policy: o.policy,
      metadataTtlMs: o.metadataTtl,
      headersTimeoutMs: o.headersTimeout,
      requestTimeoutMs: o.requestTimeout,
      maxReadBytes: o.maxRead,
      maxConcurrentRequests: o.maxRequests,
      maxRequestsPerConnection: o.maxRequestsPerConnection,
    };
    if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw new ConfigError('--tls-cert and --tls-key go together (or GRANARY_WORKER_TLS_CERT and GRANARY_WORKER_TLS_KEY)');
    if (o.tlsCert !== undefined && o.tlsKey !== undefined) out.tls = { certFile: o.tlsCert, keyFile: o.tlsKey };
    if (o.requestTimeout < o.headersTimeout) throw new ConfigError(`--request-timeout ${o.requestTimeout} ms is shorter than --headers-timeout ${o.headersTimeout} ms: the headers are part of the request`);
    if (o.id !== undefined) out.id = o.id;
    if (o.advertiseUrl !== undefined) out.advertiseUrl = validateWorkerUrl(o.advertiseUrl, '--advertise-url');
    if (o.diskDir !== undefined) {
      out.diskDir = o.diskDir;
      out.diskBytes = o.disk;
    }
    if (o.shmDir !== undefined) {
      if (o.shmDir.length === 0) throw new ConfigError('--shm-dir is empty; leave it unset to keep the memory tier in the heap');
      out.shmDir = o.shmDir;
      if (o.shmGroup !== undefined) out.shmGroup = o.shmGroup;
    }
    if (o.etcd !== undefined) {
      validateCluster(o.cluster, '--cluster');
      out.etcd = { endpoints: [...validateEndpoints(splitList(o.etcd), '--etcd')], cluster: o.cluster, ttlSeconds: o.leaseTtl, ...etcdSecurityFrom(o) };
    }
    if (o.token !== undefined) out.token = o.token;
    if (o.allow !== undefined) out.allow = o.allow;
    if (o.fileRoot !== undefined) {
      if (o.fileRoot.length === 0) throw new ConfigError('--file-root is empty; leave it unset to keep file:// off');
      out.fileRoot = o.fileRoot;
    }
    if (o.insecure === true) out.insecure = true;
    return out;
  });
}

/**
 * The command's values through the one configuration path (src/config): flags the user
 * typed, then GRANARY_* environment variables, then the config file's `worker`,
 * `cluster` and `store` sections, then defaults.
 */
async function resolveConfig(cli: WorkerCliOptions, command: Command): Promise<WorkerCliOptions> {
  const configFile = cli.config;
  const load = <N extends 'worker' | 'cluster' | 'store'>(section: N) =>
    loadConfig(section, { flags: flagsFromCommand(command, Object.keys(SECTIONS[section])), configFile });
  const [w, c, st] = await Promise.all([load('worker'), load('cluster'), load('store')]);
  for (const warning of [...w.warnings, ...c.warnings, ...st.warnings]) process.stderr.write(`granary worker: ${warning}\n`);
  const v = w.values;
  return {
    ...cli,
    host: v.host,
    port: v.port,
    id: v.id,
    advertiseUrl: v.advertiseUrl,
    memory: v.memory,
    diskDir: v.diskDir,
    disk: v.disk,
    shmDir: v.shmDir,
    shmGroup: v.shmGroup,
    pageSize: v.pageSize,
    policy: v.policy,
    leaseTtl: v.leaseTtl,
    allow: v.allow,
    fileRoot: v.fileRoot,
    insecure: v.insecure,
    metadataTtl: v.metadataTtl,
    tlsCert: v.tlsCert,
    tlsKey: v.tlsKey,
    headersTimeout: v.headersTimeout,
    requestTimeout: v.requestTimeout,
    maxRead: v.maxRead,
    maxRequests: v.maxRequests,
    maxRequestsPerConnection: v.maxRequestsPerConnection,
    etcd: c.values.etcd?.join(','),
    cluster: c.values.cluster,
    token: c.values.token,
    ...Object.fromEntries(ETCD_SECURITY_KEYS.map((k) => [k, c.values[k]])),
    s3Endpoint: st.values.s3Endpoint,
    s3Region: st.values.s3Region,
    s3PathStyle: st.values.s3PathStyle,
  };
}

export function registerWorker(program: Command): void {
  const cmd = program
    .command('worker')
    .description('Run a cache worker: an HTTP server with a memory (and disk) page cache that reads through to the store.')
    .addOption(new Option('--host <address>', 'address to listen on; loopback unless you mean to serve other machines').default('127.0.0.1'))
    .addOption(new Option('--port <n>', 'port to listen on; 0 picks a free one').argParser(intParser(0, 65_535)).default(7070))
    .addOption(new Option('--id <id>', 'worker id; keep it across restarts to own the same keys (default: a random UUID)'))
    .addOption(new Option('--advertise-url <url>', 'URL clients use to reach this worker (default: http://<host>:<port>)'))
    .addOption(new Option('--memory <size>', 'memory tier budget').argParser(bytesParser(1)).default(256 * MiB, '256MiB'))
    .addOption(new Option('--disk-dir <dir>', 'directory of the disk tier (default: no disk tier); a restart on it finds its pages again'))
    .addOption(new Option('--disk <size>', 'disk tier budget (with --disk-dir)').argParser(bytesParser(1)).default(1024 * MiB, '1GiB'))
    .addOption(new Option('--shm-dir <dir>', 'keep the memory tier as page files in this tmpfs directory (e.g. /dev/shm/granary-w1): clients on this host read them directly (not with --disk-dir)'))
    .addOption(new Option('--shm-group <group>', 'group (name or gid) that may read --shm-dir too (default: this user only, 0700)'))
    .addOption(new Option('--page-size <size>', 'cache page size; every worker of a cluster should agree').argParser(bytesParser(1, 0x7fff_ffff)).default(DEFAULT_PAGE_SIZE, '1MiB'))
    .addOption(new Option('--policy <policy>', 'eviction policy of both tiers').argParser(choiceParser(POLICIES)).default('lru'))
    .addOption(etcdOption())
    .addOption(clusterOption())
    .addOption(new Option('--lease-ttl <seconds>', 'etcd lease TTL: how long a crashed worker stays in the ring').argParser(intParser(2, 3600)).default(10))
    .addOption(tokenOption('require Authorization: Bearer <token> on every endpoint but /healthz'));
  addEtcdSecurityOptions(cmd)
    .addOption(
      new Option('--allow <prefix>', 'store URL prefix this worker may read; repeat for more (default: s3://, and file:// under --file-root; http(s):// only when allowed here)').argParser(
        collect,
      ),
    )
    .addOption(new Option('--file-root <dir>', 'serve file:// URLs under this directory (default: file:// off; clients read those files themselves)'))
    .addOption(new Option('--insecure', 'allow a non-loopback --host without --token (logged as a warning at start)'))
    .addOption(new Option('--metadata-ttl <duration>', 'how long stat and list answers are cached').argParser(durationParser(0)).default(10_000, '10s'))
    .addOption(new Option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (with --tls-key); the worker\'s URL is then https://'))
    .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert'))
    .addOption(new Option('--headers-timeout <duration>', 'a connection must send its request headers within this long, else 408 and closed').argParser(durationParser(1)).default(10_000, '10s'))
    .addOption(new Option('--request-timeout <duration>', 'a connection must send a whole request within this long').argParser(durationParser(1)).default(60_000, '60s'))
    .addOption(new Option('--max-read <size>', 'largest byte range one read may ask for (larger: 400)').argParser(bytesParser(1)).default(256 * MiB, '256MiB'))
    .addOption(new Option('--max-requests <n>', 'requests handled at once; the excess is answered 503 with Retry-After').argParser(intParser(1, 1_000_000)).default(1024))
    .addOption(new Option('--max-requests-per-connection <n>', 'requests handled at once on one connection (pipelining)').argParser(intParser(1, 1_000_000)).default(16))
    .option('--json', 'print the ready line as JSON: {"id","url"}')
    .addOption(new Option('--config <file>', 'JSON config file with worker, cluster and store sections (flags > GRANARY_* env > file > defaults)').env('GRANARY_CONFIG'));
  addStoreOptions(cmd);
  cmd.addHelpText(
    'after',
    `
Prints one line once it serves: "granary worker <id> listening on <url>" (or JSON with --json).
SIGTERM or SIGINT: leave the ring (revoke the etcd lease), finish requests in flight, exit 0.

Examples:
  granary worker --port 7070 --memory 1GiB --disk-dir /var/cache/granary --disk 20GiB --file-root /data
  granary worker --port 7070 --memory 8GiB --shm-dir /dev/shm/granary-7070
  GRANARY_TOKEN=secret granary worker --etcd http://127.0.0.1:2379 --cluster train --allow s3://datasets/
  GRANARY_TOKEN=secret granary worker --host 0.0.0.0 --tls-cert /etc/granary/worker.crt --tls-key /etc/granary/worker.key`,
  );
  cmd.action(async (cliOptions: WorkerCliOptions, command: Command) => {
    const options = await resolveConfig(cliOptions, command);
    const opts = workerOptions(options, command);
    // Store options rather than a ready client: the worker then builds its own HTTP
    // connections, which apply its address rule at connect time too.
    const ufs: UfsOptions = { s3: { endpoint: options.s3Endpoint, region: options.s3Region, forcePathStyle: options.s3PathStyle } };
    let worker: CacheWorker | undefined;
    let stopping = false;
    let stopped: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (stopped = resolve));
    const starting = new AbortController();
    const onSignal = (signal: NodeJS.Signals): void => {
      if (worker === undefined) {
        // Still starting (registration waits for etcd for as long as it takes): abort the
        // start, which releases the page store's lock, and exit 1.
        if (starting.signal.aborted) process.exit(1);
        process.stderr.write(`granary worker: ${signal} before the worker was ready; exiting\n`);
        starting.abort(new ClosedError(`granary worker: ${signal} before the worker was ready`));
        return;
      }
      if (stopping) {
        process.stderr.write(`granary worker ${worker.id}: second ${signal}, exiting without waiting\n`);
        process.exit(1);
      }
      stopping = true;
      process.stderr.write(`granary worker ${worker.id}: ${signal}, leaving the ring and closing\n`);
      stopped();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    const slowEtcd =
      opts.etcd === undefined
        ? undefined
        : setTimeout(() => process.stderr.write(`granary worker: still registering in etcd ${opts.etcd?.endpoints.join(',')} (cluster ${opts.etcd?.cluster}) ...\n`), 5000);
    try {
      worker = await startWorker({ ...opts, ufs, signal: starting.signal }).catch((err: unknown) => {
        if (starting.signal.aborted) process.exit(1);
        throw err;
      });
      clearTimeout(slowEtcd);
      process.stdout.write(options.json ? `${JSON.stringify({ id: worker.id, url: worker.url })}\n` : `granary worker ${worker.id} listening on ${worker.url}\n`);
      await done;
      await worker.close();
    } finally {
      clearTimeout(slowEtcd);
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
  });
}

/**
 * A minimal all-in-one OpenStack Swift with the s3api middleware: one device, one
 * replica, account/container/object servers and a proxy (each `workers = 0`, so
 * one process each), tempauth with `test:tester` / `testing`, and a private
 * memcached. Everything on 127.0.0.1 with ephemeral ports, in a temp dir, stopped
 * by PID. This is the production-grade S3 implementation the conformance suite
 * runs against next to s3rver.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { stopChild } from './s3rver.js';
import { whichBinary } from './services.js';

/** Swift servers must run on the system Python, where the Debian packages put their modules. */
const PYTHON = '/usr/bin/python3';
const SERVERS = ['swift-proxy-server', 'swift-account-server', 'swift-container-server', 'swift-object-server'] as const;

export interface SwiftHandle {
  /** The proxy: `http://127.0.0.1:<port>`; use path-style addressing. */
  endpoint: string;
  port: number;
  /** tempauth's account:user, used as the S3 access key id. */
  accessKeyId: 'test:tester';
  secretAccessKey: 'testing';
  region: 'us-east-1';
  dir: string;
  /** PIDs of memcached and the four Swift servers. */
  pids: number[];
  /** Stop every process by PID and remove the directory. Idempotent. */
  close(): Promise<void>;
}

export interface StartSwiftOptions {
  /** Buckets to create through S3 CreateBucket (default `['test']`). */
  buckets?: readonly string[];
  /** How long to wait for the proxy to answer (default 30 s). */
  startTimeoutMs?: number;
}

/** Why Swift cannot start here, or undefined when everything it needs is installed. */
export function swiftUnavailableReason(): string | undefined {
  if (!existsSync(PYTHON)) return `${PYTHON} not found`;
  for (const s of SERVERS) if (!existsSync(join('/usr/bin', s))) return `/usr/bin/${s} not found (apt-get install swift-proxy swift-account swift-container swift-object)`;
  if (!existsSync('/usr/bin/swift-ring-builder')) return '/usr/bin/swift-ring-builder not found (apt-get install swift)';
  if (!whichBinary('memcached')) return 'memcached not found (apt-get install memcached)';
  return undefined;
}

/** Start Swift, or resolve undefined when it is not installed (see `swiftUnavailableReason`). */
export async function startSwift(options: StartSwiftOptions = {}): Promise<SwiftHandle | undefined> {
  if (swiftUnavailableReason() !== undefined) return undefined;
  const memcached = whichBinary('memcached');
  if (!memcached) return undefined;
  const dir = await mkdtemp(join(tmpdir(), 'granary-swift-'));
  const etc = join(dir, 'etc');
  const devices = join(dir, 'srv');
  await mkdir(etc);
  await mkdir(join(devices, 'sdb1'), { recursive: true });
  const [proxyPort, accountPort, containerPort, objectPort, memcachedPort] = (await freePorts(5)) as [number, number, number, number, number];
  const children: ChildProcess[] = [];
  const stderr = new Map<ChildProcess, string>();
  const stopAll = async (): Promise<void> => {
    await Promise.all(children.map((c) => stopChild(c)));
    await rm(dir, { recursive: true, force: true });
  };
  const launch = (cmd: string, args: string[], label: string): ChildProcess => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: swiftEnv(etc) });
    children.push(c);
    stderr.set(c, '');
    c.stderr?.on('data', (d: Buffer) => {
      const s = (stderr.get(c) ?? '') + d.toString();
      stderr.set(c, s.length > 8000 ? s.slice(-8000) : s);
    });
    c.once('exit', (code) => {
      if (code !== 0 && code !== null) stderr.set(c, `${label} exited with ${code}: ${stderr.get(c) ?? ''}`);
    });
    return c;
  };
  try {
    await writeConfigs(etc, devices, { proxyPort, accountPort, containerPort, objectPort, memcachedPort });
    launch(memcached, ['-l', '127.0.0.1', '-p', String(memcachedPort), '-U', '0', '-m', '64', '-u', userInfo().username], 'memcached');
    // The storage servers read rings lazily, so they start while the rings are built;
    // the proxy loads them at start-up and has to wait.
    for (const kind of ['account', 'container', 'object'] as const) {
      launch(PYTHON, [`/usr/bin/swift-${kind}-server`, join(etc, `${kind}-server.conf`)], `swift-${kind}-server`);
    }
    await buildRings(etc, { accountPort, containerPort, objectPort });
    launch(PYTHON, ['/usr/bin/swift-proxy-server', join(etc, 'proxy-server.conf')], 'swift-proxy-server');
    const deadline = Date.now() + (options.startTimeoutMs ?? 30_000);
    for (const port of [memcachedPort, accountPort, containerPort, objectPort, proxyPort]) {
      await waitForPort(port, deadline, () => children.find((c) => c.exitCode !== null));
    }
    const endpoint = `http://127.0.0.1:${proxyPort}`;
    await waitForHealth(endpoint, deadline);
    const client = new S3Client({
      endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'test:tester', secretAccessKey: 'testing' },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    try {
      for (const b of options.buckets ?? ['test']) await client.send(new CreateBucketCommand({ Bucket: b }));
    } finally {
      client.destroy();
    }
    let closing: Promise<void> | undefined;
    return {
      endpoint,
      port: proxyPort,
      accessKeyId: 'test:tester',
      secretAccessKey: 'testing',
      region: 'us-east-1',
      dir,
      pids: children.map((c) => c.pid ?? -1),
      close() {
        closing ??= stopAll();
        return closing;
      },
    };
  } catch (err) {
    const logs = [...stderr.values()].filter((s) => s.length > 0).join('\n---\n');
    await stopAll();
    throw new Error(`Swift did not start: ${(err as Error).message}${logs ? `\n${logs}` : ''}`, { cause: err });
  }
}

/**
 * EVENTLET_NO_GREENDNS skips importing dnspython (about half of each server's
 * start-up CPU); everything here is a literal loopback address.
 */
function swiftEnv(etc: string): NodeJS.ProcessEnv {
  return { ...process.env, SWIFT_CONF_FILE: join(etc, 'swift.conf'), EVENTLET_NO_GREENDNS: 'yes' };
}

interface Ports {
  proxyPort: number;
  accountPort: number;
  containerPort: number;
  objectPort: number;
  memcachedPort: number;
}

async function writeConfigs(etc: string, devices: string, p: Ports): Promise<void> {
  const user = userInfo().username;
  // Swift logs to syslog; there is no /dev/log here, so send it to a UDP port nobody reads.
  const common = (port: number, name: string): string => `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = ${user}
swift_dir = ${etc}
devices = ${devices}
mount_check = false
log_name = ${name}
log_level = ERROR
log_udp_host = 127.0.0.1
log_udp_port = 9
`;
  await writeFile(
    join(etc, 'swift.conf'),
    `[swift-hash]
swift_hash_path_prefix = granary-prefix
swift_hash_path_suffix = granary-suffix

[storage-policy:0]
name = Policy-0
default = yes
`,
  );
  for (const [kind, port] of [
    ['account', p.accountPort],
    ['container', p.containerPort],
    ['object', p.objectPort],
  ] as const) {
    await writeFile(
      join(etc, `${kind}-server.conf`),
      `${common(port, `${kind}-server`)}
[pipeline:main]
pipeline = ${kind}-server

[app:${kind}-server]
use = egg:swift#${kind}
${kind === 'object' ? '' : 'allow_versions = true\n'}`,
    );
  }
  await writeFile(
    join(etc, 'proxy-server.conf'),
    `${common(p.proxyPort, 'proxy-server')}
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:${p.memcachedPort}

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
`,
  );
}

const RING_SCRIPT = `
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for name, port in (('account', sys.argv[2]), ('container', sys.argv[3]), ('object', sys.argv[4])):
    b = RingBuilder(4, 1, 0)
    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port), 'device': 'sdb1', 'weight': 100, 'meta': ''})
    b.rebalance()
    b.save('%s/%s.builder' % (etc, name))
    b.get_ring().save('%s/%s.ring.gz' % (etc, name))
`;

/** One Python process builds all three rings (three swift-ring-builder calls each would cost a startup). */
async function buildRings(etc: string, p: Pick<Ports, 'accountPort' | 'containerPort' | 'objectPort'>): Promise<void> {
  const c = spawn(PYTHON, ['-c', RING_SCRIPT, etc, String(p.accountPort), String(p.containerPort), String(p.objectPort)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: swiftEnv(etc),
  });
  let err = '';
  c.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => c.once('exit', resolve));
  if (code !== 0) throw new Error(`building Swift rings failed (exit ${String(code)}): ${err}`);
}

async function freePorts(n: number): Promise<number[]> {
  // Hold every socket until all are bound, so the n ports are distinct.
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

async function waitForPort(port: number, deadline: number, died: () => ChildProcess | undefined): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    const dead = died();
    if (dead) throw new Error(`a Swift process (pid ${String(dead.pid)}) exited before port ${port} listened`);
    if (Date.now() > deadline) throw new Error(`port ${port} did not listen in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitForHealth(endpoint: string, deadline: number): Promise<void> {
  for (;;) {
    try {
      const res = await fetch(`${endpoint}/healthcheck`);
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${endpoint}/healthcheck did not answer 200 in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A real etcd (Debian `etcd-server`, 3.4) for tests: one member on 127.0.0.1 with
 * ephemeral client and peer ports and a temp data dir, stopped by PID.
 *
 * `stop()` then `start()` restarts it on the same ports and data dir, so a test can
 * take etcd away and bring it back with its keys, revisions and leases intact (as a
 * real etcd restart would).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireOrSkip, whichBinary } from './services.js';

export interface EtcdServer extends AsyncDisposable {
  /** `http://127.0.0.1:<clientPort>`: pass as `endpoints` (or etcd3's `hosts`). */
  readonly endpoint: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** PID of the running etcd, or undefined while stopped. */
  readonly pid: number | undefined;
  readonly dataDir: string;
  readonly running: boolean;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s). Keeps the data dir. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL at once (a crash). Keeps the data dir. Idempotent. */
  kill(): Promise<void>;
  /** Start again on the same ports and data dir; resolves once etcd reports healthy. */
  start(): Promise<void>;
  /** Stop and remove the data dir. Idempotent. */
  close(): Promise<void>;
}

export interface StartEtcdOptions {
  /** How long to wait for `/health` to report healthy (default 20 s). */
  readyTimeoutMs?: number;
  /** Member name (default `granary-test`). */
  name?: string;
  /**
   * Serve clients over TLS (`https://` endpoint) with this server certificate; with
   * `clientCertAuth`, etcd also requires a client certificate signed by `caFile`
   * (`--client-cert-auth`). The health check then presents `clientCertFile`.
   */
  tls?: {
    caFile: string;
    certFile: string;
    keyFile: string;
    clientCertAuth?: boolean;
    clientCertFile?: string;
    clientKeyFile?: string;
  };
}

const SKIP_REASON = 'binary `etcd` not found on PATH (apt-get install etcd-server)';

/** Path of the etcd binary, or undefined when it is not installed. */
export function etcdBinary(): string | undefined {
  return whichBinary('etcd');
}

/**
 * Whether etcd suites can run: prints a skip reason when the binary is missing, or
 * throws when `GRANARY_REQUIRE_SERVICES=1`. Use with `describe.runIf(etcdAvailable())`.
 */
export function etcdAvailable(): boolean {
  return requireOrSkip('etcd', etcdBinary() !== undefined, SKIP_REASON);
}

/** A free TCP port on 127.0.0.1: listen on port 0, read it, close. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('could not read a free port'))));
    });
  });
}

// etcd cannot notice that its parent died; make sure no test run leaves one behind.
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackChild(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) {
        try {
          c.kill('SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
}

/**
 * Start a one-member etcd. Resolves undefined (after printing why) when the binary
 * is missing, unless `GRANARY_REQUIRE_SERVICES=1`, where that throws.
 */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdServer | undefined> {
  const bin = etcdBinary();
  if (!requireOrSkip('etcd', bin !== undefined, SKIP_REASON) || bin === undefined) return undefined;
  const dataDir = await mkdtemp(join(tmpdir(), 'granary-etcd-'));
  const readyTimeoutMs = options.readyTimeoutMs ?? 20_000;
  const name = options.name ?? 'granary-test';
  // Ports found free may be taken by someone else before etcd binds them: try again with new ones.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const clientPort = await freePort();
    const peerPort = await freePort();
    if (clientPort === peerPort) continue;
    const server = new EtcdProcess(bin, name, dataDir, clientPort, peerPort, readyTimeoutMs, options.tls);
    try {
      await server.start();
      return server;
    } catch (err) {
      lastErr = err;
      await server.stop(1000);
    }
  }
  await rm(dataDir, { recursive: true, force: true });
  throw lastErr instanceof Error ? lastErr : new Error(`etcd did not start: ${String(lastErr)}`);
}

class EtcdProcess implements EtcdServer {
  readonly endpoint: string;
  #child: ChildProcess | undefined;
  #closed = false;
  #stderrTail = '';

  constructor(
    private readonly bin: string,
    private readonly name: string,
    readonly dataDir: string,
    readonly clientPort: number,
    readonly peerPort: number,
    private readonly readyTimeoutMs: number,
    private readonly tls?: StartEtcdOptions['tls'],
  ) {
    this.endpoint = `${tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  async start(): Promise<void> {
    if (this.#closed) throw new Error(`etcd ${this.endpoint} was closed; start a new one`);
    if (this.#child !== undefined) return;
    const peerUrl = `http://127.0.0.1:${this.peerPort}`;
    const args = [
      `--name=${this.name}`,
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${this.endpoint}`,
      `--advertise-client-urls=${this.endpoint}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${this.name}=${peerUrl}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=granary-test-${this.clientPort}`,
      '--logger=zap',
      '--log-outputs=stderr',
      '--log-level=error',
    ];
    if (this.tls) {
      args.push(`--cert-file=${this.tls.certFile}`, `--key-file=${this.tls.keyFile}`, `--trusted-ca-file=${this.tls.caFile}`);
      if (this.tls.clientCertAuth === true) args.push('--client-cert-auth');
    }
    this.#stderrTail = '';
    const child = spawn(this.bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    if (child.pid === undefined) {
      throw new Error(`etcd (${this.bin}) did not start: no pid`);
    }
    trackChild(child);
    this.#child = child;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.#stderrTail = (this.#stderrTail + chunk).slice(-4000);
    });
    child.once('exit', () => {
      if (this.#child === child) this.#child = undefined;
    });
    await this.#waitHealthy(child);
  }

  async #waitHealthy(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    let exited = false;
    child.once('exit', () => {
      exited = true;
    });
    while (Date.now() < deadline) {
      if (exited) {
        throw new Error(`etcd on ${this.endpoint} exited during startup (code ${String(child.exitCode)}): ${this.#stderrTail.trim()}`);
      }
      try {
        if (await this.#healthy()) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`etcd on ${this.endpoint} not healthy after ${this.readyTimeoutMs} ms: ${this.#stderrTail.trim()}`);
  }

  async #healthy(): Promise<boolean> {
    const tls = this.tls;
    if (!tls) {
      const res = await fetch(`${this.endpoint}/health`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { health?: unknown };
      return res.ok && (body.health === 'true' || body.health === true);
    }
    // fetch cannot present a client certificate: node:https can.
    const text = await new Promise<string>((resolve, reject) => {
      const req = request(`${this.endpoint}/health`, {
        ca: readFileSync(tls.caFile),
        ...(tls.clientCertFile !== undefined ? { cert: readFileSync(tls.clientCertFile) } : {}),
        ...(tls.clientKeyFile !== undefined ? { key: readFileSync(tls.clientKeyFile) } : {}),
        timeout: 1000,
      }, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (data += c));
        res.on('end', () => resolve(res.statusCode === 200 ? data : ''));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end();
    });
    const body = (text === '' ? {} : JSON.parse(text)) as { health?: unknown };
    return body.health === 'true' || body.health === true;
  }

  async stop(graceMs = 5000): Promise<void> {
    await this.#signal('SIGTERM', graceMs);
  }

  async kill(): Promise<void> {
    await this.#signal('SIGKILL', 5000);
  }

  async #signal(sig: NodeJS.Signals, graceMs: number): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    child.kill(sig);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    try {
      await exited;
    } finally {
      clearTimeout(timer);
    }
    if (this.#child === child) this.#child = undefined;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.stop();
    await rm(this.dataDir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * `etcdctl user add root:<password>` then `etcdctl auth enable` (with the root role
 * that `auth enable` needs), through etcd3's client since Debian's `etcd-server`
 * ships no etcdctl. From then on every request needs the user and password.
 */
export async function enableEtcdAuth(server: EtcdServer, password: string): Promise<void> {
  const { Etcd3 } = await import('etcd3');
  const client = new Etcd3({ hosts: [server.endpoint] });
  try {
    await client.user('root').create(password);
    await client.role('root').create();
    await client.user('root').addRole('root');
    await client.auth.authEnable();
  } finally {
    client.close();
  }
}

/**
 * The CLI's etcd security flags reach the worker: `granary worker --etcd https://...
 * --etcd-ca --etcd-cert --etcd-key` registers in an etcd with `--client-cert-auth`,
 * and `--etcd-user` with a password file registers in an etcd with auth enabled; a
 * wrong password ends the worker with GRANARY_ERR_ACCESS_DENIED, naming no password.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdMembership } from '../../src/cache/membership.js';
import { makeTestCerts, type TestCerts } from '../support/etcd-tls.js';
import { enableEtcdAuth, etcdAvailable, startEtcd, type EtcdServer } from '../support/etcd.js';
import { waitFor } from '../support/wait.js';

const CLEAN_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GRANARY_')));
const children: ChildProcess[] = [];

interface Started {
  id?: string;
  code?: number | null;
  stderr: () => string;
  stop: () => Promise<void>;
}

/** Start `granary worker --json ...`: resolves with its id once ready, or its exit code if it exits first. */
function startWorkerCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'worker', '--port', '0', '--json', ...args], {
    cwd: process.cwd(),
    env: { ...CLEAN_ENV, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve) => {
    let buf = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve({ id: (JSON.parse(buf.slice(0, nl)) as { id: string }).id, stderr: () => stderr, stop });
    });
    void exited.then((code) => resolve({ code, stderr: () => stderr, stop }));
  });
}

describe.runIf(etcdAvailable())('granary worker with etcd security flags', () => {
  let tlsEtcd: EtcdServer;
  let authEtcd: EtcdServer;
  let certs: TestCerts;
  const password = 'cli-pw-5e8d21';

  beforeAll(async () => {
    certs = makeTestCerts();
    tlsEtcd = (await startEtcd({
      tls: {
        caFile: certs.caFile,
        certFile: certs.serverCertFile,
        keyFile: certs.serverKeyFile,
        clientCertAuth: true,
        clientCertFile: certs.clientCertFile,
        clientKeyFile: certs.clientKeyFile,
      },
    }))!;
    authEtcd = (await startEtcd())!;
    await enableEtcdAuth(authEtcd, password);
  }, 60_000);
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await tlsEtcd?.close();
    await authEtcd?.close();
    certs?.remove();
  });

  it('--etcd https://... --etcd-ca --etcd-cert --etcd-key registers the worker', async () => {
    const w = await startWorkerCli(['--etcd', tlsEtcd.endpoint, '--cluster', 'cli-tls', '--etcd-ca', certs.caFile, '--etcd-cert', certs.clientCertFile, '--etcd-key', certs.clientKeyFile]);
    try {
      expect(w.id, w.stderr()).toBeDefined();
      const m = new EtcdMembership({ endpoints: [tlsEtcd.endpoint], cluster: 'cli-tls', tls: { caFile: certs.caFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile } });
      try {
        await m.ready();
        await waitFor(() => m.members().some((x) => x.id === w.id));
      } finally {
        await m.close();
      }
    } finally {
      await w.stop();
    }
  });

  it('--etcd-user with a password file registers; GRANARY_ETCD_PASSWORD wrong: GRANARY_ERR_ACCESS_DENIED without the password', async () => {
    const file = join(certs.dir, 'etcd-password');
    writeFileSync(file, `${password}\n`);
    const w = await startWorkerCli(['--etcd', authEtcd.endpoint, '--cluster', 'cli-auth', '--etcd-user', 'root', '--etcd-password-file', file]);
    try {
      expect(w.id, w.stderr()).toBeDefined();
      const m = new EtcdMembership({ endpoints: [authEtcd.endpoint], cluster: 'cli-auth', auth: { username: 'root', password } });
      try {
        await m.ready();
        await waitFor(() => m.members().some((x) => x.id === w.id));
      } finally {
        await m.close();
      }
    } finally {
      await w.stop();
    }
    const bad = await startWorkerCli(['--etcd', authEtcd.endpoint, '--cluster', 'cli-auth', '--etcd-user', 'root'], { GRANARY_ETCD_PASSWORD: 'wrong-cli-pw-77' });
    expect(bad.id).toBeUndefined();
    expect(bad.code).not.toBe(0);
    expect(bad.stderr()).toMatch(/GRANARY_ERR_ACCESS_DENIED/);
    expect(bad.stderr()).not.toContain('wrong-cli-pw-77');
  });

  it('a missing --etcd-ca file: GRANARY_ERR_CONFIG naming it', async () => {
    const missing = join(certs.dir, 'missing-ca.crt');
    const r = await startWorkerCli(['--etcd', tlsEtcd.endpoint, '--etcd-ca', missing]);
    expect(r.id).toBeUndefined();
    expect(r.stderr()).toMatch(/GRANARY_ERR_CONFIG/);
    expect(r.stderr()).toContain(missing);
  });
});

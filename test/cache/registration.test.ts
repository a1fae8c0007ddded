import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { Etcd3 } from 'etcd3';
import { EtcdMembership, workerKey, type WorkerInfo } from '../../src/cache/membership.js';
import { Registration, registerWorker } from '../../src/cache/registration.js';
import { ClosedError, ErrorCodes, InvalidArgumentError, type GranaryError } from '../../src/errors.js';
import { etcdAvailable, freePort, type EtcdServer } from '../support/etcd.js';
import { useEtcd } from '../support/etcd-fixture.js';
import { startFaultProxy } from '../support/fault-proxy.js';
import { deferred } from '../support/wait.js';

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 15_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const ids = (ws: readonly WorkerInfo[]) => ws.map((w) => w.id);
const fixture = new URL('../fixtures/register-child.ts', import.meta.url).pathname;

describe('registration options', () => {
  const base = { endpoints: 'http://127.0.0.1:2379', cluster: 'c', info: { id: 'w1', url: 'http://127.0.0.1:7001' } };

  it.each([1, 0, -5, 2.5, Number.NaN, '10'])('rejects ttlSeconds %s with a coded error naming the option and value', (ttl) => {
    try {
      new Registration({ ...base, ttlSeconds: ttl as number });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as GranaryError).code).toBe(ErrorCodes.INVALID_ARGUMENT);
      expect((err as Error).message).toContain('`ttlSeconds`');
      expect((err as Error).message).toContain(String(ttl));
    }
  });

  it('rejects a bad cluster, worker id, URL or endpoint', () => {
    expect(() => new Registration({ ...base, cluster: '' })).toThrow(/`cluster`/);
    expect(() => new Registration({ ...base, info: { id: 'a/b', url: 'http://x:1' } })).toThrow(/`info.id`.*"a\/b"/);
    expect(() => new Registration({ ...base, info: { id: 'w', url: 'file:///tmp' } })).toThrow(/`info.url`/);
    expect(() => new Registration({ ...base, info: { id: 'w', url: 'http://x:1', capacityBytes: -1 } })).toThrow(
      /`info.capacityBytes`/,
    );
    expect(() => new Registration({ ...base, endpoints: ['etcd:2379'] })).toThrow(/`endpoints\[0\]`/);
  });

  it('gives up waiting when the signal aborts, and closes the registration', async () => {
    const port = await freePort(); // nothing listens: etcd "down" from the start
    const reason = new Error('deadline');
    const ac = new AbortController();
    // Abort once an attempt has failed: the registration is then waiting to retry.
    const attemptFailed = deferred();
    const onError = (): void => attemptFailed.resolve();
    subscribe('granary:registration:error', onError);
    try {
      const p = registerWorker({ ...base, endpoints: `http://127.0.0.1:${port}`, ttlSeconds: 2, signal: ac.signal });
      await attemptFailed.promise;
      ac.abort(reason);
      await expect(p).rejects.toBe(reason);
    } finally {
      unsubscribe('granary:registration:error', onError);
    }
  });

  it('keeps trying in the background while etcd is unreachable, until closed', async () => {
    const port = await freePort();
    const reg = new Registration({ ...base, endpoints: `http://127.0.0.1:${port}`, ttlSeconds: 2 });
    expect(reg.state).toBe('registering');
    const waiting = expect(reg.whenRegistered()).rejects.toThrow(ClosedError);
    await reg.close();
    await reg.close();
    await waiting;
    expect(reg.state).toBe('closed');
    await expect(reg.update(base.info)).rejects.toThrow(ClosedError);
  });
});

describe.runIf(etcdAvailable())('worker registration against a real etcd', () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  let n = 0;
  const cluster = () => `r${process.pid}-${++n}`;

  useEtcd((e, c) => {
    etcd = e;
    client = c;
  });

  async function keyLease(key: string, c: Etcd3 = client): Promise<string | undefined> {
    const res = await c.get(key).exec();
    return res.kvs[0]?.lease;
  }

  it('puts the worker info under a lease and revokes it on close', async () => {
    const c = cluster();
    const info = { id: 'w1', url: 'http://127.0.0.1:7001', capacityBytes: 1 << 20, startedAt: 123 };
    const reg = await registerWorker({ endpoints: [etcd.endpoint], cluster: c, info, ttlSeconds: 30 });
    expect(reg.state).toBe('registered');
    expect(reg.key).toBe(`/granary/${c}/workers/w1`);
    expect(JSON.parse((await client.get(reg.key).string()) ?? 'null')).toEqual(info);
    expect(await keyLease(reg.key)).toBe(reg.leaseId);
    await reg.close();
    expect(await client.get(reg.key).string()).toBeNull();
    await reg.close();
    expect(reg.state).toBe('closed');
  });

  it('destroy(err) stops like a crash: waiters reject with err, the lease is not revoked', async () => {
    const c = cluster();
    const info = { id: 'w1', url: 'http://127.0.0.1:7001' };
    const reg = await registerWorker({ endpoints: [etcd.endpoint], cluster: c, info, ttlSeconds: 30 });
    const leaseId = reg.leaseId;
    const boom = new Error('worker crashed');
    const destroying = reg.destroy(boom);
    expect(reg.close()).toBe(destroying);
    await destroying;
    expect(reg.state).toBe('closed');
    await expect(reg.whenRegistered()).rejects.toThrow(ClosedError);
    // The key stays until its lease expires, as after a crash; clean up by hand.
    expect(await keyLease(reg.key)).toBe(leaseId);
    await client.delete().key(reg.key).exec();
  });

  it('rejects whenRegistered() waiters with the destroy error while still registering', async () => {
    const port = await freePort();
    const reg = new Registration({ endpoints: `http://127.0.0.1:${port}`, cluster: cluster(), info: { id: 'w1', url: 'http://127.0.0.1:7001' }, ttlSeconds: 2 });
    const waiting = reg.whenRegistered();
    const boom = new Error('boom');
    await reg.destroy(boom);
    await expect(waiting).rejects.toBe(boom);
  });

  it('closes on leaving an await using block, revoking its lease', async () => {
    const c = cluster();
    let key = '';
    {
      await using reg = await registerWorker({ endpoints: [etcd.endpoint], cluster: c, info: { id: 'w1', url: 'http://127.0.0.1:7001' }, ttlSeconds: 30 });
      key = reg.key;
      expect(await client.get(key).string()).not.toBeNull();
    }
    expect(await client.get(key).string()).toBeNull();
  });

  it('update() rewrites the value under the same lease, and refuses to change the id', async () => {
    const c = cluster();
    const m = new EtcdMembership({ endpoints: etcd.endpoint, cluster: c });
    const reg = await registerWorker({
      endpoints: etcd.endpoint,
      cluster: c,
      info: { id: 'w1', url: 'http://127.0.0.1:7001' },
      ttlSeconds: 30,
    });
    try {
      await m.ready();
      await waitFor(() => ids(m.members()).includes('w1'), 15_000, 'w1 to appear');
      const lease = reg.leaseId;
      const changed = new Promise<void>((resolve) => {
        const off = m.subscribe((_ws, ch) => {
          if (ch.updated.some((w) => w.capacityBytes === 7)) {
            off();
            resolve();
          }
        });
      });
      await reg.update({ id: 'w1', url: 'http://127.0.0.1:7001', capacityBytes: 7 });
      await changed;
      expect(await keyLease(reg.key)).toBe(lease);
      await expect(reg.update({ id: 'w2', url: 'http://127.0.0.1:7001' })).rejects.toThrow(InvalidArgumentError);
    } finally {
      await reg.close();
      await m.close();
    }
  });

  it('a SIGKILLed worker leaves the membership once its 2 s lease expires', async () => {
    const c = cluster();
    const m = new EtcdMembership({ endpoints: etcd.endpoint, cluster: c });
    await m.ready();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fixture, etcd.endpoint, c, 'doomed', 'http://127.0.0.1:7001', '2'],
      { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
    );
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const line = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`register child exited (${String(code)}): ${stderr}`)));
      });
      expect(line).toMatch(/^REGISTERED \d+/);
      await waitFor(() => ids(m.members()).includes('doomed'), 15_000, 'child worker to appear');

      const gone = new Promise<void>((resolve) => {
        const off = m.subscribe((_ws, ch) => {
          if (ids(ch.removed).includes('doomed')) {
            off();
            resolve();
          }
        });
      });
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
      // No revoke happened: only the lease expiring can remove it.
      await gone;
      expect(await client.get(workerKey(c, 'doomed')).string()).toBeNull();
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await m.close();
    }
  });

  it('stays registered across a short etcd restart', async () => {
    const c = cluster();
    const reg = await registerWorker({
      endpoints: etcd.endpoint,
      cluster: c,
      info: { id: 'w1', url: 'http://127.0.0.1:7001' },
      ttlSeconds: 10,
    });
    try {
      await etcd.stop();
      await etcd.start();
      const fresh = new Etcd3({ hosts: etcd.endpoint });
      try {
        // Either the lease survived (etcd restores it) or it was re-granted: the key is there under the live lease.
        await waitFor(
          async () => reg.state === 'registered' && (await keyLease(reg.key, fresh)) === reg.leaseId,
          20_000,
          'registration after restart',
        );
      } finally {
        fresh.close();
      }
    } finally {
      await reg.close();
    }
  });

  it('re-registers under a new lease when etcd was down longer than the lease could survive', async () => {
    const c = cluster();
    const reg = await registerWorker({
      endpoints: etcd.endpoint,
      cluster: c,
      info: { id: 'w1', url: 'http://127.0.0.1:7001' },
      ttlSeconds: 2,
    });
    const failures: Error[] = [];
    reg.on('keepaliveFailed', (err) => failures.push(err));
    try {
      const firstLease = reg.leaseId;
      const lost = once(reg, 'lost');
      await etcd.stop();
      await lost; // the client gave the lease up after 2 x TTL without a keepalive
      expect(reg.state).toBe('registering');
      expect(failures.length).toBeGreaterThan(0);

      const registered = once(reg, 'registered');
      await etcd.start();
      const [leaseId] = (await registered) as [string];
      expect(leaseId).not.toBe(firstLease);
      const fresh = new Etcd3({ hosts: etcd.endpoint });
      const m = new EtcdMembership({ endpoints: etcd.endpoint, cluster: c });
      try {
        expect(await keyLease(reg.key, fresh)).toBe(leaseId);
        await m.ready();
        expect(ids(m.members())).toEqual(['w1']);
      } finally {
        fresh.close();
        await m.close();
      }
    } finally {
      await reg.close();
    }
  });

  it('treats a failed keepalive as transient: same lease, no departure', async () => {
    const c = cluster();
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: etcd.clientPort } });
    const m = new EtcdMembership({ endpoints: etcd.endpoint, cluster: c });
    const removals: string[] = [];
    const reg = await registerWorker({
      endpoints: proxy.url,
      cluster: c,
      info: { id: 'w1', url: 'http://127.0.0.1:7001' },
      ttlSeconds: 10,
    });
    let lostCount = 0;
    reg.on('lost', () => lostCount++);
    try {
      await m.ready();
      await waitFor(() => ids(m.members()).includes('w1'), 15_000, 'w1 to appear');
      m.subscribe((_ws, ch) => removals.push(...ids(ch.removed)));
      const lease = reg.leaseId;
      const failed = once(reg, 'keepaliveFailed');
      // Cut the worker off from etcd for a moment (far shorter than the 10 s TTL).
      await proxy.refuse(true, 'unlisten');
      proxy.resetAll();
      await failed;
      const failedAt = Date.now();
      await proxy.refuse(false);
      await waitFor(() => (reg.lastKeepaliveAt ?? 0) > failedAt, 20_000, 'a keepalive to succeed again');
      expect(lostCount).toBe(0);
      expect(reg.state).toBe('registered');
      expect(reg.leaseId).toBe(lease);
      expect(await keyLease(reg.key)).toBe(lease);
      expect(removals).toEqual([]);
    } finally {
      await reg.close();
      await m.close();
      await proxy.close();
    }
  });
});

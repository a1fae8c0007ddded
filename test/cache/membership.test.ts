import { describe, expect, it } from 'vitest';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Etcd3 } from 'etcd3';
import {
  EtcdMembership,
  StaticMembership,
  createMembership,
  decodeWorkerInfo,
  encodeWorkerInfo,
  validateWorkerInfo,
  workerKey,
  workersPrefix,
  type MembershipChange,
  type WorkerInfo,
} from '../../src/cache/membership.js';
import { registerWorker } from '../../src/cache/registration.js';
import { ClosedError, ErrorCodes, InvalidArgumentError, type GranaryError } from '../../src/errors.js';
import { etcdAvailable, freePort, type EtcdServer } from '../support/etcd.js';
import { useEtcd } from '../support/etcd-fixture.js';
import { startFaultProxy } from '../support/fault-proxy.js';

/** Poll `cond` every 50 ms until it holds; fail after `timeoutMs` (an upper bound, not a timing assertion). */
async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 15_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const ids = (ws: readonly WorkerInfo[]) => ws.map((w) => w.id);

describe('StaticMembership', () => {
  it('derives ids from the URLs and lists them sorted and frozen', async () => {
    const m = new StaticMembership(['http://127.0.0.1:7002/', 'http://127.0.0.1:7001']);
    await m.ready();
    expect(m.members()).toEqual([
      { id: 'http://127.0.0.1:7001', url: 'http://127.0.0.1:7001' },
      { id: 'http://127.0.0.1:7002', url: 'http://127.0.0.1:7002' },
    ]);
    expect(Object.isFrozen(m.members())).toBe(true);
    expect(m.source).toBe('static');
    await m.close();
  });

  it('accepts full WorkerInfo objects', () => {
    const m = new StaticMembership([{ id: 'w1', url: 'http://127.0.0.1:7001', capacityBytes: 1024 }]);
    expect(m.members()).toEqual([{ id: 'w1', url: 'http://127.0.0.1:7001', capacityBytes: 1024 }]);
  });

  it('rejects invalid URLs and duplicate workers with InvalidArgumentError naming the value', () => {
    expect(() => new StaticMembership(['ftp://x'])).toThrow(InvalidArgumentError);
    expect(() => new StaticMembership(['not a url'])).toThrow(/workers\[0\].*"not a url"/);
    expect(() => new StaticMembership(['http://a:1', 'http://a:1/'])).toThrow(/workers\[1\]` repeats worker/);
    try {
      new StaticMembership(['http://ok:1', 'http://u:p@host:1']);
      expect.unreachable();
    } catch (err) {
      expect((err as GranaryError).code).toBe(ErrorCodes.INVALID_ARGUMENT);
      expect((err as Error).message).toContain('workers[1]');
    }
  });

  it('tells subscribers what update() added and removed, until they unsubscribe', () => {
    const m = new StaticMembership(['http://127.0.0.1:7001']);
    const seen: MembershipChange[] = [];
    const lists: (readonly WorkerInfo[])[] = [];
    const off = m.subscribe((members, change) => {
      lists.push(members);
      seen.push(change);
    });
    m.update(['http://127.0.0.1:7002']);
    expect(seen).toHaveLength(1);
    expect(ids(seen[0]!.added)).toEqual(['http://127.0.0.1:7002']);
    expect(ids(seen[0]!.removed)).toEqual(['http://127.0.0.1:7001']);
    expect(seen[0]!.reason).toBe('update');
    expect(ids(lists[0]!)).toEqual(['http://127.0.0.1:7002']);
    m.update(['http://127.0.0.1:7002']);
    expect(seen).toHaveLength(1); // no change, no notification
    off();
    m.update([]);
    expect(seen).toHaveLength(1);
    expect(m.members()).toEqual([]);
  });

  it('publishes changes on the granary:membership:change channel', () => {
    const got: unknown[] = [];
    const onMsg = (msg: unknown) => got.push(msg);
    subscribe('granary:membership:change', onMsg);
    try {
      const m = new StaticMembership([]);
      m.update(['http://127.0.0.1:7009']);
      expect(got).toContainEqual(expect.objectContaining({ source: 'static', reason: 'update' }));
    } finally {
      unsubscribe('granary:membership:change', onMsg);
    }
  });

  it('throws ClosedError after close(), and close() is idempotent', async () => {
    const m = new StaticMembership(['http://127.0.0.1:7001']);
    await m.close();
    await m.close();
    expect(() => m.members()).toThrow(ClosedError);
    expect(() => m.subscribe(() => undefined)).toThrow(ClosedError);
    await expect(m.ready()).rejects.toThrow(ClosedError);
  });
});

describe('createMembership and option validation', () => {
  it('builds a static membership from `workers`', async () => {
    const m = createMembership({ workers: ['http://127.0.0.1:7001'] });
    expect(m.source).toBe('static');
    await m.close();
  });

  it('rejects both or neither source', () => {
    expect(() => createMembership({} as never)).toThrow(InvalidArgumentError);
    expect(() =>
      createMembership({ workers: [], etcd: { endpoints: 'http://127.0.0.1:2379', cluster: 'c' } } as never),
    ).toThrow(/not both/);
  });

  it('names the bad option and value for etcd options', () => {
    expect(() => new EtcdMembership({ endpoints: [], cluster: 'c' })).toThrow(/`endpoints`/);
    expect(() => new EtcdMembership({ endpoints: ['127.0.0.1'], cluster: 'c' })).toThrow(/endpoints\[0\].*"127.0.0.1"/);
    expect(() => new EtcdMembership({ endpoints: 'http://127.0.0.1:2379', cluster: 'a/b' })).toThrow(/`cluster`.*"a\/b"/);
    expect(() => workerKey('c', 'x/y')).toThrow(InvalidArgumentError);
    expect(workersPrefix('prod')).toBe('/granary/prod/workers/');
  });

  it('rejects ready() with ClosedError when closed before etcd ever answered', async () => {
    const port = await freePort(); // nothing listens here
    const m = new EtcdMembership({ endpoints: `http://127.0.0.1:${port}`, cluster: 'nobody' });
    const ready = m.ready();
    await m.close();
    await expect(ready).rejects.toThrow(ClosedError);
    await m.close();
  });

  it('destroy(err) stops at once and rejects ready() waiters with err', async () => {
    const port = await freePort();
    const m = new EtcdMembership({ endpoints: `http://127.0.0.1:${port}`, cluster: 'nobody' });
    const ready = m.ready();
    const boom = new Error('boom');
    await m.destroy(boom);
    await expect(ready).rejects.toBe(boom);
    expect(() => m.members()).toThrow(ClosedError);
    await m.close();
  });

  it('works with await using', async () => {
    let outer: StaticMembership | undefined;
    {
      await using m = new StaticMembership(['http://127.0.0.1:7001']);
      outer = m;
      expect(m.members()).toHaveLength(1);
    }
    expect(() => outer?.members()).toThrow(ClosedError);
  });

  it('honours an aborted signal in ready() and closes when its own signal aborts', async () => {
    const port = await freePort();
    const ac = new AbortController();
    const m = new EtcdMembership({ endpoints: `http://127.0.0.1:${port}`, cluster: 'nobody', signal: ac.signal });
    const reason = new Error('gave up');
    await expect(m.ready({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    ac.abort();
    await waitFor(() => {
      try {
        m.members();
        return false;
      } catch (err) {
        return err instanceof ClosedError;
      }
    }, 5000, 'membership to close on abort');
  });
});

describe('worker info on the wire', () => {
  const prefix = '/granary/c/workers/';
  const bytes = (v: string) => Buffer.from(v, 'utf8');

  it('decodes a valid value, taking the id from the key and normalising the rest', () => {
    const raw = JSON.stringify({ id: 'other', url: 'http://127.0.0.1:7001/', labels: { z: '1', a: '2' }, unknown: true });
    const r = decodeWorkerInfo(prefix, `${prefix}w1`, bytes(raw));
    expect(r).toEqual({ info: { id: 'w1', url: 'http://127.0.0.1:7001', labels: { a: '2', z: '1' } } });
    expect(Object.keys((r as { info: WorkerInfo }).info.labels ?? {})).toEqual(['a', 'z']);
  });

  it('round-trips what a worker writes', () => {
    const info = validateWorkerInfo({ id: 'w1', url: 'http://127.0.0.1:7001', capacityBytes: 5, startedAt: 1.5, version: '1', host: 'h', pageSize: 4096, labels: { zone: 'a' } });
    expect(decodeWorkerInfo(prefix, `${prefix}w1`, bytes(encodeWorkerInfo(info)))).toEqual({ info });
  });

  it('gives a reason, never an exception, for anything that is not a WorkerInfo', () => {
    const cases: [string, string, RegExp][] = [
      [`${prefix}w1`, '{not json', /not JSON/],
      [`${prefix}w1`, '[1,2]', /`value` to be an object/],
      [`${prefix}w1`, 'null', /`value` to be an object/],
      [`${prefix}w1`, JSON.stringify({ url: 'ftp://x' }), /`value.url`.*"ftp:\/\/x"/],
      [`${prefix}w1`, JSON.stringify({ url: 'http://x:1', capacityBytes: -1 }), /`value.capacityBytes` to be an integer >= 0, got -1/],
      [`${prefix}w1`, JSON.stringify({ url: 'http://x:1', labels: { a: 1 } }), /`value.labels.a`/],
      [`${prefix}a/b`, JSON.stringify({ url: 'http://x:1' }), /`key`/],
      ['/granary/other/workers/w1', JSON.stringify({ url: 'http://x:1' }), /outside/],
    ];
    for (const [key, value, reason] of cases) {
      const r = decodeWorkerInfo(prefix, key, bytes(value));
      expect(r).toEqual({ reason: expect.stringMatching(reason) as unknown });
    }
  });
});

describe.runIf(etcdAvailable())('EtcdMembership against a real etcd', () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  let n = 0;
  const cluster = () => `m${process.pid}-${++n}`;

  useEtcd((e, c) => {
    etcd = e;
    client = c;
  });

  /** Resolves with the first change for which `pred` holds. */
  function nextChange(m: EtcdMembership, pred: (members: readonly WorkerInfo[], c: MembershipChange) => boolean, timeoutMs = 15_000) {
    return new Promise<MembershipChange>((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`no matching membership change within ${timeoutMs} ms; members: ${JSON.stringify(m.members())}`));
      }, timeoutMs);
      const off = m.subscribe((members, c) => {
        if (pred(members, c)) {
          clearTimeout(timer);
          off();
          resolve(c);
        }
      });
    });
  }

  it('lists the workers already registered, ignoring keys that are not valid WorkerInfo', async () => {
    const c = cluster();
    await client.put(workerKey(c, 'w1')).value(JSON.stringify({ id: 'w1', url: 'http://127.0.0.1:7001' }));
    await client.put(workerKey(c, 'w2')).value(JSON.stringify({ id: 'w2', url: 'http://127.0.0.1:7002', capacityBytes: 5 }));
    await client.put(`${workersPrefix(c)}bad`).value('{not json');
    await client.put(`${workersPrefix(c)}nourl`).value(JSON.stringify({ id: 'nourl' }));
    const invalid: unknown[] = [];
    const onInvalid = (msg: unknown) => invalid.push(msg);
    subscribe('granary:membership:invalid-entry', onInvalid);
    const m = new EtcdMembership({ endpoints: [etcd.endpoint], cluster: c });
    try {
      await m.ready();
      expect(m.members()).toEqual([
        { id: 'w1', url: 'http://127.0.0.1:7001' },
        { id: 'w2', url: 'http://127.0.0.1:7002', capacityBytes: 5 },
      ]);
      expect(invalid).toHaveLength(2);
      expect(m.invalidEntries).toBe(2);
    } finally {
      unsubscribe('granary:membership:invalid-entry', onInvalid);
      await m.close();
    }
  });

  it('skips and counts a bad value that arrives on the watch, and keeps watching', async () => {
    const c = cluster();
    const m = new EtcdMembership({ endpoints: etcd.endpoint, cluster: c });
    try {
      await m.ready();
      const added = nextChange(m, (ws) => ids(ws).includes('w2'));
      await client.put(workerKey(c, 'w1')).value('{"url": 42}');
      await client.put(workerKey(c, 'w2')).value(JSON.stringify({ id: 'w2', url: 'http://127.0.0.1:7002' }));
      await added;
      expect(ids(m.members())).toEqual(['w2']);
      expect(m.invalidEntries).toBe(1);
      // A bad value replacing a good one removes the worker: the key no longer says where it is.
      const gone = nextChange(m, (ws) => ws.length === 0);
      await client.put(workerKey(c, 'w2')).value('garbage');
      await gone;
      expect(m.invalidEntries).toBe(2);
    } finally {
      await m.close();
    }
  });

  it('close() resolves with the watch and client stopped; destroy() after it changes nothing', async () => {
    const c = cluster();
    const m = new EtcdMembership({ endpoints: etcd.endpoint, cluster: c });
    await m.ready();
    const closing = m.close();
    expect(m.close()).toBe(closing);
    expect(m.destroy(new Error('late'))).toBe(closing);
    await closing;
    expect(m.connected).toBe(false);
    expect(() => m.members()).toThrow(ClosedError);
  });

  it('applies puts and deletes from the watch as they happen', async () => {
    const c = cluster();
    const m = new EtcdMembership({ endpoints: etcd.endpoint, cluster: c });
    try {
      await m.ready();
      expect(m.members()).toEqual([]);
      const added = nextChange(m, (ws) => ids(ws).includes('w1'));
      await client.put(workerKey(c, 'w1')).value(JSON.stringify({ id: 'w1', url: 'http://127.0.0.1:7001' }));
      expect((await added).reason).toBe('watch');

      const updated = nextChange(m, (_ws, ch) => ch.updated.length > 0);
      await client.put(workerKey(c, 'w1')).value(JSON.stringify({ id: 'w1', url: 'http://127.0.0.1:7011' }));
      expect((await updated).updated).toEqual([{ id: 'w1', url: 'http://127.0.0.1:7011' }]);

      const removed = nextChange(m, (ws) => ws.length === 0);
      await client.delete().key(workerKey(c, 'w1'));
      expect(ids((await removed).removed)).toEqual(['w1']);
    } finally {
      await m.close();
    }
  });

  it('sees a registered worker appear, and vanish at once when it closes (lease revoked)', async () => {
    const c = cluster();
    const m = new EtcdMembership({ endpoints: [etcd.endpoint], cluster: c });
    try {
      await m.ready();
      const appeared = nextChange(m, (ws) => ids(ws).includes('w1'));
      const reg = await registerWorker({
        endpoints: [etcd.endpoint],
        cluster: c,
        info: { id: 'w1', url: 'http://127.0.0.1:7001' },
        ttlSeconds: 30,
      });
      await appeared;
      // TTL is 30 s: only the revoke can make it disappear within the wait below.
      const gone = nextChange(m, (_ws, ch) => ids(ch.removed).includes('w1'), 10_000);
      await reg.close();
      await gone;
      expect(m.members()).toEqual([]);
    } finally {
      await m.close();
    }
  });

  it('keeps the last known list while etcd is down, then resumes and sees new workers', async () => {
    const c = cluster();
    await client.put(workerKey(c, 'w1')).value(JSON.stringify({ id: 'w1', url: 'http://127.0.0.1:7001' }));
    const m = new EtcdMembership({ endpoints: [etcd.endpoint], cluster: c });
    const events: { connected: boolean }[] = [];
    const onConn = (msg: unknown) => events.push(msg as { connected: boolean });
    subscribe('granary:membership:connection', onConn);
    try {
      await m.ready();
      await waitFor(() => m.connected, 15_000, 'watch to connect');
      await etcd.stop();
      await waitFor(() => !m.connected, 15_000, 'watch to notice etcd is gone');
      expect(ids(m.members())).toEqual(['w1']);

      await etcd.start();
      await waitFor(() => m.connected, 20_000, 'watch to reconnect after etcd restart');
      expect(ids(m.members())).toEqual(['w1']);
      const seen = nextChange(m, (ws) => ids(ws).includes('w2'), 20_000);
      const fresh = new Etcd3({ hosts: etcd.endpoint });
      try {
        await fresh.put(workerKey(c, 'w2')).value(JSON.stringify({ id: 'w2', url: 'http://127.0.0.1:7002' }));
      } finally {
        fresh.close();
      }
      await seen;
      expect(ids(m.members())).toEqual(['w1', 'w2']);
      expect(events.some((e) => !e.connected)).toBe(true);
    } finally {
      unsubscribe('granary:membership:connection', onConn);
      await m.close();
    }
  });

  it('catches up on changes made while its watch was cut off', async () => {
    // A second membership on a second etcd client is cut off by stopping etcd; changes
    // made right after the restart, before the watch is back, must still arrive.
    const c = cluster();
    await client.put(workerKey(c, 'w1')).value(JSON.stringify({ id: 'w1', url: 'http://127.0.0.1:7001' }));
    const m = new EtcdMembership({ endpoints: [etcd.endpoint], cluster: c });
    try {
      await m.ready();
      await waitFor(() => m.connected, 15_000, 'watch to connect');
      await etcd.stop();
      await waitFor(() => !m.connected, 15_000, 'watch to notice etcd is gone');
      await etcd.start();
      const writer = new Etcd3({ hosts: etcd.endpoint });
      try {
        await writer.delete().key(workerKey(c, 'w1'));
        await writer.put(workerKey(c, 'w3')).value(JSON.stringify({ id: 'w3', url: 'http://127.0.0.1:7003' }));
      } finally {
        writer.close();
      }
      await waitFor(() => ids(m.members()).join() === 'w3', 20_000, 'membership to catch up');
    } finally {
      await m.close();
    }
  });

  it('re-lists from scratch when etcd compacted away the revision its watch was cut off at', async () => {
    const c = cluster();
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: etcd.clientPort } });
    const errors: { error: Error; terminal: boolean }[] = [];
    const onError = (msg: unknown) => errors.push(msg as { error: Error; terminal: boolean });
    subscribe('granary:membership:error', onError);
    await client.put(workerKey(c, 'w1')).value(JSON.stringify({ id: 'w1', url: 'http://127.0.0.1:7001' }));
    const m = new EtcdMembership({ endpoints: proxy.url, cluster: c });
    try {
      await m.ready();
      await waitFor(() => m.connected, 15_000, 'watch to connect');
      expect(ids(m.members())).toEqual(['w1']);
      // Cut only this membership off; etcd itself stays up and moves on.
      await proxy.refuse(true, 'unlisten');
      proxy.resetAll();
      await waitFor(() => !m.connected, 15_000, 'watch to notice the cut');
      await client.delete().key(workerKey(c, 'w1'));
      await client.put(workerKey(c, 'w2')).value(JSON.stringify({ id: 'w2', url: 'http://127.0.0.1:7002' }));
      const put = await client.put(workerKey(c, 'w3')).value(JSON.stringify({ id: 'w3', url: 'http://127.0.0.1:7003' })).exec();
      await client.kv.compact({ revision: put.header.revision, physical: true });
      expect(ids(m.members())).toEqual(['w1']); // still the last known list
      await proxy.refuse(false);
      // etcd cancels the resumed watch (its revision is compacted); membership re-lists and watches anew.
      await waitFor(
        () => errors.some((e) => !e.terminal && /Watcher canceled/.test(e.error.message)),
        20_000,
        'etcd to cancel the compacted watch',
      );
      await waitFor(() => ids(m.members()).join() === 'w2,w3', 20_000, 'membership to re-list after compaction');
      await waitFor(() => m.connected, 15_000, 'the new watch to connect');
      // And the new watch works.
      const gone = nextChange(m, (ws) => !ids(ws).includes('w2'));
      await client.delete().key(workerKey(c, 'w2'));
      await gone;
    } finally {
      unsubscribe('granary:membership:error', onError);
      await m.close();
      await proxy.close();
    }
  });
});

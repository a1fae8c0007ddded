import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { Etcd3 } from 'etcd3';
import { etcdAvailable, startEtcd, type EtcdServer } from './etcd.js';
import { useEtcd } from './etcd-fixture.js';

describe.runIf(etcdAvailable())('startEtcd', () => {
  let etcd: EtcdServer;
  let client: Etcd3;

  useEtcd((e, c) => {
    etcd = e;
    client = c;
  });

  it('serves a loopback endpoint on an ephemeral port', async () => {
    expect(etcd.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(etcd.pid).toBeGreaterThan(0);
    await client.put('/t/a').value('1');
    expect(await client.get('/t/a').string()).toBe('1');
  });

  it('keeps its keys across stop and start on the same port and data dir', async () => {
    await client.put('/t/b').value('2');
    const firstPid = etcd.pid;
    await etcd.stop();
    expect(etcd.running).toBe(false);
    expect(etcd.pid).toBeUndefined();
    await etcd.start();
    expect(etcd.running).toBe(true);
    expect(etcd.pid).not.toBe(firstPid);
    const fresh = new Etcd3({ hosts: etcd.endpoint });
    try {
      expect(await fresh.get('/t/b').string()).toBe('2');
    } finally {
      fresh.close();
    }
  });

  it('removes its data dir on close, and close is idempotent', async () => {
    const other = await startEtcd();
    if (other === undefined) throw new Error('etcd did not start');
    expect(existsSync(other.dataDir)).toBe(true);
    await other.close();
    await other.close();
    expect(existsSync(other.dataDir)).toBe(false);
    expect(other.running).toBe(false);
  });
});

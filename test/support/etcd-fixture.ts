import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll } from 'vitest';
import { startEtcd, type EtcdServer } from './etcd.js';

/**
 * One real etcd for the enclosing describe block, with a client on it: started in
 * beforeAll and handed to `set`, stopped (by PID) in afterAll. Use inside
 * `describe.runIf(etcdAvailable())`.
 */
export function useEtcd(set: (etcd: EtcdServer, client: Etcd3) => void): void {
  let etcd: EtcdServer | undefined;
  let client: Etcd3 | undefined;
  beforeAll(async () => {
    etcd = await startEtcd();
    if (etcd === undefined) throw new Error('etcd reported available but did not start');
    client = new Etcd3({ hosts: etcd.endpoint });
    set(etcd, client);
  });
  afterAll(async () => {
    client?.close();
    await etcd?.close();
  });
}

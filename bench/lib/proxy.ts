import { fileURLToPath } from 'node:url';
import type { FaultProxyStats, PROFILES } from '../../src/netem/fault-proxy.js';
import { spawnChild, type ChildHandle } from './child.js';

const script = fileURLToPath(new URL('./proxy-child.ts', import.meta.url));

export interface ProxyProcess {
  url: string;
  handle: ChildHandle<{ port: number }>;
  /** The proxy's counters now (store requests by kind only when started with `countRequests`). */
  stats(): Promise<FaultProxyStats>;
  /** Switch to another named profile; resolves once the proxy applied it. */
  setProfile(name: keyof typeof PROFILES): Promise<void>;
}

/** Start the fault proxy, with a named network profile, in front of 127.0.0.1:`targetPort`, in its own process. */
export async function startProxyProcess(targetPort: number, profile: keyof typeof PROFILES, options: { countRequests?: boolean } = {}): Promise<ProxyProcess> {
  const handle = await spawnChild<{ port: number }>(script, [String(targetPort), profile, ...(options.countRequests ? ['count'] : [])], { timeoutMs: 30_000 });
  const ask = <T>(message: { type: string; name?: string }, pick: (m: { type?: string } & Record<string, unknown>) => T | undefined): Promise<T> =>
    new Promise((resolve, reject) => {
      const onMessage = (m: { type?: string } & Record<string, unknown>): void => {
        const v = m.type === message.type ? pick(m) : undefined;
        if (v === undefined) return;
        done();
        resolve(v);
      };
      const onExit = (): void => {
        done();
        reject(new Error('the fault proxy process exited'));
      };
      const done = (): void => {
        handle.child.off('message', onMessage);
        handle.child.off('exit', onExit);
      };
      handle.child.on('message', onMessage);
      handle.child.once('exit', onExit);
      handle.child.send(message);
    });
  return {
    url: `http://127.0.0.1:${handle.ready.port}`,
    handle,
    stats: () => ask({ type: 'stats' }, (m) => m.stats as FaultProxyStats | undefined),
    setProfile: (name) => ask({ type: 'profile', name }, (m) => (m.name === name ? true : undefined)).then(() => undefined),
  };
}

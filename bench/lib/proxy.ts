import { fileURLToPath } from 'node:url';
import type { PROFILES } from '../../src/netem/fault-proxy.js';
import { spawnChild, type ChildHandle } from './child.js';

const script = fileURLToPath(new URL('./proxy-child.ts', import.meta.url));

/** Start the fault proxy, with a named network profile, in front of 127.0.0.1:`targetPort`, in its own process. */
export async function startProxyProcess(targetPort: number, profile: keyof typeof PROFILES): Promise<{ url: string; handle: ChildHandle<{ port: number }> }> {
  const handle = await spawnChild<{ port: number }>(script, [String(targetPort), profile], { timeoutMs: 30_000 });
  return { url: `http://127.0.0.1:${handle.ready.port}`, handle };
}

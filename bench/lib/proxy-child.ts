/**
 * The fault proxy in its own process, so it never shares an event loop with what a
 * bench measures. argv: <targetPort> <profileName> [count]; prints `READY {"port"}`.
 * With `count`, it counts store requests by kind; over IPC it answers
 * `{ type: 'stats' }` with `{ type: 'stats', stats }` and applies
 * `{ type: 'profile', name }` (answering `{ type: 'profile', name }`).
 */
import { PROFILES, startFaultProxy, type ProfileName } from '../../src/netem/fault-proxy.js';
import { announceReady, exitWithParent } from './child.js';

const [targetPort, profileName, count] = process.argv.slice(2);
const profileOf = (name: string | undefined): (typeof PROFILES)[ProfileName] => {
  const profile = PROFILES[name as ProfileName] as (typeof PROFILES)[ProfileName] | undefined;
  if (!profile) throw new Error(`unknown network profile ${String(name)} (known: ${Object.keys(PROFILES).join(', ')})`);
  return profile;
};
const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: Number(targetPort) }, ...profileOf(profileName), countRequests: count === 'count' });
process.on('message', (m: { type?: string; name?: string }) => {
  if (m.type === 'stats') process.send?.({ type: 'stats', stats: proxy.stats() });
  else if (m.type === 'profile') {
    proxy.set(profileOf(m.name));
    process.send?.({ type: 'profile', name: m.name });
  }
});
exitWithParent(() => proxy.close());
announceReady({ port: proxy.port });

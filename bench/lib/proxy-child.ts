/**
 * The fault proxy in its own process, so it never shares an event loop with what a
 * bench measures. argv: <targetPort> <profileName>; prints `READY {"port"}`.
 */
import { PROFILES, startFaultProxy } from '../../src/netem/fault-proxy.js';
import { announceReady, exitWithParent } from './child.js';

const [targetPort, profileName] = process.argv.slice(2);
const profile = PROFILES[profileName as keyof typeof PROFILES];
if (!profile) throw new Error(`unknown network profile ${String(profileName)} (known: ${Object.keys(PROFILES).join(', ')})`);
const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: Number(targetPort) }, ...profile });
exitWithParent(() => proxy.close());
announceReady({ port: proxy.port });

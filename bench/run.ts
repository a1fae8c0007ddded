/**
 * `npm run bench -- <name> [args...]`: runs one bench, passing the remaining
 * arguments through. Each bench runs as a child process with the same Node options
 * (tsx), so it parses its own argv as when run directly.
 *
 *   npm run bench -- peers --quick
 *   npm run bench -- cache --only prefix
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCHES: Record<string, string> = {
  peers: 'peers.ts',
  cache: 'cache.ts',
  loader: 'loader.ts',
  ufs: 'ufs.ts',
  hints: 'hints.ts',
  's3-requests': 's3-requests.ts',
  chaos: 'chaos.ts',
  load: 'load.ts',
  mount: 'mount.ts',
};

const [name, ...rest] = process.argv.slice(2);
const file = name === undefined ? undefined : BENCHES[name];
if (file === undefined) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(BENCHES).join('|')}> [args...]${name === undefined ? '' : ` (unknown bench ${name})`}\n`);
  process.exit(2);
}
const child = spawn(process.execPath, [...process.execArgv, join(dirname(fileURLToPath(import.meta.url)), file), ...rest], { stdio: 'inherit' });
// Ctrl-C reaches the bench too (same process group): let it clean up, then exit as it does.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));

/**
 * Real-service availability for tests. A suite that needs a binary (etcd, Swift,
 * memcached) skips with a printed reason when it is missing, unless
 * `GRANARY_REQUIRE_SERVICES=1` (CI), where a missing service fails the run instead:
 * a clean CI run must have skipped nothing.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/** Whether the environment demands every real service (`GRANARY_REQUIRE_SERVICES=1`). */
export function servicesRequired(): boolean {
  const v = process.env.GRANARY_REQUIRE_SERVICES;
  return v === '1' || v === 'true';
}

/**
 * Decide whether a suite that needs `what` can run. Returns `true` when it is
 * available. When it is not: throws if services are required, otherwise prints
 * the reason once and returns `false` (the caller skips).
 *
 * @example
 * const etcd = whichBinary('etcd');
 * const run = requireOrSkip('etcd', etcd !== undefined, 'binary `etcd` not on PATH (apt-get install etcd-server)');
 * describe.runIf(run)('membership', () => { ... });
 */
export function requireOrSkip(what: string, available: boolean, reason: string): boolean {
  if (available) return true;
  const msg = `${what} unavailable: ${reason}`;
  if (servicesRequired()) throw new Error(`${msg} (GRANARY_REQUIRE_SERVICES=1, so this is a failure, not a skip)`);
  if (!printed.has(msg)) {
    printed.add(msg);
    console.warn(`[skip] ${msg}`);
  }
  return false;
}

const printed = new Set<string>();

/**
 * The absolute path of an executable: `name` itself when it is a path, else the
 * first match on `PATH` plus `extraDirs` (e.g. `/usr/sbin` for daemons). Undefined
 * when none is found.
 */
export function whichBinary(name: string, extraDirs: readonly string[] = ['/usr/sbin', '/usr/bin', '/sbin']): string | undefined {
  const candidates = isAbsolute(name)
    ? [name]
    : [...(process.env.PATH ?? '').split(delimiter).filter((d) => d.length > 0), ...extraDirs].map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

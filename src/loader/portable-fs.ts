/**
 * Store clients described as plain data, so a worker thread (which cannot receive a
 * live client) can build an equivalent one from what the Dataset was opened with.
 * The description is the client's own (`[toPortable]`, src/ufs/portable.ts): the
 * loader keeps no list of store or cache classes. A cache client's copy in another
 * thread of the same process shares the original's membership and breakers.
 */
// Static, for its effect: registers every built-in kind's rebuilder in this thread
// (a dynamic import of a sibling .ts module does not resolve in a worker thread under tsx).
import '../cache/rebuilders.js';
import { fromSpec, specOf, type PortableSpec } from '../ufs/portable.js';
import type { UnderFileSystem } from '../ufs/types.js';

/** A structured-clone-able description of a store client; `ufsFromSpec` builds one from it. */
export type UfsSpec = PortableSpec;

/**
 * A plain, structured-clone-able description of `fs` (a snapshot: later changes to the
 * options it was built with do not show), or undefined when it cannot be rebuilt
 * elsewhere: `MemoryUfs`, a router with custom `adapters`, an `HttpUfs` with its own
 * `dispatcher`, S3 credentials given as a function, a subclass that does not describe
 * itself, any other object. A `CacheClient`'s spec has no local disk tier, and names the
 * hub through which a copy in this process shares its membership and breakers.
 *
 * @example
 * const spec = ufsSpecOf(fs);
 * if (spec) worker.postMessage({ spec }); // in the thread: const fs = ufsFromSpec(spec)
 */
export function ufsSpecOf(fs: unknown): UfsSpec | undefined {
  return specOf(fs);
}

/**
 * A new client equivalent to the one `spec` came from: the same store, the same
 * workers and options, the same bytes. The caller owns it and closes it; closing a
 * cache client built here also closes the store client built for its fallback.
 */
export function ufsFromSpec(spec: UfsSpec): UnderFileSystem {
  return fromSpec(spec);
}

/** How long a rebuilt cache client's first reads wait for its first worker list. */
const MEMBERSHIP_WAIT_MS = 5000;

/**
 * A cache client rebuilt here learns its workers asynchronously (from its owner's hub,
 * or from etcd in another process); reads before that all go to the store. Wait for the
 * first list, but not for ever: if it does not come, the client falls back to the store
 * as it would anyway.
 */
export async function membershipKnown(fs: unknown): Promise<void> {
  const f = fs as { ready?: () => Promise<void> };
  if (typeof f.ready !== 'function') return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    f.ready().catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, MEMBERSHIP_WAIT_MS);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

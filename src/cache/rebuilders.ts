/**
 * Registers the cache client's rebuilder (src/ufs/portable.ts), and through
 * src/ufs/rebuilders.ts the store adapters'. Imported for its effect, statically, by
 * whatever rebuilds clients from specs (src/loader/portable-fs.ts and the thread
 * entries that use it).
 */
import '../ufs/rebuilders.js';
import { InvalidArgumentError } from '../errors.js';
import { fromSpec, isPortableSpec, registerRebuilder } from '../ufs/portable.js';
import type { UfsOptions } from '../ufs/router.js';
import type { UnderFileSystem } from '../ufs/types.js';
import { CacheClient, type CacheClientOptions } from './client.js';
import { hubRefOf, joinClientState, ownClientState, type ClientState, type PortableCacheClientOptions } from './shared-state.js';

/**
 * A copy of the client the spec describes. In the process of the original, it joins
 * the original's membership and breakers (no etcd watch of its own); elsewhere it builds
 * its own. A store spec nested in it is built here and closed with the copy.
 */
function rebuildCacheClient(spec: { options: unknown; share?: unknown }): CacheClient {
  if (typeof spec.options !== 'object' || spec.options === null) {
    throw new InvalidArgumentError(`Expected the options of a cache client spec to be an object, got ${typeof spec.options}`);
  }
  const { ufs, ...rest } = spec.options as PortableCacheClientOptions;
  let inner: UnderFileSystem | undefined;
  let state: ClientState | undefined;
  try {
    let store: UfsOptions | UnderFileSystem | undefined;
    if (ufs !== undefined && isPortableSpec(ufs)) store = inner = fromSpec(ufs);
    else store = ufs;
    const options: CacheClientOptions = { ...rest, ...(store === undefined ? {} : { ufs: store }) };
    const ref = hubRefOf(spec.share);
    state = ref !== undefined && ref.pid === process.pid ? joinClientState(ref, options) : ownClientState(options);
    if (inner !== undefined) state.alsoClose(inner);
    return new CacheClient(options, state);
  } catch (err) {
    if (state !== undefined) void state.close().catch(() => undefined);
    else void inner?.close().catch(() => undefined);
    throw err;
  }
}

registerRebuilder('cache', rebuildCacheClient);

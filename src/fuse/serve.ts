/**
 * The serving process: lists the prefix, then answers the kernel's requests on the
 * inherited /dev/fuse fd until the mount goes away. It tells its holder over IPC when it
 * serves, and sends a heartbeat twice a second; a restarted one first asks the kernel
 * to re-send what its predecessor had taken.
 */
import { isGranaryError } from '../errors.js';
import type { UnderFileSystem } from '../ufs/types.js';
import { BlockReader } from './block-reader.js';
import { MountMetadata } from './metadata.js';
import { FuseSession } from './session.js';

/** Environment variables the holder sets for the serving process. */
export const SERVE_ENV = { role: 'GRANARY_FUSE_ROLE', restart: 'GRANARY_FUSE_RESTART' } as const;
/** The fd the holder puts the FUSE connection on. */
export const SERVE_FD = 3;

export type ServeMessage = { type: 'serving' } | { type: 'beat'; requests: number; inFlight: number } | { type: 'error'; code: string; message: string };

export interface ServeOptions {
  fs: UnderFileSystem;
  prefix: string;
  ttlMs: number;
  log: (line: string) => void;
  /** Blocks fetched ahead of a sequential reader. */
  readaheadBlocks?: number;
}

function send(m: ServeMessage): void {
  if (process.connected) process.send?.(m);
}

/** Serve the fd the holder passed; resolves when the mount is gone. */
export async function serveMount(o: ServeOptions): Promise<void> {
  const fd = SERVE_FD;
  // Listing changes found before the session exists have nothing in the kernel to invalidate.
  const ref: { session?: FuseSession } = {};
  const metadata = new MountMetadata({ fs: o.fs, prefix: o.prefix, ttlMs: o.ttlMs, log: o.log, notify: (m) => ref.session?.notify(m) });
  try {
    const tree = await metadata.load();
    o.log(`listed ${o.prefix}: ${tree.files} files, ${tree.bytes} bytes`);
  } catch (err) {
    send({ type: 'error', code: isGranaryError(err) ? err.code : 'GRANARY_ERR_UNAVAILABLE', message: `listing ${o.prefix} failed: ${err instanceof Error ? err.message : String(err)}` });
    throw err;
  }
  const session = new FuseSession({ fd, metadata, reader: new BlockReader(o.fs, o.readaheadBlocks === undefined ? {} : { readaheadBlocks: o.readaheadBlocks }), log: o.log });
  ref.session = session;
  const running = session.run();
  if (process.env[SERVE_ENV.restart] === '1') session.resend();
  send({ type: 'serving' });
  const beat = setInterval(() => send({ type: 'beat', requests: session.stats.requests, inFlight: session.stats.inFlight }), 500);
  const reason = await running;
  clearInterval(beat);
  o.log(`serving ended: ${reason}`);
}

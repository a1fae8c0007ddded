/**
 * The worker's side of short-circuit reads: its page tier kept as page files on a
 * tmpfs (`shmDir`, e.g. `/dev/shm/granary-<name>`), in the self-verifying format of
 * page-file.ts, and a nonce file there that proves to a client that it sees the same
 * directory as the worker (the same host, the same mount namespace).
 *
 * Layout of `shmDir` (the page store's own layout, plus one file):
 * ```
 * NONCE                 32 hex digits, new at every start
 * LOCK                  the page store's lock
 * pages/<2 hex>/<32 hex>.page
 * tmp/                  pages being written (renamed into pages/)
 * ```
 * The directory is 0700 and the files 0600, so only the worker's user can read them,
 * unless `shmGroup` names a group: then 02750 (new files inherit the group) and 0640.
 */
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, open, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, InvalidArgumentError } from '../errors.js';

/** The file holding the per-start nonce, in the tier's directory. */
export const NONCE_FILE = 'NONCE';

/** What a worker advertises in `/v1/info` when it has a short-circuit tier. */
export interface ShortCircuitInfo {
  /** The tmpfs directory of its page files. */
  dir: string;
  /** The contents of `<dir>/NONCE`: a client that reads the same string shares the directory. */
  nonce: string;
  /** The page size of the page files. */
  pageSize: number;
}

export interface ShmModes {
  dirMode: number;
  fileMode: number;
}

/** Parse a group option: a gid, or a name looked up in /etc/group. */
export async function resolveGroup(group: number | string, groupFile = '/etc/group'): Promise<number> {
  if (typeof group === 'number') {
    if (!Number.isSafeInteger(group) || group < 0) throw new InvalidArgumentError(`Expected \`shmGroup\` to be a gid from 0 and up or a group name, got \`${group}\``);
    return group;
  }
  if (typeof group !== 'string' || group.length === 0) {
    throw new InvalidArgumentError(`Expected \`shmGroup\` to be a gid or a group name, got \`${String(group)}\` (${typeof group})`);
  }
  if (/^\d+$/.test(group)) return Number(group);
  const text = await readFile(groupFile, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new ConfigError(`shmGroup ${group}: no such group in ${groupFile}`);
}

/**
 * Create (or take over) the tier's directory with the right owner and modes. Refuses a
 * path that is not a directory of this user: the worker must never loosen or use
 * another user's directory.
 */
export async function prepareShmDir(dir: string, group: number | string | undefined): Promise<ShmModes> {
  if (typeof dir !== 'string' || dir.length === 0) {
    throw new InvalidArgumentError(`Expected \`shmDir\` to be a non-empty path, got \`${String(dir)}\` (${typeof dir})`);
  }
  const gid = group === undefined ? undefined : await resolveGroup(group);
  const modes: ShmModes = gid === undefined ? { dirMode: 0o700, fileMode: 0o600 } : { dirMode: 0o750, fileMode: 0o640 };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await stat(dir);
  if (!st.isDirectory()) throw new ConfigError(`shmDir ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw new ConfigError(`shmDir ${dir} belongs to uid ${st.uid}, not to this worker's user (${uid})`);
  try {
    if (gid !== undefined) await chown(dir, uid ?? st.uid, gid);
    // setgid on the directory: what the page store creates inside takes its group.
    await chmod(dir, gid === undefined ? 0o700 : 0o2750);
  } catch (err) {
    throw new ConfigError(`shmDir ${dir}: cannot set its owner or mode: ${(err as Error).message}`, { cause: err });
  }
  return modes;
}

/** Write a fresh nonce into `<dir>/NONCE` (temp file + rename) and return it. */
export async function writeNonce(dir: string, fileMode: number): Promise<string> {
  const nonce = randomBytes(16).toString('hex');
  const tmp = join(dir, `${NONCE_FILE}.${process.pid}.tmp`);
  const handle = await open(tmp, 'w', fileMode);
  try {
    await handle.writeFile(nonce);
  } finally {
    await handle.close();
  }
  await rename(tmp, join(dir, NONCE_FILE));
  return nonce;
}

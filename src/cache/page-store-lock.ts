/**
 * The lock of a page store directory: `dir/LOCK` holds a random instance id, and its
 * holder refreshes the file's mtime every heartbeat. Another store takes the lock over
 * only once it is stale (not refreshed for `STALE_HEARTBEATS` heartbeats), so two
 * processes with the same pid (two containers each running as pid 1 on one hostPath)
 * never both own it, and a crashed holder's lock is taken over without a person.
 */
import { randomUUID } from 'node:crypto';
import { channel } from 'node:diagnostics_channel';
import { link, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';

/** A lock not refreshed for this many of its holder's heartbeats is taken over. */
export const STALE_HEARTBEATS = 4;
export const DEFAULT_LOCK_HEARTBEAT_MS = 5000;

/** Published when a held lock turns out to be someone else's: `{ dir, holder }`. */
const lostChannel = channel('granary:cache:lock-lost');

interface LockContent {
  id: string;
  pid: number;
  host: string;
  heartbeatMs: number;
}

function errnoOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function parseContent(text: string): Partial<LockContent> {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null ? (v) : {};
  } catch {
    // An older granary wrote just its pid; it never refreshes the file, so it goes stale.
    return {};
  }
}

/** What is in a lock file now, and how old its last heartbeat is; undefined when there is none. */
async function inspect(path: string): Promise<{ content: Partial<LockContent>; ageMs: number } | undefined> {
  try {
    const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { content: parseContent(text), ageMs: Date.now() - st.mtimeMs };
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return undefined;
    throw error;
  }
}

export class DirLock {
  readonly dir: string;
  readonly id = randomUUID();
  readonly #path: string;
  readonly #heartbeatMs: number;
  #timer: NodeJS.Timeout | undefined;
  #lost = false;
  #released = false;

  private constructor(dir: string, heartbeatMs: number) {
    this.dir = dir;
    this.#path = join(dir, 'LOCK');
    this.#heartbeatMs = heartbeatMs;
  }

  /** Take `dir/LOCK`, or fail with `GRANARY_ERR_CONFIG` naming its live holder. */
  static async acquire(dir: string, heartbeatMs = DEFAULT_LOCK_HEARTBEAT_MS): Promise<DirLock> {
    const lock = new DirLock(dir, heartbeatMs);
    await lock.#take();
    lock.#timer = setInterval(() => void lock.#beat(), heartbeatMs);
    lock.#timer.unref();
    return lock;
  }

  /** Whether another store took the lock over (this one missed its heartbeats). */
  get lost(): boolean {
    return this.#lost;
  }

  async #take(): Promise<void> {
    const mine: LockContent = { id: this.id, pid: process.pid, host: hostname(), heartbeatMs: this.#heartbeatMs };
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await writeFile(this.#path, JSON.stringify(mine), { flag: 'wx' });
        return;
      } catch (error) {
        if (errnoOf(error) !== 'EEXIST') throw error;
      }
      const held = await inspect(this.#path);
      if (held === undefined) continue;
      const theirBeat = typeof held.content.heartbeatMs === 'number' && held.content.heartbeatMs > 0 ? held.content.heartbeatMs : this.#heartbeatMs;
      const staleMs = STALE_HEARTBEATS * theirBeat;
      if (held.ageMs <= staleMs) {
        const who = held.content.id === undefined ? 'another store' : `store ${held.content.id} (pid ${String(held.content.pid)} on ${String(held.content.host)})`;
        throw new ConfigError(
          `Page store directory ${this.dir} is in use by ${who}: its lock was refreshed ${Math.round(held.ageMs)} ms ago; ` +
            `it is taken over once not refreshed for ${staleMs} ms`,
        );
      }
      await this.#takeOver(held.content.id);
    }
    throw new ConfigError(`Could not take the lock ${this.#path} of page store directory ${this.dir}: other stores keep taking it`);
  }

  /**
   * Move a stale lock aside, then let the caller create a fresh one with `wx`. Two
   * stores taking over at once both rename; the one that moved a lock that is not the
   * stale one it saw puts it back, so only one of them ever creates the new lock.
   */
  async #takeOver(staleId: string | undefined): Promise<void> {
    const aside = `${this.#path}.${this.id}.stale`;
    try {
      await rename(this.#path, aside);
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') return;
      throw error;
    }
    const moved = await inspect(aside);
    const staleMs = STALE_HEARTBEATS * this.#heartbeatMs;
    if (moved !== undefined && (moved.content.id !== staleId || moved.ageMs <= staleMs)) {
      // Someone else's fresh lock: put it back unless a newer one is already there.
      await link(aside, this.#path).catch(() => undefined);
    }
    await unlink(aside).catch(() => undefined);
  }

  async #beat(): Promise<void> {
    if (this.#released || this.#lost) return;
    try {
      const held = await inspect(this.#path);
      if (held?.content.id !== this.id) {
        this.#lost = true;
        clearInterval(this.#timer);
        lostChannel.publish({ dir: this.dir, holder: held?.content.id });
        return;
      }
      const now = new Date();
      await utimes(this.#path, now, now);
    } catch {
      // A failed heartbeat is retried at the next one; the lock goes stale only after several.
    }
  }

  /** Stop the heartbeat and remove the lock file if it is still ours. Idempotent. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#timer);
    const held = await inspect(this.#path).catch(() => undefined);
    if (held?.content.id === this.id) await rm(this.#path, { force: true });
  }
}

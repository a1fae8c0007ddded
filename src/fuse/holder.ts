/**
 * The holder: a small process that owns the mount. It opens /dev/fuse, mounts with the
 * fd, and runs the serving process with the fd inherited, replacing it when it dies or
 * stops sending heartbeats. Because the holder keeps the fd open, the kernel connection
 * outlives any one serving process; the next one asks the kernel to re-send the
 * requests its predecessor had taken (FUSE_NOTIFY_RESEND).
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, openSync, statSync } from 'node:fs';
import { errorFromCode, isGranaryErrorCode, UnavailableError, UnsupportedOperationError } from '../errors.js';
import { FUSE_FD_ENV, inheritedFuseFd, isRoot, userMountTools } from './fusermount.js';
import { mountFd, prepareMountPoint, raiseReadahead, unmount } from './mount-table.js';
import { SERVE_ENV, type ServeMessage } from './serve.js';

export interface HolderOptions {
  prefix: string;
  dir: string;
  /** How to start a serving process: the command and arguments (the fd goes on its fd 3). */
  serve: { command: string; args: readonly string[]; env: NodeJS.ProcessEnv };
  /** Where the serving processes write their log lines: an fd, or 'ignore'. */
  serveLog: number | 'ignore';
  log: (line: string) => void;
  /** A serving process silent this long is killed and replaced. @default 5000 */
  heartbeatTimeoutMs?: number;
  /** read_ahead_kb set on the mount's bdi. @default 1024 */
  readaheadKb?: number;
  /** Bytes per READ request (the max_read mount option). @default 1 MiB */
  maxRead?: number;
  /** Called once the mount answers. */
  onReady: () => void;
}

/** Mount, serve until unmounted or signalled, and resolve with the exit status. */
export async function runHolder(o: HolderOptions): Promise<number> {
  // An ordinary user's holder is started with the mount made (fusermount3) and its fd inherited.
  let fd = inheritedFuseFd();
  if (fd === undefined) {
    // Without root the kernel refuses mount(2) with the fd: say what is missing, or how to start.
    if (!isRoot()) {
      userMountTools();
      throw new UnsupportedOperationError(`an ordinary user's holder is started by fusermount3 with the mount made (${FUSE_FD_ENV} set); granary mount does that`);
    }
    const cleaned = await prepareMountPoint(o.dir);
    if (cleaned) o.log(cleaned);
    fd = openSync('/dev/fuse', 'r+');
    try {
      await mountFd(fd, o.dir, o.prefix, o.maxRead ?? 1024 * 1024);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }
  const holder = new Holder(o, fd);
  try {
    await holder.start();
  } catch (err) {
    await unmount(o.dir).catch(() => undefined);
    await holder.stopServer();
    closeSync(fd);
    throw err;
  }
  o.log(raiseReadahead(o.dir, o.readaheadKb ?? 1024));
  o.onReady();
  const status = await holder.done;
  closeSync(fd);
  return status;
}

/** How long a new serving process may take to list the prefix and start serving. */
const STARTUP_TIMEOUT_MS = 60_000;

class Holder {
  readonly #o: HolderOptions;
  readonly #fd: number;
  #child: ChildProcess | undefined;
  #lastBeat = 0;
  /** Whether the current serving process has listed the prefix and serves (heartbeats apply from then). */
  #serving = false;
  #stopping = false;
  #restarts = 0;
  #timer: NodeJS.Timeout | undefined;
  #resolveDone!: (status: number) => void;
  readonly done = new Promise<number>((resolve) => (this.#resolveDone = resolve));
  readonly #onSignal = (sig: NodeJS.Signals): void => void this.#shutdown(sig);

  constructor(o: HolderOptions, fd: number) {
    this.#o = o;
    this.#fd = fd;
  }

  /** Start the first serving process; resolves once the mount answers. */
  async start(): Promise<void> {
    process.on('SIGTERM', this.#onSignal);
    process.on('SIGINT', this.#onSignal);
    await this.#spawn(false);
    // The first access makes the kernel send INIT; it is answered by now.
    statSync(this.#o.dir);
    const timeout = this.#o.heartbeatTimeoutMs ?? 5000;
    this.#timer = setInterval(() => this.#checkBeat(timeout), Math.min(1000, timeout / 4));
  }

  #checkBeat(timeoutMs: number): void {
    const child = this.#child;
    if (!child || this.#stopping) return;
    const silent = Date.now() - this.#lastBeat;
    // Starting (runtime, listing the prefix, finding workers) takes longer than a heartbeat.
    const limit = this.#serving ? timeoutMs : Math.max(STARTUP_TIMEOUT_MS, timeoutMs);
    if (silent < limit) return;
    this.#o.log(`serving process ${String(child.pid)} sent no heartbeat for ${silent} ms (${this.#serving ? 'hung or stopped' : 'never started serving'}): killing it, a new one takes over`);
    this.#lastBeat = Date.now();
    child.kill('SIGKILL');
  }

  /** Start a serving process; resolves when it serves, rejects when it fails before that. */
  #spawn(restart: boolean): Promise<void> {
    const { serve } = this.#o;
    const stdio: StdioOptions = ['ignore', this.#o.serveLog, this.#o.serveLog, this.#fd, 'ipc'];
    const child = spawn(serve.command, [...serve.args], {
      stdio,
      env: { ...serve.env, [SERVE_ENV.role]: 'serve', [SERVE_ENV.restart]: restart ? '1' : '0', UV_THREADPOOL_SIZE: serve.env.UV_THREADPOOL_SIZE ?? '24' },
    });
    this.#child = child;
    this.#serving = false;
    this.#lastBeat = Date.now();
    const started = Date.now();
    return new Promise<void>((resolve, reject) => {
      let serving = false;
      let failure: Error | undefined;
      child.on('message', (m: ServeMessage) => {
        this.#lastBeat = Date.now();
        if (m.type === 'serving' && !serving) {
          serving = true;
          if (this.#child === child) this.#serving = true;
          this.#o.log(`serving process ${String(child.pid)} ${restart ? 'took over (resend requested)' : 'started'}`);
          resolve();
        } else if (m.type === 'error') {
          failure = isGranaryErrorCode(m.code) ? errorFromCode(m.code, m.message) : new UnavailableError(m.message);
        }
      });
      child.on('error', (err) => (failure ??= err));
      child.on('exit', (code, signal) => {
        if (this.#child === child) this.#child = undefined;
        if (!serving) {
          if (!restart) return reject(failure ?? new UnavailableError(`serving process exited (${signal ?? String(code)}) before serving`));
          resolve();
        }
        this.#onExit(code, signal, Date.now() - started);
      });
    });
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null, livedMs: number): void {
    if (this.#stopping) return this.#finish(0);
    if (code === 0 && signal === null) {
      // The serving process ends on its own only when the kernel connection is gone.
      this.#o.log('the mount is gone (unmounted): exiting');
      return this.#finish(0);
    }
    this.#restarts = livedMs < 2000 ? this.#restarts + 1 : 0;
    const delay = Math.min(5000, this.#restarts === 0 ? 0 : 100 * 2 ** Math.min(this.#restarts, 6));
    this.#o.log(`serving process exited (${signal ?? `code ${String(code)}`}): starting another${delay > 0 ? ` in ${delay} ms` : ''}`);
    setTimeout(() => {
      if (!this.#stopping) this.#spawn(true).catch((err: unknown) => this.#o.log(`restart failed: ${String(err)}`));
    }, delay);
  }

  async #shutdown(sig: NodeJS.Signals): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#o.log(`${sig}: unmounting ${this.#o.dir}`);
    try {
      const how = await unmount(this.#o.dir);
      if (how === 'detached lazily') {
        this.#o.log(`${this.#o.dir} is busy: detached lazily; it goes away when its last open file is closed, and the serving process ${String(this.#child?.pid)} serves those files until then`);
        this.#child?.unref();
        this.#child?.disconnect();
        return this.#finish(0);
      }
      this.#o.log(`${this.#o.dir} unmounted`);
    } catch (err) {
      this.#o.log(String(err));
    }
    await this.stopServer();
    this.#finish(0);
  }

  /** Stop the serving process (it exits by itself once the mount is gone). */
  async stopServer(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.kill('SIGTERM');
    await exited;
    clearTimeout(timer);
  }

  #finish(status: number): void {
    clearInterval(this.#timer);
    process.off('SIGTERM', this.#onSignal);
    process.off('SIGINT', this.#onSignal);
    this.#resolveDone(status);
  }
}

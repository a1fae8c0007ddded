/**
 * Benches run their servers and load generators as child processes, so no two
 * of them share an event loop: the measurement is of the thing, not of a
 * neighbour's CPU on the same thread.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface ChildHandle<T> {
  child: ChildProcess;
  pid: number;
  /** The JSON the child printed after `READY `. */
  ready: T;
  /** Lines printed after the ready line that start with `RESULT `, parsed, in order. */
  results: unknown[];
  /** Resolves with the next RESULT. */
  nextResult(): Promise<unknown>;
  /** SIGTERM (then SIGKILL after `graceMs`) by PID; resolves once the child has exited. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Run `script` (this same tsx-run bench, usually) with `args`, and wait for it to
 * print `READY <json>` on stdout. The child gets an IPC channel so it can exit when
 * the parent dies without stopping it.
 */
export async function spawnChild<T>(script: string, args: readonly string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ChildHandle<T>> {
  const child = spawn(process.execPath, [...process.execArgv, script, ...args], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: options.env ?? process.env,
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${script} ${args.join(' ')}`);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const results: unknown[] = [];
  const waiters: ((v: unknown) => void)[] = [];
  let readyResolve: ((v: T) => void) | undefined;
  let readyReject: ((e: Error) => void) | undefined;
  const readyP = new Promise<T>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  const rl = createInterface({ input: child.stdout! });
  rl.on('line', (line) => {
    if (line.startsWith('READY ')) readyResolve?.(JSON.parse(line.slice(6)) as T);
    else if (line.startsWith('RESULT ')) {
      const v = JSON.parse(line.slice(7)) as unknown;
      const w = waiters.shift();
      if (w) w(v);
      else results.push(v);
    } else process.stdout.write(`${line}\n`);
  });
  child.once('exit', (code, sig) => readyReject?.(new Error(`${script} ${args.join(' ')} exited (${String(code ?? sig)}) before it was ready`)));
  const timer = setTimeout(() => readyReject?.(new Error(`${script} ${args.join(' ')} not ready within ${options.timeoutMs ?? 60_000} ms`)), options.timeoutMs ?? 60_000);
  let ready: T;
  try {
    ready = await readyP;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
  let stopping: Promise<void> | undefined;
  return {
    child,
    pid,
    ready,
    results,
    nextResult() {
      const r = results.shift();
      if (r !== undefined) return Promise.resolve(r);
      return new Promise((resolve, reject) => {
        waiters.push(resolve);
        child.once('exit', (code) => reject(new Error(`${script} exited (${String(code)}) before its result`)));
      });
    },
    stop(graceMs = 3000) {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
          await exited;
          clearTimeout(t);
        }
      })();
      return stopping;
    },
  };
}

/** In a child: announce readiness with a JSON payload. */
export function announceReady(value: unknown): void {
  process.stdout.write(`READY ${JSON.stringify(value)}\n`);
}

/** In a child: report one result. */
export function announceResult(value: unknown): void {
  process.stdout.write(`RESULT ${JSON.stringify(value)}\n`);
}

/** In a child: exit when the parent says so (SIGTERM) or goes away (IPC disconnect). */
export function exitWithParent(cleanup: () => Promise<void> | void = () => undefined): void {
  const stop = (): void => {
    void Promise.resolve()
      .then(cleanup)
      .finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('disconnect', stop);
}

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { WorkerOptions } from '../../src/cache/worker.js';

export interface WorkerProcess {
  url: string;
  id: string;
  pid: number;
  child: ChildProcess;
  /** SIGKILL: the worker vanishes without revoking its lease. */
  kill(): Promise<void>;
  /** SIGTERM: a graceful close that revokes the lease. */
  stop(): Promise<void>;
}

const fixture = new URL('../fixtures/worker-child.ts', import.meta.url).pathname;

/** Start a cache worker as a child process (node + tsx) and wait for its URL. */
export async function spawnWorker(options: WorkerOptions): Promise<WorkerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, JSON.stringify(options)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error('worker child did not start within 30 s')), 30_000);
    rl.once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    // 'close' comes after stdout is drained, so a line written just before exiting is read first.
    child.once('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`worker child exited with ${String(code)} before it was ready`));
    });
  });
  const ready = JSON.parse(line) as { url: string; id: string } | { error: { code: string; message: string } };
  if ('error' in ready) {
    await exited;
    throw Object.assign(new Error(`worker child failed to start: ${ready.error.code}: ${ready.error.message}`), { code: ready.error.code });
  }
  const { url, id } = ready;
  const pid = child.pid!;
  const end = async (sig: NodeJS.Signals): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    await exited;
  };
  return { url, id, pid, child, kill: () => end('SIGKILL'), stop: () => end('SIGTERM') };
}

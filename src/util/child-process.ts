import type { ChildProcess } from 'node:child_process';

/** SIGTERM by PID, then SIGKILL if it lingers; resolves once the process is gone. */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Wait until the child prints a line matching `pattern` on stdout, and return the first
 * capture group. Rejects with `fail(what, stderr)` when it exits first ('exited with code
 * N before listening') or after `timeoutMs` ('did not listen within N ms').
 */
export function waitForOutput(
  child: ChildProcess,
  pattern: RegExp,
  timeoutMs: number,
  fail: (what: string, stderr: string) => Error,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => finish(fail(`did not listen within ${timeoutMs} ms`, err)), timeoutMs);
    const onOut = (d: Buffer): void => {
      out += d.toString();
      const m = pattern.exec(out);
      if (m?.[1] !== undefined) finish(undefined, m[1]);
    };
    const onErr = (d: Buffer): void => {
      err += d.toString();
    };
    const onExit = (code: number | null): void => finish(fail(`exited with code ${String(code)} before listening`, err));
    const finish = (e: Error | undefined, v?: string): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onOut);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
      if (e) reject(e);
      else resolve(v as string);
    };
    child.stdout?.on('data', onOut);
    child.stderr?.on('data', onErr);
    child.once('exit', onExit);
  });
}

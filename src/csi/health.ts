/**
 * Health checks of a mounted path, always in a child process with a timeout: a FUSE
 * path whose server hangs blocks whoever stats it, and the plugin's own thread pool
 * must never be that. `stat -f` sends STATFS, which the kernel never answers from its
 * caches, so a dead connection shows as ENOTCONN at once.
 */
import { spawn } from 'node:child_process';

export interface Usage {
  bytesTotal: number;
  bytesFree: number;
  bytesAvailable: number;
  inodesTotal: number;
  inodesFree: number;
}

export type Health =
  | { state: 'healthy'; usage: Usage }
  /** The path does not exist. */
  | { state: 'absent'; message: string }
  /** ENOTCONN or ECONNABORTED: a FUSE mount whose server is gone. */
  | { state: 'dead'; message: string }
  /** No answer within the timeout: a hung (or stopped) server. */
  | { state: 'hung'; message: string }
  | { state: 'error'; message: string };

const FORMAT = '%S %b %f %a %c %d';

/** statfs of `path` in a child process, killed after `timeoutMs`. */
export function checkHealth(path: string, timeoutMs: number): Promise<Health> {
  return new Promise((resolve) => {
    const child = spawn('stat', ['-f', '-c', FORMAT, '--', path], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } });
    let out = '';
    let err = '';
    let settled = false;
    const settle = (h: Health): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(h);
    };
    const timer = setTimeout(() => {
      // A stat stuck on a FUSE request is killable; nobody waits for it to go.
      child.kill('SIGKILL');
      child.unref();
      settle({ state: 'hung', message: `statfs of ${path} did not answer within ${timeoutMs} ms (the mount's server is hung or stopped)` });
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e) => settle({ state: 'error', message: `cannot run stat(1) to check ${path}: ${e.message}` }));
    child.on('close', (code) => {
      if (code === 0) {
        const n = out.trim().split(/\s+/).map(Number);
        const [bsize = 0, blocks = 0, bfree = 0, bavail = 0, files = 0, ffree = 0] = n;
        return settle({ state: 'healthy', usage: { bytesTotal: bsize * blocks, bytesFree: bsize * bfree, bytesAvailable: bsize * bavail, inodesTotal: files, inodesFree: ffree } });
      }
      const msg = err.trim();
      // ENOTCONN once the server's fd is closed; ECONNABORTED for a connection the kernel aborted.
      const dead = /Transport endpoint is not connected|Software caused connection abort/i.exec(msg);
      if (dead) return settle({ state: 'dead', message: `${path} answers ${dead[0].startsWith('T') ? 'ENOTCONN' : 'ECONNABORTED'}: its FUSE server is gone` });
      if (/No such file or directory/i.test(msg)) return settle({ state: 'absent', message: `${path} does not exist` });
      settle({ state: 'error', message: `statfs of ${path} failed: ${msg || `exit ${String(code)}`}` });
    });
  });
}

/**
 * Mounting as an ordinary user. The kernel lets only root mount with a /dev/fuse fd; an
 * ordinary user asks the setuid `fusermount3`, which mounts and hands the fd back over
 * the unix socket named by `_FUSE_COMMFD` (SCM_RIGHTS). Node cannot receive a file
 * descriptor over a socket without a native addon, so a few lines of python3 (standard
 * library only) receive it and exec the holder with the fd inherited: the holder then
 * owns the connection exactly as it does when root mounts, and restarts of the serving
 * process work the same way.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { UnavailableError, UnsupportedOperationError } from '../errors.js';

/** Set on the holder when the mount is already made and its fd inherited (the fd number). */
export const FUSE_FD_ENV = 'GRANARY_FUSE_FD';

/**
 * Runs fusermount3 with one end of a socketpair as `_FUSE_COMMFD`, receives the fd it
 * sends, and execs the rest of the command line with the fd inherited and its number in
 * GRANARY_FUSE_FD. recvmsg (Python 3.3+) rather than socket.recv_fds (3.9+), for older
 * systems.
 */
const HELPER = `
import array, os, socket, subprocess, sys
fusermount, opts, mnt = sys.argv[1:4]
cmd = sys.argv[4:]
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
env = dict(os.environ, _FUSE_COMMFD=str(b.fileno()))
p = subprocess.Popen([fusermount, '-o', opts, '--', mnt], env=env, pass_fds=[b.fileno()], stdin=subprocess.DEVNULL)
b.close()
fds = array.array('i')
try:
    msg, anc, flags, addr = a.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
except OSError:
    pass
code = p.wait()
a.close()
if code != 0 or len(fds) == 0:
    sys.stderr.write('granary mount: GRANARY_ERR_UNAVAILABLE: %s -o %s %s failed (exit %d)%s\\n' % (fusermount, opts, mnt, code, '' if code else ': no fd came back'))
    sys.exit(1)
os.set_inheritable(fds[0], True)
os.environ['${FUSE_FD_ENV}'] = str(fds[0])
os.execv(cmd[0], cmd)
`;

/** The absolute path of an executable on PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Whether /etc/fuse.conf lets ordinary users pass allow_other. */
function userAllowOther(): boolean {
  try {
    return /^\s*user_allow_other\s*$/m.test(readFileSync('/etc/fuse.conf', 'utf8'));
  } catch {
    return false;
  }
}

/** The fusermount3 and python3 an ordinary user's mount needs; a coded error saying which is missing. */
export function userMountTools(): { fusermount: string; python: string } {
  const fusermount = which('fusermount3');
  const python = which('python3');
  if (fusermount && python) return { fusermount, python };
  const missing = [fusermount ? undefined : 'fusermount3 (Debian/Ubuntu: apt-get install fuse3)', python ? undefined : 'python3 (it receives the fd fusermount3 sends over a unix socket, which Node cannot)']
    .filter((s) => s !== undefined)
    .join(' and ');
  throw new UnsupportedOperationError(
    `granary mount as an ordinary user needs ${missing}. Root (or CAP_SYS_ADMIN, as in a privileged container) mounts with its own /dev/fuse fd and needs neither`,
  );
}

/**
 * The command line that mounts `dir` with fusermount3 and then runs `command` (the
 * holder) with the fd inherited.
 */
export function viaFusermount(dir: string, source: string, maxRead: number, command: readonly string[]): string[] {
  const { fusermount, python } = userMountTools();
  // fusermount3 splits options at commas; the source is only the mount's displayed name.
  const options = ['ro', 'default_permissions', 'subtype=granary', `fsname=${source.replaceAll(',', '_')}`, `max_read=${maxRead}`, ...(userAllowOther() ? ['allow_other'] : [])];
  return [python, '-c', HELPER, fusermount, options.join(','), dir, ...command];
}

/** The fd an ordinary user's holder inherited from the helper, if it was started that way. */
export function inheritedFuseFd(): number | undefined {
  const v = process.env[FUSE_FD_ENV];
  if (v === undefined || v === '') return undefined;
  const fd = Number(v);
  if (!Number.isInteger(fd) || fd < 0) throw new UnavailableError(`${FUSE_FD_ENV}=${v} is not a file descriptor`);
  delete process.env[FUSE_FD_ENV];
  return fd;
}

/**
 * Run the holder through fusermount3 in the foreground: signals to this process go to
 * it, and its exit status becomes this process's.
 */
export function runForegroundViaFusermount(argv: readonly string[]): Promise<number> {
  const [cmd, ...args] = argv;
  const child = spawn(cmd as string, args, { stdio: 'inherit' });
  const forward = (sig: NodeJS.Signals): void => void child.kill(sig);
  process.on('SIGTERM', forward);
  process.on('SIGINT', forward);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      process.off('SIGTERM', forward);
      process.off('SIGINT', forward);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

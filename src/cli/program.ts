import { createRequire } from 'node:module';
import { Command, CommanderError } from 'commander';
import { ErrorCodes } from '../errors.js';
import { registerCat } from './cat.js';
import { registerCsi } from './csi.js';
import { registerDemo } from './demo.js';
import { EXIT_USAGE, exitCodeFor, formatError } from './errors.js';
import { registerGen } from './gen.js';
import { registerLoad } from './load.js';
import { registerMount, registerUmount } from './mount.js';
import { registerStat } from './stat.js';
import { registerWorker } from './worker.js';
import { registerWorkers } from './workers.js';

function packageVersion(): string {
  // src/cli and dist/cli both sit two levels below package.json.
  const pkg = createRequire(import.meta.url)('../../package.json') as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

/**
 * The `granary` command. Each subcommand lives in its own file and registers itself
 * with `registerX(program)`; settings made here (error output, exit override) are
 * inherited by subcommands created with `program.command(...)`.
 */
export function createProgram(): Command {
  const program = new Command('granary')
    .description('A distributed cache and data loader in front of object storage (s3://, file://, http(s)://).')
    .version(packageVersion(), '-V, --version')
    .exitOverride()
    .configureOutput({
      // Commander's own usage errors ("error: unknown option '--x'") get the same coded shape as ours.
      outputError: (str, write) => write(`granary: ${ErrorCodes.CONFIG}: ${str.replace(/^error: /, '')}`),
    })
    .showHelpAfterError('(add --help for usage)');
  registerGen(program);
  registerDemo(program);
  registerWorker(program);
  registerWorkers(program);
  registerLoad(program);
  registerCat(program);
  registerStat(program);
  registerMount(program);
  registerUmount(program);
  registerCsi(program);
  return program;
}

/**
 * Run the CLI on `args` (without the node and script paths) and resolve with the exit
 * status: 0 success, 2 a usage error, 1 a failure while running. Errors go to stderr
 * as `granary <command>: GRANARY_ERR_<CODE>: message`.
 */
export async function runCli(args: readonly string[]): Promise<number> {
  const program = createProgram();
  let commandName = 'granary';
  program.hook('preAction', (_root, action) => {
    commandName = `granary ${action.name()}`;
  });
  try {
    await program.parseAsync([...args], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Already printed through outputError (or it was --help / --version).
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    process.stderr.write(formatError(err, commandName));
    return exitCodeFor(err);
  }
}

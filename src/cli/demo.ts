import { setMaxListeners } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { flagsFromCommand, loadConfig } from '../config/load.js';
import { SECTIONS, envName, type SectionSpec } from '../config/keys.js';
import { renderChart } from '../demo/chart.js';
import { runDemo } from '../demo/engine.js';
import { progressReporter } from '../demo/progress.js';
import { formatReport, profileText } from '../demo/report.js';
import { PROFILE_NAMES, PROFILES } from '../netem/fault-proxy.js';

const DEMO = SECTIONS.demo as SectionSpec;

/** One line per network profile, from the profiles themselves. */
function profileHelp(): string {
  return PROFILE_NAMES.map((n) => `  ${n.padEnd(14)} ${profileText(PROFILES[n])}`).join('\n');
}

function showDefault(key: string): string {
  const d = DEMO[key]?.default;
  if (d === undefined) return '';
  if (key === 'size') return ' (default: 500MB)';
  if (key === 'embeddingBytes') return ' (default: 1k)';
  if (key === 'decodeThreads') return '';
  return ` (default: ${JSON.stringify(d)})`;
}

/** A flag for a demo config key: a plain string, validated by loadConfig with the env and file values. */
function opt(flags: string, key: string, extra = ''): Option {
  const spec = DEMO[key];
  return new Option(flags, `${spec?.doc ?? key}${extra}${showDefault(key)} [env ${envName('demo', key)}]`);
}

/**
 * `granary demo`: an emulated cloud store, two cache workers and a training loop,
 * all on this machine (the store needs the npm package s3rver). Prints a table and
 * writes a chart.
 */
export function registerDemo(program: Command): void {
  const cmd = program
    .command('demo')
    .description(
      'Generate a Parquet dataset into an embedded S3 server behind an emulated network (a training node\'s share of a cloud store), ' +
        'start two cache workers, read one epoch straight from the store and three shuffled epochs through the cache with a simulated ' +
        'training step; print a table (rows/s, cache hits, store traffic, data stall, utilization) and write a chart.',
    )
    .addOption(opt('--size <size>', 'size', '; units are powers of 1024 (64MiB, 1GB)'))
    .addOption(opt('--files <n>', 'files'))
    .addOption(opt('--embedding-bytes <size>', 'embeddingBytes'))
    .addOption(opt('--row-group-rows <n>', 'rowGroupRows'))
    .addOption(opt('--epochs <n>', 'epochs'))
    .addOption(new Option('--no-direct', `skip the epoch read straight from the store [env ${envName('demo', 'direct')}=false]`))
    .addOption(opt('--batch-size <n>', 'batchSize'))
    .addOption(opt('--step-ms <ms>', 'stepMs', '; launched asynchronously like a GPU step, after the host reads the batch'))
    .addOption(opt('--seed <n>', 'seed'))
    .addOption(opt('--workers <n>', 'workers'))
    .addOption(opt('--worker-memory <size>', 'workerMemory'))
    .addOption(opt('--profile <name>', 'profile', `: ${PROFILE_NAMES.join(', ')}`))
    .addOption(opt('--etcd <urls>', 'etcd', ', comma-separated'))
    .addOption(opt('--cluster <name>', 'cluster'))
    .addOption(opt('--prefetch <n>', 'prefetch'))
    .addOption(opt('--fetch-concurrency <n>', 'fetchConcurrency'))
    .addOption(opt('--decode-threads <n>', 'decodeThreads', ' (default: cores - 1, at least 1)'))
    .addOption(opt('--out <dir>', 'out'))
    .addOption(opt('--store-dir <dir>', 'storeDir'))
    .addOption(opt('--keep', 'keep'))
    .addOption(new Option('--config <file>', 'JSON config file; its "demo" section sets any of these [env GRANARY_CONFIG]'))
    .addOption(new Option('--json', 'print the results as JSON on stdout instead of the table'));
  cmd.addHelpText(
    'after',
    `
Precedence: flags > GRANARY_DEMO_* environment > config file > defaults (docs/configuration.md).
The store is s3rver (npm) in a child process, behind the fault proxy. In a clone of the
repository "npm install" has installed it; next to an installed granary, run "npm install s3rver".
The two cache workers run in worker threads of this process, the Parquet decode in a thread pool.
With --etcd the workers register in etcd and the loader finds them there.

Network profiles (--profile), the store as the loader sees it:
${profileHelp()}
trainingNode, the default, is a cloud store as one training job on a shared node sees it: a
total cap on all of the job's connections together (its share of the node's link to the
store), so parallel connections cannot add up to more than the link has. emulatedCloud has
no total cap: many parallel reads add up, and a job rarely waits on the store.
With trainingNode the default step (a 1 MB batch of 1024 rows every 10 ms) wants data faster
than the store gives it, so the direct epoch and the cold one wait on the store, and the warm
ones run as fast as the step. The report prints the rates it measured.
The simulated step runs like a GPU's: launched asynchronously, one step queued at most; the
device idles only while the loader has no batch ready (utilization = busy time / wall time).

Examples:
  granary demo                                   # about 500 MB, three epochs, about a minute
  granary demo --size 64MiB --epochs 2 --step-ms 5
  granary demo --profile emulatedCloud           # a store with no total cap: the direct read keeps up
  granary demo --etcd http://127.0.0.1:2379 --json > demo.json`,
  );
  cmd.action(async (options: { config?: string; json?: boolean }, command: Command) => {
    const flags = flagsFromCommand(command, Object.keys(DEMO));
    const { values: c, warnings } = await loadConfig('demo', { flags, configFile: options.config });
    for (const w of warnings) process.stderr.write(`granary demo: warning: ${w}\n`);

    // The loader reads through one abort signal per stream; many reads in flight each listen to it.
    setMaxListeners(256);
    // The AWS SDK's notice that it will need Node 22 from 2027 is not news for a first run of the demo.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const ac = new AbortController();
    const onSignal = (): void => ac.abort(new Error('interrupted (SIGINT)'));
    process.once('SIGINT', onSignal);
    const ownStoreDir = c.storeDir === undefined;
    const storeDir = c.storeDir !== undefined ? resolve(c.storeDir) : await mkdtemp(join(tmpdir(), 'granary-demo-store-'));
    const progress = progressReporter();
    try {
      const result = await runDemo({
        sizeBytes: c.size,
        files: c.files,
        embeddingBytes: c.embeddingBytes,
        rowGroupRows: c.rowGroupRows,
        epochs: c.epochs,
        direct: c.direct,
        batchSize: c.batchSize,
        stepMs: c.stepMs,
        seed: c.seed,
        workers: c.workers,
        workerMemoryBytes: c.workerMemory,
        profile: c.profile,
        etcd: c.etcd,
        cluster: c.cluster,
        prefetch: c.prefetch,
        fetchConcurrency: c.fetchConcurrency,
        decodeThreads: c.decodeThreads,
        storeDir,
        signal: ac.signal,
        onEvent: progress.onEvent,
      });
      progress.stop();
      const out = resolve(c.out);
      await mkdir(out, { recursive: true });
      const chart = join(out, 'demo.svg');
      const json = join(out, 'demo.json');
      await writeFile(chart, renderChart(result));
      await writeFile(json, `${JSON.stringify(result, null, 2)}\n`);
      const shown = (p: string) => {
        const rel = relative(process.cwd(), p);
        return rel.startsWith('..') ? p : rel;
      };
      if (options.json) process.stdout.write(`${JSON.stringify({ ...result, chart, json }, null, 2)}\n`);
      else process.stdout.write(formatReport(result, { chart: shown(chart), json: shown(json) }));
      if (c.keep) process.stderr.write(`granary demo: store files kept in ${storeDir}\n`);
    } finally {
      progress.stop();
      process.off('SIGINT', onSignal);
      // Only a directory this run created is removed, never one the user named.
      if (ownStoreDir && !c.keep) await rm(storeDir, { recursive: true, force: true });
    }
  });
}

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SECTIONS, envName, flagName, flagsFromCommand, loadConfig, readConfigFile } from '../../src/config/index.js';
import { bool, bytes, duration, int, list, oneOf, urlList } from '../../src/config/values.js';
import { ConfigError, ErrorCodes, type GranaryError } from '../../src/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'granary-config-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, data: unknown): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, typeof data === 'string' ? data : JSON.stringify(data));
  return p;
}

async function configError(p: Promise<unknown>): Promise<GranaryError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as GranaryError).code).toBe(ErrorCodes.CONFIG);
  return err as GranaryError;
}

describe('loadConfig', () => {
  it('uses the defaults when nothing is set', async () => {
    const { values, sources, file: f } = await loadConfig('demo', { env: {} });
    expect(values.epochs).toBe(3);
    expect(values.size).toBe(500_000_000);
    expect(values.direct).toBe(true);
    expect(values.etcd).toBeUndefined();
    expect(sources.epochs).toBe('default');
    expect(f).toBeUndefined();
  });

  it('takes flags over environment over file over defaults, key by key', async () => {
    const path = await file('precedence.json', { demo: { epochs: 7, files: 5, seed: 9, size: '1MiB' } });
    const { values, sources } = await loadConfig('demo', {
      flags: { epochs: '2' },
      env: { GRANARY_DEMO_EPOCHS: '4', GRANARY_DEMO_FILES: '6' },
      configFile: path,
    });
    expect([values.epochs, sources.epochs]).toEqual([2, 'flag']);
    expect([values.files, sources.files]).toEqual([6, 'env']);
    expect([values.seed, sources.seed]).toEqual([9, 'file']);
    expect([values.size, sources.size]).toEqual([1024 * 1024, 'file']);
    expect([values.batchSize, sources.batchSize]).toEqual([1024, 'default']);
  });

  it('finds the config file through GRANARY_CONFIG, relative to cwd, and --config wins over it', async () => {
    await file('a.json', { worker: { port: 8080 } });
    await file('b.json', { worker: { port: 9090 } });
    const fromEnv = await loadConfig('worker', { env: { GRANARY_CONFIG: 'a.json' }, cwd: dir });
    expect(fromEnv.values.port).toBe(8080);
    expect(fromEnv.file).toBe(join(dir, 'a.json'));
    const fromFlag = await loadConfig('worker', { env: { GRANARY_CONFIG: 'a.json' }, configFile: 'b.json', cwd: dir });
    expect(fromFlag.values.port).toBe(9090);
  });

  it('uses the shared environment names of the cluster and store sections', async () => {
    const { values } = await loadConfig('cluster', { env: { GRANARY_ETCD: 'http://127.0.0.1:2379,http://127.0.0.1:2380', GRANARY_TOKEN: 's3cret' } });
    expect(values.etcd).toEqual(['http://127.0.0.1:2379', 'http://127.0.0.1:2380']);
    expect(values.cluster).toBe('default');
    expect(values.token).toBe('s3cret');
    const store = await loadConfig('store', { env: { GRANARY_S3_ENDPOINT: 'http://127.0.0.1:9000', GRANARY_S3_PATH_STYLE: 'true' } });
    expect(store.values.s3Endpoint).toBe('http://127.0.0.1:9000');
    expect(store.values.s3PathStyle).toBe(true);
  });

  it('reads the worker security settings fileRoot and insecure from each source, off by default', async () => {
    const none = await loadConfig('worker', { env: {} });
    expect([none.values.fileRoot, none.sources.fileRoot]).toEqual([undefined, 'default']);
    expect([none.values.insecure, none.sources.insecure]).toEqual([false, 'default']);

    const fromEnv = await loadConfig('worker', { env: { GRANARY_WORKER_FILE_ROOT: '/data/train', GRANARY_WORKER_INSECURE: 'yes' } });
    expect([fromEnv.values.fileRoot, fromEnv.sources.fileRoot]).toEqual(['/data/train', 'env']);
    expect([fromEnv.values.insecure, fromEnv.sources.insecure]).toEqual([true, 'env']);
    expect(fromEnv.warnings).toEqual([]);

    const path = await file('worker-security.json', { worker: { fileRoot: '/data/file', insecure: true } });
    const fromFile = await loadConfig('worker', { env: {}, configFile: path });
    expect([fromFile.values.fileRoot, fromFile.values.insecure]).toEqual(['/data/file', true]);
    const flagWins = await loadConfig('worker', { flags: { fileRoot: '/data/flag', insecure: false }, env: { GRANARY_WORKER_FILE_ROOT: '/data/train' }, configFile: path });
    expect([flagWins.values.fileRoot, flagWins.sources.fileRoot]).toEqual(['/data/flag', 'flag']);
    expect([flagWins.values.insecure, flagWins.sources.insecure]).toEqual([false, 'flag']);

    expect(envName('worker', 'fileRoot')).toBe('GRANARY_WORKER_FILE_ROOT');
    expect(flagName('worker', 'fileRoot')).toBe('--file-root');
    expect(envName('worker', 'insecure')).toBe('GRANARY_WORKER_INSECURE');
    expect(flagName('worker', 'insecure')).toBe('--insecure');
    const err = await configError(loadConfig('worker', { env: { GRANARY_WORKER_INSECURE: 'sometimes' } }));
    expect(err.message).toBe('Invalid worker.insecure from GRANARY_WORKER_INSECURE (environment): expected true or false, got "sometimes"');
  });

  it('names the key, the flag and the value of a bad flag', async () => {
    const err = await configError(loadConfig('demo', { flags: { epochs: '0' }, env: {} }));
    expect(err.message).toBe('Invalid demo.epochs from --epochs (command line): expected an integer from 1 to 100, got "0"');
  });

  it('names the key, the variable and the value of a bad environment value', async () => {
    const err = await configError(loadConfig('worker', { env: { GRANARY_WORKER_MEMORY: 'lots' } }));
    expect(err.message).toContain('Invalid worker.memory from GRANARY_WORKER_MEMORY (environment)');
    expect(err.message).toContain('got "lots"');
  });

  it('names the key, the file and the value of a bad file value', async () => {
    const path = await file('bad-value.json', { worker: { policy: 'fifo' } });
    const err = await configError(loadConfig('worker', { env: {}, configFile: path }));
    expect(err.message).toBe(`Invalid worker.policy from config file ${path}: expected one of lru, s3fifo, got "fifo"`);
  });

  it('refuses unknown sections and keys in the file, listing the known ones', async () => {
    const section = await file('unknown-section.json', { demos: {} });
    expect((await configError(loadConfig('demo', { env: {}, configFile: section }))).message).toContain('Unknown section "demos"');
    const key = await file('unknown-key.json', { demo: { epoch: 3 } });
    const err = await configError(loadConfig('demo', { env: {}, configFile: key }));
    expect(err.message).toContain(`Unknown key demo.epoch in config file ${key}`);
    expect(err.message).toContain('epochs');
  });

  it('refuses a missing file, invalid JSON and a non-object', async () => {
    const missing = join(dir, 'nope.json');
    expect((await configError(loadConfig('demo', { env: {}, configFile: missing }))).message).toContain(`Cannot read config file ${missing}: no such file`);
    const broken = await file('broken.json', '{ "demo": ');
    expect((await configError(readConfigFile(broken))).message).toContain(`Config file ${broken} is not valid JSON`);
    const arr = await file('array.json', [1]);
    expect((await configError(readConfigFile(arr))).message).toContain('must hold a JSON object of sections');
  });

  it('warns about GRANARY_<SECTION>_* variables that name no key', async () => {
    const { warnings } = await loadConfig('demo', { env: { GRANARY_DEMO_EPOHCS: '3', GRANARY_OTHER: 'x' } });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('GRANARY_DEMO_EPOHCS');
  });

  it('takes only the flags typed on a commander command line, not its defaults', async () => {
    const cmd = new Command('x').exitOverride().option('--epochs <n>').option('--files <n>', 'files', '16');
    cmd.action(() => undefined);
    await cmd.parseAsync(['--epochs', '5'], { from: 'user' });
    expect(flagsFromCommand(cmd)).toEqual({ epochs: '5' });
    const { values, sources } = await loadConfig('demo', { flags: flagsFromCommand(cmd), env: { GRANARY_DEMO_FILES: '3' } });
    expect(values.epochs).toBe(5);
    expect([values.files, sources.files]).toEqual([3, 'env']);
  });

  it('gives every key a distinct environment variable and a flag', () => {
    const seen = new Set<string>();
    for (const [section, keys] of Object.entries(SECTIONS)) {
      for (const key of Object.keys(keys)) {
        const env = envName(section as keyof typeof SECTIONS, key);
        expect(env).toMatch(/^GRANARY_[A-Z0-9_]+$/);
        expect(seen.has(env)).toBe(false);
        seen.add(env);
        expect(flagName(section as keyof typeof SECTIONS, key)).toMatch(/^--[a-z0-9-]+$/);
      }
    }
    expect(envName('demo', 'fetchConcurrency')).toBe('GRANARY_DEMO_FETCH_CONCURRENCY');
    expect(flagName('demo', 'fetchConcurrency')).toBe('--fetch-concurrency');
  });
});

describe('value kinds', () => {
  it('parse strings from the environment and JSON values from files alike', () => {
    expect(int(0).parse('1_000')).toBe(1000);
    expect(int(0).parse(12)).toBe(12);
    expect(int(0).safeParse('1.5').success).toBe(false);
    expect(bytes(1).parse('64k')).toBe(65536);
    expect(bytes(1).parse('8MiB')).toBe(8 * 1024 * 1024);
    expect(bytes(1).parse('2GB')).toBe(2 * 1024 ** 3);
    expect(bytes(1).parse(4096)).toBe(4096);
    expect(bytes(1).safeParse('1.5MB').success).toBe(false);
    expect(duration(0).parse('10s')).toBe(10_000);
    expect(duration(0).parse('0')).toBe(0);
    expect(duration(0).safeParse('10').success).toBe(false);
    expect(bool().parse('yes')).toBe(true);
    expect(bool().parse(false)).toBe(false);
    expect(bool().safeParse('maybe').success).toBe(false);
    expect(list().parse('a, b,,c')).toEqual(['a', 'b', 'c']);
    expect(list().parse(['x'])).toEqual(['x']);
    expect(urlList().safeParse('ftp://x').success).toBe(false);
    expect(oneOf(['a', 'b']).safeParse('c').success).toBe(false);
  });
});

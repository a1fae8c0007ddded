import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { ConfigError } from '../errors.js';
import { CONFIG_ENV, SECTIONS, envName, flagName, type ConfigValues, type SectionName, type SectionSpec } from './keys.js';

/** Where a key's value came from, highest precedence first. */
export type ConfigSource = 'flag' | 'env' | 'file' | 'default';

export interface LoadConfigOptions {
  /**
   * Values given on the command line, by key (camelCase, as commander names them).
   * Only pass what the user typed: `flagsFromCommand(command)` does that for commander.
   * Values may be raw strings or already parsed; both are validated.
   */
  flags?: Record<string, unknown> | undefined;
  /** @default process.env */
  env?: NodeJS.ProcessEnv | undefined;
  /** Path of a JSON config file (`--config`); absent: `GRANARY_CONFIG`, else no file. */
  configFile?: string | undefined;
  /** Resolves a relative config path. @default process.cwd() */
  cwd?: string | undefined;
}

export interface LoadedConfig<N extends SectionName> {
  values: ConfigValues<N>;
  /** Where each key's value came from. */
  sources: Record<keyof ConfigValues<N>, ConfigSource>;
  /** The config file read, if any. */
  file: string | undefined;
  /** Environment variables that look meant for this section but name no key (typos). */
  warnings: string[];
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * Read and check a config file: JSON, an object of sections (`demo`, `worker`,
 * `cluster`, `store`), each an object of keys. Unknown sections or keys are errors,
 * so a typo never passes silently.
 */
export async function readConfigFile(path: string): Promise<Record<string, Record<string, unknown>>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    throw new ConfigError(`Cannot read config file ${path}: ${code === 'ENOENT' ? 'no such file' : String(err)}`, { cause: err });
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`Config file ${path} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new ConfigError(`Config file ${path} must hold a JSON object of sections (${Object.keys(SECTIONS).join(', ')}), got ${show(data)}`);
  }
  const out: Record<string, Record<string, unknown>> = {};
  for (const [name, body] of Object.entries(data as Record<string, unknown>)) {
    if (name === '$schema') continue;
    if (!Object.hasOwn(SECTIONS, name)) {
      throw new ConfigError(`Unknown section "${name}" in config file ${path} (known: ${Object.keys(SECTIONS).join(', ')})`);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new ConfigError(`Section "${name}" in config file ${path} must be a JSON object, got ${show(body)}`);
    }
    const keys = SECTIONS[name as SectionName] as SectionSpec;
    for (const key of Object.keys(body)) {
      if (!Object.hasOwn(keys, key)) {
        throw new ConfigError(`Unknown key ${name}.${key} in config file ${path} (known ${name} keys: ${Object.keys(keys).join(', ')})`);
      }
    }
    out[name] = body as Record<string, unknown>;
  }
  return out;
}

/**
 * Resolve one section of the configuration. For every key the first source that
 * sets it wins: **flags > environment (`GRANARY_*`) > config file > default**.
 * Every value, whatever its source, goes through the key's schema; a bad one is a
 * `ConfigError` (`GRANARY_ERR_CONFIG`) naming the key, the source and the value.
 *
 * @example
 * const { values } = await loadConfig('demo', { flags: flagsFromCommand(command), configFile: opts.config });
 * values.epochs; // number: from --epochs, GRANARY_DEMO_EPOCHS, demo.epochs in the file, or 3
 */
export async function loadConfig<N extends SectionName>(sectionName: N, options: LoadConfigOptions = {}): Promise<LoadedConfig<N>> {
  const env = options.env ?? process.env;
  const spec = SECTIONS[sectionName] as SectionSpec;
  const flags = options.flags ?? {};
  for (const k of Object.keys(flags)) {
    if (!Object.hasOwn(spec, k)) throw new ConfigError(`Unknown ${sectionName} key "${k}" passed as a flag (known: ${Object.keys(spec).join(', ')})`);
  }
  const envPath = env[CONFIG_ENV];
  const given = options.configFile ?? (envPath !== undefined && envPath !== '' ? envPath : undefined);
  const file = given === undefined ? undefined : resolve(options.cwd ?? process.cwd(), given);
  const fileSection = file === undefined ? undefined : (await readConfigFile(file))[sectionName];

  const values: Record<string, unknown> = {};
  const sources: Record<string, ConfigSource> = {};
  for (const [key, k] of Object.entries(spec)) {
    const ev = envName(sectionName, key);
    let raw: unknown;
    let source: ConfigSource;
    let where: string;
    if (flags[key] !== undefined) {
      raw = flags[key];
      source = 'flag';
      where = `${flagName(sectionName, key)} (command line)`;
    } else if (env[ev] !== undefined && env[ev] !== '') {
      raw = env[ev];
      source = 'env';
      where = `${ev} (environment)`;
    } else if (fileSection && fileSection[key] !== undefined) {
      raw = fileSection[key];
      source = 'file';
      where = `config file ${file ?? ''}`;
    } else {
      if (k.default !== undefined) values[key] = k.default;
      sources[key] = 'default';
      continue;
    }
    const parsed = k.schema.safeParse(raw);
    if (!parsed.success) {
      const why = parsed.error.issues.map((i) => i.message).join('; ');
      throw new ConfigError(`Invalid ${sectionName}.${key} from ${where}: ${why}, got ${show(raw)}`);
    }
    values[key] = parsed.data;
    sources[key] = source;
  }

  const prefix = `GRANARY_${sectionName.toUpperCase()}_`;
  const known = new Set(Object.keys(spec).map((key) => envName(sectionName, key)));
  const warnings = Object.keys(env)
    .filter((name) => name.startsWith(prefix) && !known.has(name))
    .map((name) => `${name} is set but is not a ${sectionName} setting (known: ${[...known].filter((n) => n.startsWith(prefix)).join(', ')})`);

  return { values: values as ConfigValues<N>, sources: sources as Record<keyof ConfigValues<N>, ConfigSource>, file, warnings };
}

/**
 * The options the user typed on a commander command line (source `cli`), by key:
 * what `loadConfig` wants as `flags`. Defaults commander shows in `--help` are left
 * out, so they never override the environment or the file.
 */
export function flagsFromCommand(command: Command, keys?: readonly string[]): Record<string, unknown> {
  const opts = command.opts<Record<string, unknown>>();
  const out: Record<string, unknown> = {};
  for (const key of keys ?? Object.keys(opts)) {
    if (command.getOptionValueSource(key) === 'cli' && opts[key] !== undefined) out[key] = opts[key];
  }
  return out;
}

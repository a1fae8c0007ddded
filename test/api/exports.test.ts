import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import * as granary from '../../src/index.js';
import * as testing from '../../src/testing.js';
import { S3RVER_RANGE } from '../../src/demo/embedded-s3.js';

/*
 * The two entry points, name by name. A name added to or dropped from either list is a
 * change of the public API: make it here on purpose, and in the docs.
 */

const GRANARY_VALUES = [
  'AccessDeniedError',
  'AlreadyExistsError',
  'BadRequestError',
  'CacheClient',
  'ClosedError',
  'ConfigError',
  'CorruptDataError',
  'Dataset',
  'DecodeError',
  'DecodePool',
  'ErrorCodes',
  'ForbiddenPrefixError',
  'GranaryError',
  'HttpUfs',
  'InternalError',
  'InvalidArgumentError',
  'InvalidUrlError',
  'LocalUfs',
  'MissingDependencyError',
  'NoSuchBucketError',
  'NotFoundError',
  'PathEscapeError',
  'RangeNotSatisfiableError',
  'RangeTooLargeError',
  'S3Ufs',
  'SchemaMismatchError',
  'TimeoutError',
  'UfsRouter',
  'UnauthorizedError',
  'UnavailableError',
  'UnknownColumnError',
  'UnsupportedOperationError',
  'UnsupportedSchemeError',
  'VersionChangedError',
  'WorkerBusyError',
  'createUfs',
  'errorFromCode',
  'isGranaryError',
  'isRetryableError',
  'permutation',
  'planEpoch',
  'startWorker',
  'ufsFromSpec',
  'ufsSpecOf',
];

const GRANARY_TYPES = [
  'BatchRows',
  'BatchStream',
  'BatchesOptions',
  'BreakerOptions',
  'CacheClientOptions',
  'CacheClientStats',
  'CacheWorker',
  'DatasetOptions',
  'DatasetReadStats',
  'DecodeCallOptions',
  'DecodePoolOptions',
  'EpochPlanInput',
  'EtcdAuthOptions',
  'EtcdSecurityOptions',
  'EtcdTlsOptions',
  'EvictionPolicyName',
  'FileInfo',
  'FilesDatasetOptions',
  'GranaryErrorCode',
  'GranaryErrorOptions',
  'HintAccess',
  'HintRequest',
  'HttpStats',
  'HttpUfsOptions',
  'LoadJob',
  'LoaderHintOptions',
  'LoaderState',
  'LocalUfsOptions',
  'OpOptions',
  'PartitionInfo',
  'ReadStatsOptions',
  'RankPlan',
  'ReadOptions',
  'RequestCounts',
  'S3Credentials',
  'S3UfsOptions',
  'ShuffleMode',
  'StoreAdapter',
  'StreamStats',
  'UfsOptions',
  'UfsSpec',
  'UnderFileSystem',
  'WorkerHintOptions',
  'WorkerHintStats',
  'WorkerInfo',
  'WorkerInfoResponse',
  'WorkerLimitOptions',
  'WorkerOptions',
  'WorkerTlsOptions',
  'WriteData',
];

const TESTING_VALUES = [
  'MemoryUfs',
  'PROFILES',
  'PROFILE_NAMES',
  'flagsFromCommand',
  'generateArrowDataset',
  'generateFileDataset',
  'generateParquetDataset',
  'loadConfig',
  'startEmbeddedS3',
  'startFaultProxy',
  'verifyDataset',
];

const TESTING_TYPES = [
  'ArrowGenOptions',
  'CommonGenOptions',
  'ConfigSource',
  'CutMode',
  'DatasetFormat',
  'DatasetSummary',
  'EmbeddedS3',
  'EmbeddedS3Options',
  'FaultDirection',
  'FaultProfile',
  'FaultProxy',
  'FaultProxyOptions',
  'FaultProxyStats',
  'FileGenOptions',
  'GeneratedFile',
  'LoadConfigOptions',
  'LoadedConfig',
  'ParquetCodec',
  'ParquetGenOptions',
  'ProfileName',
  'RefuseMode',
  'SectionName',
  'SectionValues',
  'TableGenOptions',
  'VerifyOptions',
  'VerifyResult',
];

/** The names an entry file exports, read from its source: values and type-only names apart. */
function exportsOf(file: string): { values: string[]; types: string[]; star: string[] } {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const values: string[] = [];
  const types: string[] = [];
  const star: string[] = [];
  for (const st of sf.statements) {
    const exported = ts.canHaveModifiers(st) && ts.getModifiers(st)?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
    if (ts.isExportDeclaration(st)) {
      if (st.exportClause === undefined || ts.isNamespaceExport(st.exportClause)) {
        star.push(st.getText(sf));
        continue;
      }
      for (const el of st.exportClause.elements) (st.isTypeOnly || el.isTypeOnly ? types : values).push(el.name.text);
    } else if (exported) {
      // An entry point re-exports by name; a declaration of its own is a mistake too.
      star.push(st.getText(sf).split('\n')[0] ?? '');
    } else if (ts.isExportAssignment(st)) {
      star.push(st.getText(sf));
    }
  }
  return { values: values.sort(), types: types.sort(), star };
}

const sorted = (xs: readonly string[]): string[] => [...xs].sort();

interface PackageJson {
  exports: Record<string, Record<string, string>>;
  types: string;
  bin: Record<string, string>;
  files: string[];
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}
const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as PackageJson;

/** The source file that `npm run build` (tsc: rootDir src, outDir dist) compiles to `target`. */
function sourceOf(target: string): string {
  expect(target).toMatch(/^\.\/dist\/.+\.(?:js|d\.ts)$/);
  return target.replace(/^\.\/dist\//, 'src/').replace(/\.(?:js|d\.ts)$/, '.ts');
}

describe("the 'granary' entry point", () => {
  it('exports exactly the listed names, each by name (no export *)', () => {
    const e = exportsOf('src/index.ts');
    expect(e.star).toEqual([]);
    expect(e.values).toEqual(sorted(GRANARY_VALUES));
    expect(e.types).toEqual(sorted(GRANARY_TYPES));
    expect(Object.keys(granary).sort()).toEqual(sorted(GRANARY_VALUES));
  });

  it("holds the contract's names: createUfs, CacheClient, startWorker, Dataset and the types they take and give", () => {
    expect(typeof granary.createUfs).toBe('function');
    expect(typeof granary.startWorker).toBe('function');
    expect(granary.CacheClient.prototype).toHaveProperty('read');
    expect(typeof granary.Dataset.parquet).toBe('function');
    expect(typeof granary.Dataset.arrow).toBe('function');
    expect(typeof granary.Dataset.files).toBe('function');
    const types = exportsOf('src/index.ts').types;
    for (const name of ['UnderFileSystem', 'FileInfo', 'ReadOptions', 'UfsOptions', 'WorkerOptions', 'CacheWorker', 'CacheClientOptions', 'CacheClientStats', 'DatasetOptions', 'BatchesOptions', 'BatchStream', 'LoaderState']) {
      expect(types).toContain(name);
    }
  });

  it('exports a class for every error code, and the helpers that read codes', () => {
    const values: unknown[] = Object.values(granary);
    const classes = values.filter((v): v is new (message: string) => granary.GranaryError =>
      typeof v === 'function' && (v as { prototype?: unknown }).prototype instanceof granary.GranaryError,
    );
    const codes = classes.map((C) => new C('m').code).sort();
    expect(codes).toEqual(Object.values(granary.ErrorCodes).sort());
    for (const code of Object.values(granary.ErrorCodes)) {
      expect(granary.isGranaryError(granary.errorFromCode(code, 'm'))).toBe(true);
      expect(granary.errorFromCode(code, 'm').code).toBe(code);
    }
  });

  it('leaves test and demo tooling and internal helpers out', () => {
    const names = [...exportsOf('src/index.ts').values, ...exportsOf('src/index.ts').types];
    for (const name of [...TESTING_VALUES, ...TESTING_TYPES, 'HashRing', 'ringKey', 'PageStore', 'registerWorker', 'EtcdMembership', 'StaticMembership']) {
      expect(names).not.toContain(name);
    }
  });
});

describe("the 'granary/testing' entry point", () => {
  it('exports exactly the listed names, each by name (no export *)', () => {
    const e = exportsOf('src/testing.ts');
    expect(e.star).toEqual([]);
    expect(e.values).toEqual(sorted(TESTING_VALUES));
    expect(e.types).toEqual(sorted(TESTING_TYPES));
    expect(Object.keys(testing).sort()).toEqual(sorted(TESTING_VALUES));
  });

  it("shares no name with 'granary'", () => {
    const main = new Set([...GRANARY_VALUES, ...GRANARY_TYPES]);
    expect([...TESTING_VALUES, ...TESTING_TYPES].filter((n) => main.has(n))).toEqual([]);
  });
});

describe('package.json', () => {
  it('maps both entry points, types first, to what the build emits from src/index.ts and src/testing.ts', () => {
    expect(Object.keys(pkg.exports)).toEqual(['.', './testing']);
    const src: Record<string, string> = { '.': 'src/index.ts', './testing': 'src/testing.ts' };
    for (const [entry, conditions] of Object.entries(pkg.exports)) {
      expect(Object.keys(conditions)).toEqual(['types', 'default']);
      expect(sourceOf(conditions.types ?? '')).toBe(src[entry]);
      expect(sourceOf(conditions.default ?? '')).toBe(src[entry]);
    }
    expect(pkg.types).toBe(pkg.exports['.']?.types);
    const build = JSON.parse(readFileSync('tsconfig.build.json', 'utf8')) as { compilerOptions: { rootDir: string; outDir: string }; include: string[] };
    expect(build.compilerOptions).toMatchObject({ rootDir: 'src', outDir: 'dist' });
    expect(build.include).toEqual(['src']);
  });

  it('ships dist/ with the granary command, whose source starts with a shebang', () => {
    expect(pkg.files).toContain('dist');
    const main = sourceOf(pkg.bin.granary ?? '');
    expect(main).toBe('src/cli/main.ts');
    expect(readFileSync(main, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('does not install an S3 server with the library: s3rver is a dev and optional peer dependency', () => {
    expect(pkg.dependencies).not.toHaveProperty('s3rver');
    expect(pkg.devDependencies.s3rver).toBe(S3RVER_RANGE);
    expect(pkg.peerDependencies?.s3rver).toBe(S3RVER_RANGE);
    expect(pkg.peerDependenciesMeta?.s3rver?.optional).toBe(true);
    const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as { packages: Record<string, { dependencies?: Record<string, string>; devDependencies?: Record<string, string>; dev?: boolean }> };
    expect(lock.packages['']?.dependencies).not.toHaveProperty('s3rver');
    expect(lock.packages['']?.devDependencies?.s3rver).toBe(S3RVER_RANGE);
    expect(lock.packages['node_modules/s3rver']?.dev).toBe(true);
  });

  // `npm ci` builds dist/ (the `prepare` script); a dist/ older than its sources is not this code.
  const built = ['src/index.ts', 'src/testing.ts'].every((f) => {
    const out = f.replace(/^src\//, 'dist/').replace(/\.ts$/, '.js');
    return existsSync(out) && statSync(out).mtimeMs >= statSync(f).mtimeMs;
  });
  // Outside CI a stale dist/ only means nobody rebuilt; CI (GRANARY_REQUIRE_SERVICES=1) must test the build.
  const mustTestBuild = process.env.GRANARY_REQUIRE_SERVICES === '1';
  it.skipIf(!built && !mustTestBuild)("resolves 'granary' and 'granary/testing' from the built package to the same names", async () => {
    expect(built, 'dist/ is missing or older than src/: run `npm run build`').toBe(true);
    const script = "const a = await import('granary'); const b = await import('granary/testing'); console.log(JSON.stringify([Object.keys(a), Object.keys(b)]));";
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    const [main, tools] = JSON.parse(out) as [string[], string[]];
    expect(main.sort()).toEqual(sorted(GRANARY_VALUES));
    expect(tools.sort()).toEqual(sorted(TESTING_VALUES));
  });
});

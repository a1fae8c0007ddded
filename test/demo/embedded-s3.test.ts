import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, MissingDependencyError, isRetryableError } from '../../src/errors.js';
import { resolveS3rver, startEmbeddedS3 } from '../../src/demo/embedded-s3.js';
import { PROFILES } from '../../src/netem/fault-proxy.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'granary-embedded-s3-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('startEmbeddedS3 without s3rver', () => {
  it('rejects with GRANARY_ERR_MISSING_DEPENDENCY saying what to install, before it starts anything', async () => {
    const storeDir = join(dir, 'store');
    const err: unknown = await startEmbeddedS3({ dir: storeDir, buckets: ['b'], profile: PROFILES.none, s3rverModule: 'granary-test-no-such-s3rver' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MissingDependencyError);
    const e = err as InstanceType<typeof MissingDependencyError>;
    expect(e.code).toBe(ErrorCodes.MISSING_DEPENDENCY);
    expect(e.message).toContain('granary-test-no-such-s3rver');
    expect(e.message).toContain('npm install s3rver@^3.7.1');
    expect(isRetryableError(e)).toBe(false);
    // Nothing was started, so nothing wrote the store directory.
    expect(await readdir(dir)).toEqual([]);
  });

  it('names the npm package when the default module is missing, and resolves an installed one to its file', () => {
    expect(resolveS3rver('s3rver')).toMatch(/s3rver/);
    expect(() => resolveS3rver(join(dir, 'missing', 's3rver'))).toThrow(MissingDependencyError);
  });
});

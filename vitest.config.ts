import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Integration suites start real servers; two cores cannot run many at once.
    maxWorkers: 2,
    teardownTimeout: 20_000,
    // The AWS SDK warns once per process that it will need Node 22 in 2027; it is noise in test logs.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});

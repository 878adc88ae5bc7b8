import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Temporal workers break under worker threads; files share one dev stack and its emulated hosts.
    pool: 'forks',
    fileParallelism: false,
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    include: ['test/**/*.test.ts'],
  },
});

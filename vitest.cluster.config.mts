import { defineConfig } from 'vitest/config';

// `npm run test:cluster`: the same Marina against a real Temporal cluster (Temporal server on PostgreSQL, built by
// scripts/cluster.sh) instead of the dev server. Its files end in .cluster.ts so `npm test` never picks them up.
export default defineConfig({
  test: {
    pool: 'forks',
    fileParallelism: false,
    globalSetup: ['test/cluster/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    include: ['test/cluster/**/*.cluster.ts'],
  },
});

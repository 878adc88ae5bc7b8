import { defineConfig } from 'vitest/config';

// The pure tests alone, without the local stack: `npx vitest run -c vitest.unit.config.mts`.
export default defineConfig({
  test: {
    include: ['test/pool-core.test.ts', 'test/host-watch.test.ts', 'test/mask.test.ts'],
  },
});

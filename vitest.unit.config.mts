import { defineConfig } from 'vitest/config';

// The pure tests alone, without the local stack: `npx vitest run -c vitest.unit.config.mts`.
// The simulator and the EC2 emulator conformance tests start nothing shared (the emulator test starts its own).
export default defineConfig({
  test: {
    testTimeout: 120_000,
    include: [
      'test/pool-core.test.ts',
      'test/host-watch.test.ts',
      'test/mask.test.ts',
      'test/github-plan.test.ts',
      'test/sim.test.ts',
      'test/sim-*.test.ts',
      'test/ec2-emulator.test.ts',
      'test/ec2mac-*.test.ts',
    ],
  },
});

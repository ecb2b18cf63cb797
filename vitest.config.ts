import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration tests start their own SoftHSM2 tokens and swtpm instances on free ports;
    // two forks keep both cores busy without oversubscribing the machine.
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});

import { defineConfig } from 'vitest/config';

// Tests start real servers on 127.0.0.1 and some push the whole CIFAR-10 test set through them,
// so they run in forked processes, at most two at a time (the machine has 2 cores).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});

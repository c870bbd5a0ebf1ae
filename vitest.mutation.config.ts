// The unit and route tests that exercise the code under mutation (stryker.config.json), run by StrykerJS:
// fast ones only, without the real-bundle and whole-test-set suites (they run in `npm test`).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: [
      'test/cost/**/*.test.ts',
      'test/engine/bit-plan.test.ts',
      'test/engine/dispatch.test.ts',
      'test/engine/engine-layout.test.ts',
      'test/preprocess/**/*.test.ts',
      'test/pipeline/target-controller.test.ts',
      'test/routes/oip.test.ts',
      'test/routes/budget.test.ts',
      'test/routes/classify.test.ts',
    ],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});

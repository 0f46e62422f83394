import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    // Services log at info in production; in tests only warnings and errors (LOG_LEVEL=info to see
    // everything), into test-results/logs/<file>.log (TEST_LOGS=stdout to see them inline).
    env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          setupFiles: ['test/support/log-setup.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          setupFiles: ['test/support/log-setup.ts'],
          // The real stack: started (or reused) by the same infra code as `npm run infra:up`.
          globalSetup: ['test/integration/global-setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          // Two cores: integration files share Kafka/Redis/MinIO/Temporal and run one at a time.
          fileParallelism: false,
        },
      },
    ],
  },
});

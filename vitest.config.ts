import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real processes (socat, simulators, servers); two cores in CI.
    pool: 'forks',
    // Integration tests run real processes (socat, simulators, brokers, Chromium) on real time on a
    // 2-core machine; a retry absorbs a scheduling hiccup of the machine. A real defect fails every
    // attempt, and vitest reports the retries it needed.
    retry: 2,
    maxWorkers: 2,
  },
});

import { defineConfig } from "vitest/config";

// Tests import the built packages (dist/), so `npm test` builds first (scripts/setup.mjs).
// Worker threads need compiled JavaScript, and testing what ships is the point.
export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "tests/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    maxWorkers: 2,
    reporters: ["default", "./scripts/vitest-summary.ts"],
    // Two test files run at once on CI's two cores: one engine thread each.
    env: { GM_LOG_LEVEL: "error", GM_NO_PROGRESS: "1", GM_THREADS: "1" },
  },
});

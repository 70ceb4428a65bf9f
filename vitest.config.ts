import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// One project per package with a test/ folder, plus the cross-package tests in test/.
// Tests import packages through the '@phalanx/source' export condition, so they run on src/ without a build.
const packagesDir = fileURLToPath(new URL('./packages/', import.meta.url)); // wherever vitest is started from
const packages = readdirSync(packagesDir).filter((p) => existsSync(`${packagesDir}${p}/test`));

export default defineConfig({
  resolve: { conditions: ['@phalanx/source', 'module', 'node', 'import', 'default'] },
  ssr: { resolve: { conditions: ['@phalanx/source', 'module', 'node', 'import', 'default'] } },
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    setupFiles: ['./test/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      ...packages.map((name) => ({ extends: true, test: { name, include: [`packages/${name}/test/**/*.test.ts`] } })),
      { extends: true, test: { name: 'integration', include: ['test/**/*.test.ts'] } },
    ],
  },
});

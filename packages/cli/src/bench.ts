/**
 * `phalanx bench [component...] [--backend cpu|webgpu|all] [--json FILE] [--quick] ...`: the benchmark runner of
 * the Phalanx repository (tools/bench/run.ts, see `phalanx bench --help`). It bundles every package's bench
 * cases from their TypeScript sources, so it runs inside a checkout: found from the current directory, or from
 * where this CLI lives.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

function findLauncher(start: string): string | undefined {
  for (let d = start; ; d = dirname(d)) {
    const launcher = join(d, 'tools', 'bench', 'launch.mjs');
    if (existsSync(launcher)) return launcher;
    if (dirname(d) === d) return undefined;
  }
}

/** Runs the runner with `args` (stdio inherited); its exit code. */
export async function bench(args: string[], info: (line: string) => void): Promise<number> {
  const launcher = findLauncher(process.cwd()) ?? findLauncher(dirname(fileURLToPath(import.meta.url)));
  if (!launcher) {
    info('phalanx: bench runs inside the Phalanx repository (it bundles tools/bench and the packages\' bench cases from source); tools/bench/launch.mjs was not found above the current directory');
    return 2;
  }
  const { launch } = (await import(pathToFileURL(launcher).href)) as { launch: (args: string[]) => Promise<number> };
  return launch(args);
}

// Bundles the benchmark runner (tools/bench/run.ts and every package's bench cases, from their TypeScript
// sources) with esbuild into tools/bench/dist/run.mjs, then runs it with the given arguments. Used by
// `npm run bench`, the packages' `bench` scripts and `phalanx bench`.
// usage: node tools/bench/launch.mjs [runner arguments]   (see `--help`)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

/** Builds the bundle; returns its path. */
export function build() {
  const esbuild = join(root, 'node_modules', '.bin', 'esbuild');
  if (!existsSync(esbuild)) throw new Error(`esbuild is missing (${esbuild}): run npm install in the repository`);
  const out = join(here, 'dist', 'run.mjs');
  const r = spawnSync(esbuild, [join(here, 'run.ts'), '--bundle', '--platform=node', '--format=esm', '--external:webgpu', '--conditions=@phalanx/source', `--outfile=${out}`, '--log-level=warning'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`bundling tools/bench/run.ts failed (esbuild exit ${r.status})`);
  return out;
}

/** Bundles, then runs the runner with `args` in a child process (stdio inherited); resolves to its exit code. */
export async function launch(args) {
  const bundle = build();
  // the repository's pinned Node (the `node` devDependency) when installed, else this one
  const pinned = join(root, 'node_modules', 'node', 'bin', 'node');
  const node = existsSync(pinned) ? pinned : process.execPath;
  return new Promise((done) => {
    const p = spawn(node, [bundle, ...args], { stdio: 'inherit', env: { XDG_RUNTIME_DIR: '/tmp', ...process.env, BENCH_ROOT: process.env.BENCH_ROOT ?? root } });
    p.on('close', (code, signal) => done(code ?? (signal ? 1 : 0)));
  });
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  launch(process.argv.slice(2)).then((code) => process.exit(code), (e) => {
    process.stderr.write(`bench: ${e.message}\n`);
    process.exit(2);
  });
}

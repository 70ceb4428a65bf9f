/**
 * @phalanx/cli: the `phalanx` command. For now it has one command, `demo`, which picks the best backend,
 * prints its adapter and runs a kernel on it, checked against the CPU.
 */
import { add, compareClose, cpu, getBackend, randn, sum } from '@phalanx/core';
import { WebGPUBackend } from '@phalanx/webgpu';

const USAGE = `usage: phalanx <command>

commands:
  demo [--backend auto|cpu|webgpu]   run a kernel on the best backend and print the adapter
`;

export async function main(argv: string[], log: (line: string) => void = console.log): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'demo') return demo(option(rest, '--backend') ?? 'auto', log);
  log(USAGE);
  return command === undefined || command === '--help' || command === '-h' ? 0 : 2;
}

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function demo(backendName: string, log: (line: string) => void): Promise<number> {
  const backend = await getBackend(backendName);
  if (backend instanceof WebGPUBackend) {
    const { vendor, architecture, description, isSoftware } = backend.info;
    log(`backend: webgpu (${[vendor, architecture, description].filter(Boolean).join(', ')}${isSoftware ? ', software' : ''})`);
    log(`features: ${backend.info.features.join(', ')}`);
    log(`maxStorageBufferBindingSize: ${backend.info.limits.maxStorageBufferBindingSize}`);
  } else {
    log(`backend: ${backend.name}`);
  }
  const shape = [256, 1024];
  const a = randn(shape, { seed: 1, backend });
  const b = randn(shape, { seed: 2, backend });
  const t0 = performance.now();
  const c = await add(a, b);
  const rows = await sum(c, { axis: 1 });
  const got = await rows.data();
  const ms = performance.now() - t0;
  const ref = await (await sum(await add(randn(shape, { seed: 1 }), randn(shape, { seed: 2 })), { axis: 1 })).data();
  const check = compareClose(ref, got, { rtol: 1e-5, name: 'row sums' });
  log(`add + sum over ${shape.join('x')} on ${backend.name}: ${ms.toFixed(1)} ms (first run, includes kernel compilation)`);
  log(`vs cpu: ${check.message} -> ${check.ok ? 'ok' : 'MISMATCH'}`);
  for (const t of [a, b, c, rows]) t.dispose();
  if (backend !== cpu) backend.dispose();
  return check.ok ? 0 : 1;
}

import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { main } from '../src/index.js';

const { gpu } = await testBackends();

async function run(argv: string[]) {
  const lines: string[] = [];
  const code = await main(argv, (l) => lines.push(l));
  return { code, out: lines.join('\n') };
}

describe('phalanx CLI', () => {
  it('demo on the CPU runs the kernel and checks it', async () => {
    const { code, out } = await run(['demo', '--backend', 'cpu']);
    expect(code).toBe(0);
    expect(out).toMatch(/^backend: cpu$/m);
    expect(out).toMatch(/vs cpu: row sums: relative RMSE .* -> ok/);
  });

  it.runIf(gpu)('demo on WebGPU prints the adapter', async () => {
    const { code, out } = await run(['demo', '--backend', 'webgpu']);
    expect(code).toBe(0);
    expect(out).toMatch(/^backend: webgpu \(.+\)$/m);
    expect(out).toMatch(/maxStorageBufferBindingSize: \d+/);
  });

  it('prints usage; an unknown command exits 2', async () => {
    expect((await run(['--help'])).code).toBe(0);
    const bad = await run(['frobnicate']);
    expect(bad.code).toBe(2);
    expect(bad.out).toMatch(/usage: phalanx/);
  });

  it('an unknown backend is a one-line typed error naming it, exit code 1', async () => {
    const { code, out } = await run(['demo', '--backend', 'tpu']);
    expect(code).toBe(1);
    expect(out).toMatch(/^phalanx: InputError: unknown backend 'tpu'/);
    expect(out).not.toMatch(/\n\s+at /); // no stack trace without --verbose
  });
});

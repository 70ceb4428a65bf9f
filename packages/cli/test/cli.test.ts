import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modelPath } from '@phalanx/tiny-models';
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

describe('phalanx on the embedded tiny model', () => {
  const tiny = modelPath('llama');

  /** Runs with separate streams, as a terminal sees them. */
  async function runIo(argv: string[], input: string[] = []) {
    const out: string[] = [];
    const info: string[] = [];
    const code = await main(argv, { log: (l) => out.push(`${l}\n`), write: (t) => out.push(t), info: (l) => info.push(l), readLine: async () => input.shift() ?? null });
    return { code, out: out.join(''), info: info.join('\n') };
  }

  it('generate streams a greedy continuation of the prompt and reports tokens/s', async () => {
    const { code, out, info } = await runIo(['generate', '--backend', 'cpu', '--max-new-tokens', '12', '--temperature', '0', 'The jury said']);
    expect(code).toBe(0);
    expect(out.startsWith('The jury said')).toBe(true);
    expect(out.length).toBeGreaterThan('The jury said'.length + 10);
    expect(info).toMatch(/loading \[#+\] 100%/);
    expect(info).toMatch(/model: llama from .* on cpu/);
    expect(info).toMatch(/decode \d+(\.\d+)? tok\/s/);
    // greedy is deterministic
    expect((await runIo(['generate', '--backend', 'cpu', '--max-new-tokens', '12', '--temperature', '0', 'The jury said'])).out).toBe(out);
  });

  it('chat answers through the chat template, /reset and end of input', async () => {
    const { code, out, info } = await runIo(['chat', '--backend', 'cpu', '--max-new-tokens', '6', '--seed', '3'], ['Hello there', '/reset', 'Who are you?']);
    expect(code).toBe(0);
    expect(out.split('\n').filter((l) => l.length > 0).length).toBeGreaterThanOrEqual(1);
    expect(info).toMatch(/\(conversation reset\)/);
  });

  it('inspect lists the config, tensors, parameters and bytes by dtype', async () => {
    const { code, out } = await runIo(['inspect', tiny]);
    expect(code).toBe(0);
    expect(out).toMatch(/^preset: llama$/m);
    expect(out).toMatch(/model\.embed_tokens\.weight +BF16 +\[4096, 256\]/);
    expect(out).toMatch(/^parameters: [\d,]+$/m);
    expect(out).toMatch(/^ {2}BF16: [\d,]+ bytes$/m);
  });

  it('eval reports bits per byte of a text', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'phalanx-cli-'));
    const file = join(dir, 'text.txt');
    await writeFile(file, 'The jury said it did find that many of the city\'s voters were not aware of the election. '.repeat(3));
    const { code, out } = await runIo(['eval', tiny, '--text', file, '--backend', 'cpu', '--window', '32', '--stride', '16']);
    expect(code).toBe(0);
    const bpb = Number(/bits per byte: ([\d.]+)/.exec(out)?.[1]);
    expect(bpb).toBeGreaterThan(0.1);
    expect(bpb).toBeLessThan(4);
    await rm(dir, { recursive: true, force: true });
  });

  it('quantize writes an artifact and reports its brotli size', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'phalanx-cli-'));
    const { code, out } = await runIo(['quantize', tiny, '--out', dir, '--policy', 'golf']);
    expect(code).toBe(0);
    expect(out).toMatch(/quantized \d+ tensors/);
    expect(out).toMatch(/"compressed":\d+/);
    expect((await readdir(dir)).sort()).toEqual(expect.arrayContaining(['config.json', 'model.quant.safetensors', 'tokenizer.json']));
    await rm(dir, { recursive: true, force: true });
  });

  it('bad usage exits 2 with one line; a missing checkpoint exits 1 naming it', async () => {
    const usage = await runIo(['generate', '--max-new-tokens', 'many', 'x']);
    expect(usage.code).toBe(2);
    expect(usage.info).toMatch(/--max-new-tokens must be an integer/);
    const missing = await runIo(['generate', '--model', '/nonexistent/ckpt', 'x']);
    expect(missing.code).toBe(1);
    expect(missing.info).toMatch(/^phalanx: CheckpointError: .*\/nonexistent\/ckpt/);
  });
});

/**
 * Golden parity: every preset against a PyTorch implementation it did not write. Each folder of
 * test/fixtures holds a tiny random checkpoint made by tools/reference/fixtures.py (llama by transformers'
 * LlamaForCausalLM itself, the other presets by the plain PyTorch modules of tools/reference/phalanx_ref)
 * and expected.json: the reference's logits for two rows of ids and its greedy continuation of a prompt.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assertClose } from '@phalanx/core';
import { loadModel } from '@phalanx/models';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';

interface Expected {
  input_ids: number[][];
  logits: number[][][];
  greedy: { prompt: number[]; new_tokens: number; output: number[] };
  reference: string;
}

const root = fileURLToPath(new URL('./fixtures/', import.meta.url));
const fixtures = readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
const { backends } = await testBackends();

describe('fixtures', () => {
  it('cover every preset in f32 and bf16', () => {
    for (const preset of ['llama', 'spartacus', 'nanohammer', 'parcae']) expect(fixtures.some((f) => f.startsWith(`${preset}-`))).toBe(true);
    expect(fixtures.some((f) => f.includes('bf16'))).toBe(true);
  });
});

describe.each(fixtures)('%s', (name) => {
  const dir = `${root}${name}`;
  const expected = JSON.parse(readFileSync(`${dir}/expected.json`, 'utf8')) as Expected;

  it.each(backends.map((b) => [b.name, b] as const))('logits and greedy continuation match the reference on %s', async (_, backend) => {
    const model = await loadModel(dir, { backend });
    try {
      const { logits } = await model.forward(expected.input_ids);
      expect(logits.shape).toEqual([expected.input_ids.length, expected.input_ids[0]!.length, model.config.vocabSize]);
      assertClose(expected.logits.flat(2), await logits.data(), { rtol: 1e-4, name: `${name} logits vs ${expected.reference}` });
      logits.dispose();

      const { prompt, new_tokens: n, output } = expected.greedy;
      const summary = await model.generate({ inputIds: prompt, maxNewTokens: n, temperature: 0, eosTokenIds: [] }).complete();
      expect(summary.tokenIds).toEqual(output);
    } finally {
      model.dispose();
    }
  });
});

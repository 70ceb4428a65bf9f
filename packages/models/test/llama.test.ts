import type { LlamaConfig } from '@phalanx/checkpoint';
import { assertClose, cpu } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { llama } from '../src/presets/llama.js';
import { configOf, expectDecodeMatchesForward, expectLastOnly, expectRowsIndependent, logitsOf, randomIds, randomWeights } from './harness.js';

const { backends, gpu } = await testBackends();

// GQA (4 heads over 2 KV heads), odd hidden, llama3 RoPE scaling that bends the frequencies inside T
const config = configOf<LlamaConfig>({
  model_type: 'llama', vocab_size: 97, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, head_dim: 6, rms_norm_eps: 1e-5, max_position_embeddings: 64, tie_word_embeddings: true,
  rope_theta: 10000, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
});
const ids = randomIds(2, 11, config.vocabSize, 5);

describe.each(backends.map((b) => [b.name, b] as const))('llama on %s', (_, backend) => {
  const net = llama.build(config, randomWeights(llama, config, backend, 3));

  it('prefill + decode gives the full forward', async () => {
    await expectDecodeMatchesForward(net, ids, 4);
  });

  it('batch rows are independent, lastOnly is the last position', async () => {
    await expectRowsIndependent(net, ids);
    await expectLastOnly(net, ids);
  });

  it('a continued state refuses several tokens at once', async () => {
    const state = net.createState(1, 16);
    (await net.forward([[1, 2]], { state })).dispose();
    await expect(net.forward([[3, 4]], { state })).rejects.toThrow(/one token at a time/);
    state.dispose();
  });
});

describe.runIf(gpu)('llama CPU == WebGPU', () => {
  it('same logits from the same weights', async () => {
    const ref = await logitsOf(llama.build(config, randomWeights(llama, config, cpu, 3)), ids);
    const out = await logitsOf(llama.build(config, randomWeights(llama, config, gpu!, 3)), ids);
    assertClose(ref, out, { rtol: 1e-5, name: 'logits' });
  });
});

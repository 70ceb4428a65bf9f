import { type NanoHammerConfig, expandLayers, matchTensorNames } from '@phalanx/checkpoint';
import { type Backend, CheckpointError, assertClose, cpu, randn, relativeRmse } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { KvState } from '../src/blocks.js';
import { type PresetDefinition, Weights } from '../src/network.js';
import { nanohammer } from '../src/presets/nanohammer.js';
import { configOf, expectDecodeMatchesForward, expectLastOnly, expectRowsIndependent, logitsOf, randomIds, randomWeights } from './harness.js';

const { backends, gpu } = await testBackends();

// GQA (4 heads over 2 KV heads), llama3 RoPE scaling that bends the frequencies inside T; 4 state heads of 4 dims
const config = configOf<NanoHammerConfig>({
  model_type: 'nanohammer', vocab_size: 97, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, head_dim: 6, rms_norm_eps: 1e-5, max_position_embeddings: 64, tie_word_embeddings: true,
  rope_theta: 10000, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  state_dim: 16, num_state_heads: 4,
});
// every other reading of the derived spec at once, on a checkpoint with every optional bias
const variant = configOf<NanoHammerConfig>({
  model_type: 'nanohammer', vocab_size: 97, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, head_dim: 6, rms_norm_eps: 1e-5, max_position_embeddings: 64, tie_word_embeddings: false, attention_bias: true,
  state_dim: 16, num_state_heads: 4, holographic_pairing: 'half', holographic_width: 8, holographic_normalize: 'mean',
  state_cell_steps: 2, state_cell_norm: 'rms', state_cell_activation: 'silu',
});
const ids = randomIds(2, 10, config.vocabSize, 5);

/** nanohammer drawing the optional tensors (biases) too. */
const withOptional: PresetDefinition<NanoHammerConfig> = { ...nanohammer, tensors: (c) => nanohammer.tensors(c).map((t) => ({ ...t, optional: false })) };

const weightsOf = (c: NanoHammerConfig, backend: Backend) => randomWeights(c === variant ? withOptional : nanohammer, c, backend, 3);

describe.each(backends.map((b) => [b.name, b] as const))('nanohammer on %s', (_, backend) => {
  const weights = weightsOf(config, backend);
  const net = nanohammer.build(config, weights);

  it('prefill + decode gives the full forward', async () => {
    await expectDecodeMatchesForward(net, ids, 4);
  });

  it('batch rows are independent, lastOnly is the last position', async () => {
    await expectRowsIndependent(net, ids);
    await expectLastOnly(net, ids);
  });

  it('the other option values and optional biases also decode as they forward', async () => {
    await expectDecodeMatchesForward(nanohammer.build(variant, weightsOf(variant, backend)), ids, 3);
  });

  it('the state stream reaches the logits: new token_to_state weights change them', async () => {
    const name = 'model.layers.0.token_to_state.weight';
    const fresh = randn([config.stateDim, config.hiddenSize], { seed: 9, std: config.hiddenSize ** -0.5, backend, name });
    const swapped = new Weights('swapped', new Map(weights.names.map((n) => [n, n === name ? fresh : weights.get(n)])), backend);
    expect(relativeRmse(await logitsOf(net, ids), await logitsOf(nanohammer.build(config, swapped), ids))).toBeGreaterThan(1e-3);
  });

  it('each state-stream option reaches its kernel (same weights, other logits)', async () => {
    const base = await logitsOf(net, ids);
    const options: Partial<NanoHammerConfig>[] = [
      { holographicPairing: 'half' }, { holographicWidth: 8 }, { holographicNormalize: 'sqrt' }, { stateCellSteps: 2 }, { stateCellActivation: 'silu' },
    ];
    for (const o of options) {
      const other = await logitsOf(nanohammer.build({ ...config, ...o }, weights), ids);
      expect(relativeRmse(base, other), JSON.stringify(o)).toBeGreaterThan(1e-3);
    }
  });

  it('the state holds the KV caches plus one constant holographic vector per layer', async () => {
    const [B, capacity] = [2, 16];
    const state = net.createState(B, capacity);
    const kv = new KvState(B, Array.from({ length: config.numHiddenLayers }, () => ({ heads: config.numKeyValueHeads, dim: config.headDim })), capacity, backend);
    try {
      expect(state.bytes).toBe(kv.bytes + config.numHiddenLayers * B * config.stateDim * 4);
      const before = state.bytes;
      (await net.forward(ids.map((r) => r.slice(0, 3)), { state })).dispose();
      (await net.forward(ids.map((r) => [r[3]!]), { state })).dispose();
      expect(state.bytes).toBe(before);
    } finally {
      state.dispose();
      kv.dispose();
    }
  });
});

describe('nanohammer checkpoint', () => {
  it('refuses a state cell whose MLP is not state_cell_hidden_size wide', () => {
    const expected = expandLayers(nanohammer.tensors(config), config.numHiddenLayers);
    const present = new Map(expected.filter((e) => !e.optional).map((e) => [e.name, { shape: e.name.endsWith('mlp.fc2.weight') ? [4, 9] : (e.shape as number[]) }]));
    expect(() => matchTensorNames('ckpt', expected, present)).toThrow(CheckpointError);
    expect(() => matchTensorNames('ckpt', expected, present)).toThrow(/state_cell\.mlp\.fc2\.weight has shape \[4, 9\], expected \[4, 8\]/);
  });
});

describe.runIf(gpu)('nanohammer CPU == WebGPU', () => {
  it.each([['the default options', config], ['the variant', variant]] as const)('same logits from the same weights, %s', async (_, c) => {
    const ref = await logitsOf(nanohammer.build(c, weightsOf(c, cpu)), ids);
    const out = await logitsOf(nanohammer.build(c, weightsOf(c, gpu!)), ids);
    assertClose(ref, out, { rtol: 1e-5, name: 'logits' });
  });
});

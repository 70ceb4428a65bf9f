import { type ParcaeConfig, expandLayers } from '@phalanx/checkpoint';
import { ConfigError, InputError, assertClose, cpu } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import type { Network } from '../src/network.js';
import { type ParcaeState, parcae, parcaeSchedule } from '../src/presets/parcae.js';
import { type Draw, configOf, expectDecodeMatchesForward, expectLastOnly, expectRowsIndependent, logitsOf, randomIds, randomWeights } from './harness.js';

const { backends, gpu } = await testBackends();

// 6 layers, the loop 2..3 run 3 times: virtual layers [0 1 2 3 2 | 3 2 3 4 5], Parcae at steps 4 and 6, 5 skips,
// two lanes from layer 4. Global layers 3 and 5 rotate 4 of 8 dims; the others see 3 (layers 0-2) or 5 (layer 4)
// keys back, so the windows wrap their ring caches inside T = 12. XSA on layers 2-5, the gate alone on 0-1.
const json = {
  model_type: 'parcae', vocab_size: 97, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 6, num_attention_heads: 4,
  num_key_value_heads: 2, head_dim: 8, rope_dims: 4, logit_softcap: 4, global_attn_layers: [3, 5], local_window_size_early: 3,
  local_window_size_late: 5, local_window_split_layer: 3, num_loops: 2, loop_start: 2, loop_end: 3, parallel_start_layer: 4,
  xsa_last_n: 4, attn_out_gate_width: 4, smear_gate_width: 4,
  xielu_coefficients: [[0.1, 0.4, 0.13, 0.8], [0.2, 0.6, 0.07, 0.6], [1.4, 0.36, 0, 0.4], [1.2, 0.5, 0, 0.38], [1.5, 0.54, 0, 0.31], [1.5, 0.55, 0.002, 0.29]],
};
const config = configOf<ParcaeConfig>(json);
const ids = randomIds(2, 12, config.vocabSize, 5);

/** The zero- or one-initialised controls drawn away from their init, so that every path carries signal. */
const draw: Draw = (name, shape, rng) => {
  const n = shape.reduce((a, b) => a * b, 1);
  const around = (mean: number, std: number) => Array.from({ length: n }, () => mean + std * rng.normal());
  if (name === 'model.smear_gate.lambda') return [0.7];
  if (name.endsWith('q_gain')) return around(2, 0.3);
  if (name.endsWith('resid_mix')) return Array.from({ length: n }, (_, i) => (i < n / 2 ? 1 : 0) + (i < n / 2 ? 0.2 : 0.3) * rng.normal()); // m0 ~ 1, m1 ~ 0
  if (/(attn_scale|mlp_scale|skip_weights|parallel_post_lambdas)$/.test(name)) return around(1, 0.2);
  if (name.endsWith('parallel_resid_lambdas')) return around(1.1, 0.1);
  if (name === 'model.skip_gates') return around(0, 1);
  if (name === 'model.loop_log_A') return around(-0.5, 0.3);
  if (name === 'model.loop_delta') return around(1, 0.5);
  if (name === 'model.loop_B') return around(0.1, 0.3);
  return undefined;
};

describe('parcae schedule and tensors', () => {
  // the record's shape (spec section 2), every knob at the script's default
  const golf = configOf<ParcaeConfig>({ model_type: 'parcae', vocab_size: 8192, hidden_size: 512, num_hidden_layers: 11, num_attention_heads: 8, num_key_value_heads: 4 });

  it('walks the record as spec 3.2 lists it', () => {
    const { steps, skips } = parcaeSchedule(golf);
    expect(steps.map((s) => s.layer)).toEqual([0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(skips).toBe(8);
    expect(steps.flatMap((s, v) => (s.parcae ? [v] : []))).toEqual([6, 9]); // encoder position 6, decoder position 1
    expect(steps.map((s) => s.push)).toEqual([...Array(8).fill(true), ...Array(9).fill(false)]);
    expect(steps.map((s) => s.skip)).toEqual([...Array(8).fill(null), 0, 1, 2, 3, 4, 5, 6, 7, null]);
    expect(steps.flatMap((s) => (s.parallel ? [s.layer] : []))).toEqual([8, 9, 10]);
  });

  it('follows the script where the spec is silent: Parcae on a first entry in the decoder, no lanes for parallel_start_layer 0', () => {
    // loop 4..5 run twice: [0 1 2 3 | 4 5 4 5]; the script's decoder applies Parcae on every entry into loop_start
    const { steps } = parcaeSchedule(configOf<ParcaeConfig>({ ...json, loop_start: 4, loop_end: 5, num_loops: 1, parallel_start_layer: 0 }));
    expect(steps.flatMap((s, v) => (s.parcae ? [v] : []))).toEqual([4, 6]);
    expect(steps.some((s) => s.parallel)).toBe(false);
  });

  it('caps the context at max_position_embeddings, else the golf length 4096', () => {
    expect(parcae.maxContext(golf)).toBe(4096);
    expect(parcae.maxContext(configOf<ParcaeConfig>({ ...json, max_position_embeddings: 1024 }))).toBe(1024);
  });

  it('expects the record parameter count of spec section 2 (35,947,207)', () => {
    const count = expandLayers(parcae.tensors(golf), 11)
      .filter((e) => !e.optional)
      .reduce((n, e) => n + (e.shape as number[]).reduce((a, b) => a * b, 1), 0);
    expect(count).toBe(35_947_207);
  });

  it('keeps one KV cache per virtual layer, a ring of window + 1 on local layers', () => {
    const state = parcae.build(config, randomWeights(parcae, config, cpu, 3, draw)).createState(2, 12) as ParcaeState;
    expect(state.caches.map((c) => c.window)).toEqual([3, 3, 3, Infinity, 3, Infinity, 3, Infinity, 5, Infinity]);
    expect(state.caches.map((c) => c.slots)).toEqual([4, 4, 4, 12, 4, 12, 4, 12, 6, 12]);
    state.dispose();
  });

  it('smear_gate_reset needs bos_token_id', () => {
    expect(() => configOf<ParcaeConfig>({ ...json, smear_gate_reset: true })).toThrow(ConfigError);
    expect(() => configOf<ParcaeConfig>({ ...json, smear_gate_reset: true })).toThrow(/bos_token_id/);
  });

  it('refuses a loop that comes back after the two lanes began', () => {
    // lanes from layer 3 with the loop 2..3: the decoder [3 2 3 4 5] returns to layer 2 after the lanes start
    const late = configOf<ParcaeConfig>({ ...json, parallel_start_layer: 3 });
    expect(() => parcaeSchedule(late)).toThrow(ConfigError);
    expect(() => parcae.build(late, randomWeights(parcae, { ...late, parallelStartLayer: 4 }, cpu, 3))).toThrow(/parallel_start_layer/);
  });
});

describe.each(backends.map((b) => [b.name, b] as const))('parcae on %s', (_, backend) => {
  const net = parcae.build(config, randomWeights(parcae, config, backend, 3, draw));

  it('prefill + decode gives the full forward', async () => {
    await expectDecodeMatchesForward(net, ids, 4);
    await expectDecodeMatchesForward(net, ids, 1);
  });

  it('batch rows are independent, lastOnly is the last position', async () => {
    await expectRowsIndependent(net, ids);
    await expectLastOnly(net, ids);
  });

  it('a continued state refuses several tokens at once', async () => {
    const state = net.createState(1, 16);
    (await net.forward([[1, 2]], { state })).dispose();
    await expect(net.forward([[3, 4]], { state })).rejects.toThrow(InputError);
    state.dispose();
  });

  it('smear_gate_reset turns the SmearGate off at each BOS, in prefill and decode', async () => {
    const resetConfig = configOf<ParcaeConfig>({ ...json, smear_gate_reset: true, bos_token_id: 1 });
    const resetNet = parcae.build(resetConfig, randomWeights(parcae, resetConfig, backend, 3, draw));
    const withBos = ids.map((row, b) => row.map((id, t) => (t === 5 + b ? 1 : id))); // BOS at 5 in row 0, at 6 in row 1
    await expectDecodeMatchesForward(resetNet, withBos, 3);
    await expectRowsIndependent(resetNet, withBos);
    // the same weights without the reset: the same logits before the BOS, others from it on
    const [plain, reset] = [await logitsOf(net, withBos), await logitsOf(resetNet, withBos)];
    const V = config.vocabSize;
    expect(reset.subarray(0, 5 * V)).toEqual(plain.subarray(0, 5 * V));
    expect(reset.subarray(5 * V, 6 * V)).not.toEqual(plain.subarray(5 * V, 6 * V));
    resetNet.dispose();
  });

  it('the head is cap tanh(z / cap) of the uncapped logits', async () => {
    // z from the CPU: with a cap of 1e6, tanh's argument is ~1e-6, where a WGSL tanh built from exponentials
    // keeps only a few digits (lavapipe's does)
    const uncapped = configOf<ParcaeConfig>({ ...json, logit_softcap: 1e6 });
    const z = await logitsOf(parcae.build(uncapped, randomWeights(parcae, uncapped, cpu, 3, draw)), ids);
    const capped = await logitsOf(net, ids);
    expect(Math.max(...z.map(Math.abs))).toBeGreaterThan(4); // the cap bites
    expect(Math.max(...capped.map(Math.abs))).toBeLessThanOrEqual(4);
    assertClose(z.map((v) => 4 * Math.tanh(v / 4)), capped, { rtol: 1e-5, name: 'softcapped logits' });
  });

  // The loop runs twice: virtual layers [0 1 2 3 | 2 3 4 5] with windows 1 (layers 0-2) and 2 (3-5) when no layer
  // is global. The last position then sees 1+1+1+2+1+2+2+2 = 12 positions back through attention, plus one
  // through the SmearGate: position 15 depends on tokens 2..15 and not on 0 or 1.
  it('local windows bite: only global layers reach past them', async () => {
    const reach = { ...json, num_loops: 1, local_window_size_early: 1, local_window_size_late: 2, tie_word_embeddings: false };
    const row = randomIds(1, 16, config.vocabSize, 9)[0]!;
    const at = (p: number) => row.map((id, t) => (t === p ? (id + 1) % config.vocabSize : id));
    const lastLogits = async (network: Network, r: number[]) => {
      const out = await network.forward([r], { lastOnly: true });
      try {
        return Float32Array.from(await out.data());
      } finally {
        out.dispose();
      }
    };
    const maxDiff = (a: Float32Array, b: Float32Array) => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
    const local = configOf<ParcaeConfig>({ ...reach, global_attn_layers: [] });
    const localNet = parcae.build(local, randomWeights(parcae, local, backend, 7, draw));
    const base = await lastLogits(localNet, row);
    expect(await lastLogits(localNet, at(0))).toEqual(base);
    expect(await lastLogits(localNet, at(1))).toEqual(base);
    // the edge of the reach: a path of 12 attention hops, each to its oldest key, so the change is small but there
    expect(await lastLogits(localNet, at(2))).not.toEqual(base);
    expect(maxDiff(await lastLogits(localNet, at(8)), base)).toBeGreaterThan(1e-3);
    localNet.dispose();
    const global = configOf<ParcaeConfig>(reach);
    const globalNet = parcae.build(global, randomWeights(parcae, global, backend, 7, draw));
    expect(maxDiff(await lastLogits(globalNet, at(0)), await lastLogits(globalNet, row))).toBeGreaterThan(1e-3);
    globalNet.dispose();
  });
});

describe.runIf(gpu)('parcae CPU == WebGPU', () => {
  it('same logits from the same weights', async () => {
    const ref = await logitsOf(parcae.build(config, randomWeights(parcae, config, cpu, 3, draw)), ids);
    const out = await logitsOf(parcae.build(config, randomWeights(parcae, config, gpu!, 3, draw)), ids);
    assertClose(ref, out, { rtol: 1e-5, name: 'logits' });
  });
});

import type { SpartacusConfig } from '@phalanx/checkpoint';
import { ConfigError, InputError, assertClose, cpu, relativeRmse } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import type { Network } from '../src/network.js';
import { type MonoidState, SpartacusNetwork, spartacus } from '../src/presets/spartacus.js';
import { type Draw, configOf, expectDecodeMatchesForward, expectLastOnly, expectRowsIndependent, logitsOf, randomIds, randomWeights } from './harness.js';

const { backends, gpu } = await testBackends();

// 3 full heads of 8 (no KV grouping), tied head; decay_variant absent, so it is detected from the weights
const json = {
  model_type: 'monoid', vocab_size: 97, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 3,
  head_dim: 8, rms_norm_eps: 1e-5,
};
const config = configOf<SpartacusConfig>(json);
const scalar = configOf<SpartacusConfig>({ ...json, decay_variant: 'scalar-logsigmoid' });
const [L, H, D] = [2, 3, 8];
const ids = randomIds(2, 12, config.vocabSize, 5);

/** Decay biases around `mean` per layer (spec 1.3.1: +3 at init, so a ~ 0.95 and the state carries far), instead of the harness's ~0. */
const decayBias =
  (...means: number[]): Draw =>
  (name, shape, rng) => {
    const layer = /^model\.layers\.(\d+)\.self_attn\.decay_proj\.bias$/.exec(name);
    return layer ? Array.from({ length: shape[0]! }, () => means[Number(layer[1]) % means.length]! + 0.5 * rng.normal()) : undefined;
  };

/**
 * Consuming the ids in pieces of these lengths from one state (each piece continuing the scan, any length)
 * gives `reference`'s logits at every position, and the state's bytes stay those of L states [B, H, D, D].
 */
async function expectPiecesMatch(network: Network, ids: number[][], pieces: number[], reference: Float32Array, rtol = 1e-4): Promise<void> {
  const [B, T, V] = [ids.length, ids[0]!.length, network.config.vocabSize];
  const state = network.createState(B, T);
  try {
    let start = 0;
    for (const n of pieces) {
      const out = await network.forward(ids.map((r) => r.slice(start, start + n)), { state });
      const got = await out.data();
      out.dispose();
      expect(out.shape).toEqual([B, n, V]);
      for (let b = 0; b < B; b++) {
        assertClose(reference.subarray((b * T + start) * V, (b * T + start + n) * V), got.subarray(b * n * V, (b + 1) * n * V), { rtol, name: `row ${b}, tokens ${start}..${start + n}` });
      }
      start += n;
      expect(state.bytes).toBe(L * B * H * D * D * 4);
    }
    expect(start).toBe(T);
    expect(state.position).toBe(T);
  } finally {
    state.dispose();
  }
}

describe.each(backends.map((b) => [b.name, b] as const))('spartacus on %s', (_, backend) => {
  const weights = randomWeights(spartacus, config, backend, 3, decayBias(3));
  const net = spartacus.build(config, weights);

  it('prefill + decode gives the full forward', async () => {
    await expectDecodeMatchesForward(net, ids, 4);
  });

  it('a state continues with several tokens at once, and its bytes do not grow', async () => {
    await expectPiecesMatch(net, ids, [5, 4, 1, 1, 1], await logitsOf(net, ids));
  });

  it('batch rows are independent, lastOnly is the last position', async () => {
    await expectRowsIndependent(net, ids);
    await expectLastOnly(net, ids);
  });

  it('scalar decay: prefill + decode gives the full forward', async () => {
    const scalarNet = spartacus.build(scalar, randomWeights(spartacus, scalar, backend, 4, decayBias(3)));
    await expectDecodeMatchesForward(scalarNet, ids, 5);
  });

  it('past one 64-token chunk: the chunked scan (and auto) gives the recurrence, also continued from a state', async () => {
    const long = randomIds(1, 70, config.vocabSize, 9);
    const reference = await logitsOf(new SpartacusNetwork(config, weights, { mode: 'recurrent' }), long);
    // auto takes the chunk kernel on WebGPU for T > 64
    assertClose(reference, await logitsOf(net, long), { rtol: 1e-4, name: 'auto vs recurrent' });
    await expectPiecesMatch(new SpartacusNetwork(config, weights, { mode: 'chunk' }), long, [5, 65], reference);
  });
});

describe('spartacus decay variant', () => {
  const explicit = (variant: string) => configOf<SpartacusConfig>({ ...json, decay_variant: variant });

  it('is read from the bias sign when config.json omits it, and the variants differ', async () => {
    for (const [mean, variant, other] of [
      [3, 'vector-logsigmoid', 'vector-neg-softplus'],
      [-3, 'vector-neg-softplus', 'vector-logsigmoid'],
    ] as const) {
      const weights = randomWeights(spartacus, config, cpu, 6, decayBias(mean));
      const detected = await logitsOf(spartacus.build(config, weights), ids);
      assertClose(await logitsOf(spartacus.build(explicit(variant), weights), ids), detected, { rtol: 1e-6, name: `bias ${mean}: ${variant}` });
      expect(relativeRmse(await logitsOf(spartacus.build(explicit(other), weights), ids), detected)).toBeGreaterThan(1e-2);
    }
  });

  it('an undecidable bias or layers that disagree need decay_variant', async () => {
    const near0 = spartacus.build(config, randomWeights(spartacus, config, cpu, 6));
    await expect(near0.ready!()).rejects.toThrow(InputError); // what loadModel awaits
    await expect(near0.forward(ids)).rejects.toThrow(InputError);
    const split = spartacus.build(config, randomWeights(spartacus, config, cpu, 6, decayBias(3, -3)));
    await expect(split.forward(ids)).rejects.toThrow(ConfigError);
    await expect(split.forward(ids)).rejects.toThrow(/decay_variant.*layer 1/);
  });
});

describe('spartacus config', () => {
  it('refuses grouped KV heads and attention biases, has no context limit, and a state holds nothing before its first forward', () => {
    expect(() => configOf({ ...json, num_key_value_heads: 1 })).toThrow(ConfigError);
    expect(() => spartacus.tensors(configOf<SpartacusConfig>({ ...json, attention_bias: true }))).toThrow(/attention_bias/);
    expect(spartacus.maxContext(config)).toBe(Infinity);
    const state = spartacus.build(config, randomWeights(spartacus, config, cpu, 3)).createState(1, 8) as MonoidState;
    expect([state.bytes, state.position]).toEqual([0, 0]);
  });
});

describe.runIf(gpu)('spartacus CPU == WebGPU', () => {
  it('same logits from the same weights, vector and scalar decay', async () => {
    for (const c of [config, scalar]) {
      const ref = await logitsOf(spartacus.build(c, randomWeights(spartacus, c, cpu, 3, decayBias(3))), ids);
      const out = await logitsOf(spartacus.build(c, randomWeights(spartacus, c, gpu!, 3, decayBias(3))), ids);
      assertClose(ref, out, { rtol: 1e-5, name: `logits (${c.decayVariant ?? 'detected'})` });
    }
  });
});

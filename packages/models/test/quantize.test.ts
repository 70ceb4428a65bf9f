/**
 * loadModel's `quantize: 'int8'`: projections held as int8 codes and row scales on the backend, run by the
 * int8 kernels of `linear`, on every test backend.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LlamaConfig, type ModelConfig, type SpartacusConfig, writeSafetensors } from '@phalanx/checkpoint';
import { type Backend, InputError, Tensor, assertClose, bytesPerElement, cpu, relativeRmse } from '@phalanx/core';
import { dequantize, quantize } from '@phalanx/quantizer';
import { testBackends } from '@phalanx/webgpu/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INT8_CLIP_SIGMAS, loadModel } from '../src/index.js';
import { type PresetDefinition, Weights } from '../src/network.js';
import { llama } from '../src/presets/llama.js';
import { spartacus } from '../src/presets/spartacus.js';
import { isQuantized } from '../src/quantize.js';
import { configOf, expectDecodeMatchesForward, logitsOf, randomIds, randomWeights } from './harness.js';

const { backends } = await testBackends();

interface Case {
  name: string;
  preset: PresetDefinition<ModelConfig>;
  json: Record<string, unknown>;
}

const CASES: Case[] = [
  {
    // untied: lm_head is quantized too
    name: 'llama',
    preset: llama as PresetDefinition<ModelConfig>,
    json: { model_type: 'llama', vocab_size: 89, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5, max_position_embeddings: 64, tie_word_embeddings: false },
  },
  {
    // tied: the head reads the float embedding
    name: 'spartacus',
    preset: spartacus as PresetDefinition<ModelConfig>,
    json: { model_type: 'monoid', vocab_size: 97, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 3, head_dim: 8, rms_norm_eps: 1e-5, decay_variant: 'vector-logsigmoid' },
  },
];

let dir: string;
/** Per case: the checkpoint directory and its f32 tensors on the CPU. */
const checkpoints = new Map<string, { path: string; tensors: Map<string, Tensor> }>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phalanx-quantize-'));
  for (const c of CASES) {
    const w = randomWeights(c.preset, configOf(c.json), cpu, 11);
    const tensors = new Map(w.names.map((n) => [n, w.get(n)]));
    const path = join(dir, c.name);
    await mkdir(path);
    await writeFile(join(path, 'config.json'), JSON.stringify(c.json));
    await writeSafetensors(join(path, 'model.safetensors'), Object.fromEntries(tensors));
    checkpoints.set(c.name, { path, tensors });
  }
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** The float network of the checkpoint's weights with each quantized matrix replaced by its dequantized f32 values. */
async function dequantizedNetwork(c: Case, backend: Backend) {
  const held = new Map<string, Tensor>();
  for (const [name, t] of checkpoints.get(c.name)!.tensors) {
    const values = isQuantized(name) ? await dequantize(await quantize(t, { bits: 8, clipSigmas: INT8_CLIP_SIGMAS })) : t;
    held.set(name, await values.to(backend));
  }
  const network = c.preset.build(configOf(c.json), new Weights('dequantized', held, backend));
  await network.ready?.();
  return network;
}

const bytesOf = (t: Tensor) => t.size * bytesPerElement(t.dtype);

describe.each(backends.map((b) => [b.name, b] as const))('loadModel quantize on %s', (_, backend) => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s (random weights): the logits of the float model of the dequantized weights, int8 on the backend', async (_, c) => {
    const { path } = checkpoints.get(c.name)!;
    const float = await loadModel(path, { backend });
    const int8 = await loadModel(path, { backend, quantize: 'int8' });
    const reference = await dequantizedNetwork(c, backend);
    try {
      const ids = randomIds(2, 9, float.config.vocabSize, 4);
      const got = await logitsOf(int8.network, ids);
      expect(relativeRmse(await logitsOf(float.network, ids), got)).toBeGreaterThan(1e-3); // quantized, so not the float model
      // the kernels compute with the codes and scales: exactly the float model of W = codes * scale
      assertClose(await logitsOf(reference, ids), got, { rtol: 1e-5, name: `${c.name} int8 vs dequantized f32` });
      await expectDecodeMatchesForward(int8.network, ids, 4);

      // the projections are int8 on the backend: one byte a weight plus an f16 scale a row
      const w = int8.network.weights;
      const quantized = w.names.filter(isQuantized);
      expect(quantized.length).toBe(2 * 7 + (c.name === 'llama' ? 1 : 0)); // q/k/v/o, gate/up/down per layer, and the untied lm_head
      let floatBytes = 0;
      let int8Bytes = 0;
      for (const name of quantized) {
        const m = w.matrix(name);
        if (m instanceof Tensor) throw new Error(`${name} is not quantized`);
        expect([m.codes.dtype, m.codes.backend, m.scales.dtype]).toEqual(['i8', backend, 'f16']);
        floatBytes += bytesOf(float.network.weights.get(name));
        int8Bytes += bytesOf(m.codes) + bytesOf(m.scales);
        expect(() => w.get(name)).toThrow(/held as int8 codes/);
      }
      expect(floatBytes / int8Bytes).toBeGreaterThan(3.7);
      expect(float.network.weights.bytes - w.bytes).toBe(floatBytes - int8Bytes);
      for (const name of w.names.filter((n) => !isQuantized(n))) expect(w.get(name).dtype).toBe('f32');
    } finally {
      for (const m of [float, int8, reference]) m.dispose();
    }
  });
});

/**
 * The tiny trained models (tied heads) on 48 held-out tokens: int8 logits against the float ones, relative
 * RMSE measured at the default clipSigmas (10): llama 1.49e-2, spartacus 1.48e-2 (CPU and WebGPU alike).
 */
const heldOut = (JSON.parse(await readFile(new URL('../../../docs/tiny-models/heldout-ids.json', import.meta.url), 'utf8')) as { ids: number[] }).ids.slice(0, 48);

describe.each(backends.map((b) => [b.name, b] as const))('tiny trained models quantized on %s', (_, backend) => {
  it.each(['llama', 'spartacus'])('%s: int8 logits within 2e-2 of the float model', async (preset) => {
    const float = await loadModel(preset, { backend });
    const int8 = await loadModel(preset, { backend, quantize: 'int8' });
    try {
      const error = relativeRmse(await logitsOf(float.network, [heldOut]), await logitsOf(int8.network, [heldOut]));
      expect(error).toBeGreaterThan(5e-3);
      expect(error).toBeLessThan(2e-2);
    } finally {
      float.dispose();
      int8.dispose();
    }
  });
});

describe('loadModel quantize option', () => {
  it('a bad option is an InputError', async () => {
    const { path } = checkpoints.get('llama')!;
    for (const bad of ['int4', 'INT8', { bits: 4 }, { bits: 8, clipSigmas: 0 }, { bits: 8, clipSigmas: Number.NaN }, null, 8]) {
      await expect(loadModel(path, { backend: 'cpu', quantize: bad as never }), JSON.stringify(bad)).rejects.toThrow(InputError);
    }
    await expect(loadModel(path, { backend: 'cpu', quantize: { bits: 4 } as never })).rejects.toThrow(/bits must be 8, got 4/);
  });

  it('clipSigmas sets the row scales: k * std(row) / 127', async () => {
    const { path, tensors } = checkpoints.get('llama')!;
    const model = await loadModel(path, { backend: 'cpu', quantize: { bits: 8, clipSigmas: 5 } });
    const name = 'model.layers.1.mlp.down_proj.weight';
    const m = model.network.weights.matrix(name);
    if (m instanceof Tensor) throw new Error(`${name} is not quantized`);
    const ref = await quantize(tensors.get(name)!, { bits: 8, clipSigmas: 5 });
    expect(Array.from(await m.scales.data())).toEqual(Array.from(await ref.scales.data()));
    expect(Array.from(await m.codes.data())).toEqual(Array.from(await ref.codes.data()));
    model.dispose();
  });
});

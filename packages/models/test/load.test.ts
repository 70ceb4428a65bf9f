import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LlamaConfig, writeSafetensors } from '@phalanx/checkpoint';
import { CheckpointError, ConfigError, InputError, type Tensor, assertClose, cast, cpu } from '@phalanx/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/index.js';
import { llama } from '../src/presets/llama.js';
import { configOf, logitsOf, randomIds, randomWeights } from './harness.js';

const CONFIG_JSON = {
  model_type: 'llama', vocab_size: 61, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, rms_norm_eps: 1e-5, max_position_embeddings: 32, tie_word_embeddings: false, eos_token_id: 60,
};
const config = configOf<LlamaConfig>(CONFIG_JSON);
let dir: string;
let weights: Record<string, Tensor>;

/** A checkpoint directory holding `tensors` and the config. */
async function checkpoint(name: string, tensors: Record<string, Tensor>, json: object = CONFIG_JSON): Promise<string> {
  const d = join(dir, name);
  await mkdir(d);
  await writeFile(join(d, 'config.json'), JSON.stringify(json));
  await writeSafetensors(join(d, 'model.safetensors'), tensors);
  return d;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phalanx-models-'));
  const w = randomWeights(llama, { ...config, tieWordEmbeddings: false }, cpu, 7);
  weights = Object.fromEntries(w.names.map((n) => [n, w.get(n)]));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('loadModel', () => {
  it('loads a checkpoint directory and gives the logits of the network built from the same weights', async () => {
    const model = await loadModel(await checkpoint('f32', weights), { backend: 'cpu' });
    expect(model.preset).toBe('llama');
    expect(model.tokenizer).toBeNull();
    const ids = randomIds(1, 6, config.vocabSize, 1);
    const { logits } = await model.forward(ids);
    const direct = await logitsOf(llama.build(config, randomWeights(llama, config, cpu, 7)), ids);
    assertClose(direct, await logits.data(), { rtol: 1e-6 });
    logits.dispose();
    model.dispose();
  });

  it('upcasts a bf16 checkpoint, and keeps projections in bf16 when asked', async () => {
    const half = Object.fromEntries(await Promise.all(Object.entries(weights).map(async ([n, t]) => [n, await cast(t, 'bf16')] as const)));
    const d = await checkpoint('bf16', half);
    const f32 = await loadModel(d, { backend: 'cpu' });
    const bf16 = await loadModel(d, { backend: 'cpu', dtype: 'bf16' });
    const ids = randomIds(1, 5, config.vocabSize, 2);
    const a = (await f32.forward(ids)).logits;
    const b = (await bf16.forward(ids)).logits;
    assertClose(await a.data(), await b.data(), { rtol: 1e-6, name: 'bf16 weights kept vs upcast' });
    f32.dispose();
    bf16.dispose();
  });

  it('generates from ids without a tokenizer, greedy is reproducible and stops on eos or length', async () => {
    const model = await loadModel(await checkpoint('gen', weights), { backend: 'cpu' });
    const run = () => model.generate({ inputIds: [1, 2, 3], maxNewTokens: 5, temperature: 0 }).complete();
    const a = await run();
    expect(a.tokenIds.length).toBeLessThanOrEqual(5);
    expect(['length', 'eos']).toContain(a.stopReason);
    expect((await run()).tokenIds).toEqual(a.tokenIds);
    // the greedy tokens are the argmax of a full forward over the growing sequence
    const seq = [1, 2, 3];
    for (const id of a.tokenIds) {
      const { logits } = await model.forward([seq], { lastOnly: true });
      const row = Array.from(await logits.data());
      expect(id).toBe(row.indexOf(Math.max(...row)));
      logits.dispose();
      seq.push(id);
    }
    await expect(model.generate({ prompt: 'hi', maxNewTokens: 1 }).complete()).rejects.toThrow(/no tokenizer/);
    await expect(model.generate({ inputIds: [1], maxNewTokens: 40 }).complete()).rejects.toThrow(/exceeds the model's context of 32/);
    await expect(model.generate({ inputIds: [], maxNewTokens: 1 }).complete()).rejects.toThrow(InputError);
    await expect(model.generate({ inputIds: [99], maxNewTokens: 1 }).complete()).rejects.toThrow(/not a token id/);
    const zero = await model.generate({ inputIds: [1, 2], maxNewTokens: 0 }).complete();
    expect(zero.tokenIds).toEqual([]);
    model.dispose();
  });

  it('scores ids by sliding windows: every token once, the same as one window when it fits', async () => {
    const model = await loadModel(await checkpoint('score', weights), { backend: 'cpu' });
    const ids = randomIds(1, 30, config.vocabSize, 3)[0]!;
    const whole = await model.score(ids, { window: 30, stride: 30 });
    const { logits } = await model.forward([ids.slice(0, 29)]);
    const l = await logits.data();
    const V = config.vocabSize;
    for (let t = 0; t < 29; t++) {
      const row = Array.from(l.subarray(t * V, (t + 1) * V));
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
      expect(whole.logLikelihoods[t]).toBeCloseTo(row[ids[t + 1]!]! - lse, 4);
    }
    const windows = await model.score(ids, { window: 8, stride: 3, batch: 2 });
    expect(windows.logLikelihoods.every((x) => x < 0)).toBe(true);
    // the first 8 targets see the same context in both
    for (let t = 0; t < 8; t++) expect(windows.logLikelihoods[t]).toBeCloseTo(whole.logLikelihoods[t]!, 6);
    expect(Number.isNaN(windows.bitsPerByte)).toBe(true); // no tokenizer, no bytes
    await expect(model.score(ids, { window: 64 })).rejects.toThrow(/window must be an integer in \[1, 32\]/);
    model.dispose();
  });

  it('refuses a checkpoint whose tensors do not match, naming them all', async () => {
    const { 'model.norm.weight': _, ...rest } = weights;
    const d = await checkpoint('missing', { ...rest, 'model.extra.weight': weights['model.norm.weight']! });
    const err = await loadModel(d, { backend: 'cpu' }).catch((e) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/missing tensors \(1\): model\.norm\.weight/);
    expect(err.message).toMatch(/unexpected tensors \(1\): model\.extra\.weight/);
  });

  it('refuses a bad source or config with typed errors', async () => {
    await expect(loadModel(join(dir, 'nope'))).rejects.toThrow(CheckpointError);
    await expect(loadModel(await checkpoint('badcfg', weights, { ...CONFIG_JSON, num_key_value_heads: 3 }))).rejects.toThrow(ConfigError);
    await expect(loadModel(join(dir, 'f32'), { dtype: 'f8' as 'f32' })).rejects.toThrow(/dtype must be/);
  });
});

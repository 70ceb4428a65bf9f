/**
 * Runtime robustness: bad inputs to forward / generate / score, non-finite weights and logits, tensors past
 * the device's binding limit, a GPU device lost mid-generation, uncaptured WebGPU errors.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LlamaConfig, openCheckpoint, writeSafetensors } from '@phalanx/checkpoint';
import { CheckpointError, DeviceError, DeviceLostError, InputError, NumericsError, Rng, getBackend, tensor } from '@phalanx/core';
import { type WebGPUBackend, createWebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model, loadModel } from '../src/index.js';
import { llama as llamaPreset } from '../src/presets/llama.js';
import { RANDOM_LLAMA_CONFIG, writeRandomLlama } from './checkpoint-dir.js';
import { configOf, randomWeights } from './harness.js';

const { backends, gpu, gpuSkipReason } = await testBackends();
let dir: string;
let llama: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phalanx-robustness-'));
  llama = join(dir, 'llama');
  await writeRandomLlama(llama);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('runtime inputs', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(llama, { backend: 'cpu' });
  });
  afterAll(() => model.dispose());
  const refused = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

  it('token ids outside the vocabulary or not integers are InputErrors naming the position', async () => {
    for (const bad of [256, -1, 1.5, NaN]) {
      expect(await refused(model.forward([[1, bad]]))).toEqual(new InputError(`inputIds[0][1] = ${bad} is not a token id of this model (0 <= id < 256)`));
      expect(await refused(model.generate({ inputIds: [bad], maxNewTokens: 1 }).complete())).toBeInstanceOf(InputError);
      expect(await refused(model.score([1, 2, bad]))).toBeInstanceOf(InputError);
    }
    expect(() => model.tokenizer!.decode([1, 256])).toThrow(InputError);
  });

  it('empty prompts are InputErrors', async () => {
    expect(await refused(model.forward([[]]))).toBeInstanceOf(InputError);
    expect(await refused(model.forward([]))).toBeInstanceOf(InputError);
    expect(await refused(model.generate({ inputIds: [], maxNewTokens: 1 }).complete())).toEqual(new InputError('generate: the prompt is empty; it needs at least one token (e.g. BOS)'));
    expect(await refused(model.generate({ prompt: '', maxNewTokens: 1 }).complete())).toBeInstanceOf(InputError); // this tokenizer adds no BOS
    expect(await refused(model.generate({ maxNewTokens: 1 }).complete())).toEqual(new InputError('generate: pass exactly one of inputIds, prompt, messages (got none)'));
    expect(await refused(model.score(''))).toBeInstanceOf(InputError);
  });

  it('maxNewTokens: 0 runs the prefill only, a bad count is an InputError, past the context is an InputError', async () => {
    expect((await model.generate({ inputIds: [1, 2], maxNewTokens: 0 }).complete()).tokenIds).toEqual([]);
    for (const bad of [-1, 1.5, NaN, Infinity]) {
      expect(await refused(model.generate({ inputIds: [1], maxNewTokens: bad }).complete())).toEqual(new InputError(`generate: maxNewTokens must be an integer >= 0, got ${bad}`));
    }
    expect(await refused(model.generate({ inputIds: [1, 2], maxNewTokens: 2 ** 40 }).complete())).toEqual(
      new InputError(`generate: prompt (2 tokens) + maxNewTokens (${2 ** 40}) exceeds the model's context of 256 tokens`),
    );
    expect((await model.generate({ inputIds: [1, 2], maxNewTokens: 254, temperature: 0 }).complete()).tokenIds).toHaveLength(254); // exactly the context
  });

  it('context beyond the maximum is an InputError from forward, a decode state and score', async () => {
    expect(await refused(model.forward([Array.from({ length: 257 }, () => 1)]))).toEqual(new InputError("forward: 257 tokens exceed the model's context of 256"));
    const state = model.createState(1, 256);
    (await model.forward([Array.from({ length: 256 }, () => 1)], { state })).logits.dispose();
    expect(await refused(model.forward([[1]], { state }))).toEqual(new InputError("forward: 257 tokens exceed the model's context of 256"));
    state.dispose();
    expect(() => model.createState(1, 257)).toThrow(InputError);
    expect(() => model.createState(0, 16)).toThrow(InputError);
    expect(await refused(model.score([1, 2, 3], { window: 257 }))).toBeInstanceOf(InputError);
  });
});

describe('non-finite weights', () => {
  /** The random llama with one weight of `tensor` set to `value`, stored as `dtype`. */
  async function poisoned(name: string, dtype: 'f32' | 'bf16', value: number, tensorName = 'model.layers.1.mlp.up_proj.weight'): Promise<string> {
    const d = join(dir, name);
    await writeRandomLlama(d);
    const file = join(d, 'model.safetensors');
    const ckpt = await openCheckpoint(file);
    const weights = await ckpt.readAll();
    await ckpt.close();
    const target = weights[tensorName]!;
    const values = Float32Array.from(await target.data());
    values[3 * target.shape[1]! + 5] = value; // element [3, 5]
    weights[tensorName] = tensor(values, target.shape, { dtype });
    await writeSafetensors(file, weights);
    return d;
  }

  it('checkWeights refuses a checkpoint holding NaN or Infinity, naming the tensor and the first bad element', async () => {
    for (const [dtype, value, what] of [['f32', NaN, 'NaN'], ['bf16', -Infinity, '-Infinity'], ['bf16', Infinity, 'Infinity']] as const) {
      const d = await poisoned(`nan-${dtype}-${what}`, dtype, value);
      const error = await loadModel(d, { backend: 'cpu', checkWeights: true }).then(() => undefined, (e: unknown) => e);
      expect(error).toEqual(new CheckpointError(join(d, 'model.safetensors'), `tensor 'model.layers.1.mlp.up_proj.weight': element 101 (at [3, 5]) is ${what}`));
    }
    (await loadModel(llama, { backend: 'cpu', checkWeights: true })).dispose(); // a clean checkpoint passes
  });

  it.each(backends.map((b) => [b.name, b] as const))('without checkWeights, generate on %s reports the non-finite logits with a NumericsError', async (_, backend) => {
    const model = await loadModel(await poisoned(`nan-gen-${backend.name}`, 'f32', NaN), { backend });
    const error = await model.generate({ inputIds: [1, 2, 3], maxNewTokens: 4 }).complete().then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(NumericsError);
    expect((error as Error).message).toMatch(/^generate: non-finite logits after 3 tokens \(sample logits: row 0 holds NaN or \+Infinity, first at index 0\)/);
    model.dispose();
  });

  it.each(backends.map((b) => [b.name, b] as const))('without checkWeights, score on %s reports the non-finite logits with a NumericsError', async (_, backend) => {
    const model = await loadModel(await poisoned(`inf-score-${backend.name}`, 'f32', Infinity), { backend });
    const error = await model.score([1, 2, 3, 4]).then(() => undefined, (e: unknown) => e);
    expect(error).toEqual(
      new NumericsError(
        'score: non-finite logits at position 0 (predicting ids[1]) in window 0 (ids 0 to 2; windows 0 to 0): the loss is NaN; the weights hold NaN or Infinity (loadModel with checkWeights finds them), or activations overflowed',
      ),
    );
    model.dispose();
  });

  describe.each(backends.map((b) => [b.name, b] as const))('score on %s', (_, backend) => {
    /** Untied, so an Infinity in the embedding of token 7 makes the logits NaN where 7 is read and after (through the norms and causal attention), not logit 7 everywhere. */
    const poison = 7;
    let model: Model;
    let ids: number[];
    beforeAll(() => {
      const config = configOf<LlamaConfig>({ ...RANDOM_LLAMA_CONFIG, tie_word_embeddings: false });
      const weights = randomWeights(llamaPreset, config, backend, 1, (name, shape, rng) => {
        if (name !== 'model.embed_tokens.weight') return undefined;
        const values = Array.from({ length: shape[0]! * shape[1]! }, () => rng.normal() / Math.sqrt(shape[1]!));
        values[poison * shape[1]! + 5] = Infinity;
        return values;
      });
      model = new Model(llamaPreset.build(config, weights), null, llamaPreset.maxContext(config), 'poisoned embedding');
      const rng = new Rng(4);
      ids = Array.from({ length: 20 }, () => 10 + Math.floor(rng.uniform() * 200));
    });
    afterAll(() => model.dispose());
    const refused = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);
    const message = (position: number, window: string) =>
      `score: non-finite logits at position ${position} (predicting ids[${position + 1}]) in window ${window}; windows 0 to 3): the loss is NaN; the weights hold NaN or Infinity (loadModel with checkWeights finds them), or activations overflowed`;

    // windows of 8 every 4 over 19 predictions: ids [0, 8) score positions 0..7, [4, 12) 8..11, [8, 16) 12..15, [12, 19) 16..18
    const windows = { window: 8, stride: 4 };

    it('scores finite logits without complaint', async () => {
      const clean = await model.score(ids, windows);
      expect(clean.logLikelihoods.every(Number.isFinite)).toBe(true);
    });

    it('names the first scored position whose logits are not finite, and its window', async () => {
      // one window per forward: 7 at position 12, the first position window 2 scores (window 3 also reads it, but is never reached)
      const at12 = ids.with(12, poison);
      expect(await refused(model.score(at12, { ...windows, batch: 1 }))).toEqual(new NumericsError(message(12, '2 (ids 8 to 15')));
      // windows 0..2 run as one batch of 3 rows, in which the rows and positions before 13 stay finite on the CPU
      const at13 = ids.with(13, poison);
      const error = await refused(model.score(at13, windows));
      const exact = new NumericsError(message(13, '2 (ids 8 to 15'));
      if (backend.name === 'cpu') expect(error).toEqual(exact);
      // WebGPU's tiled prefill attention multiplies the masked value of a NaN key by 0 (0 x NaN = NaN), so for now
      // every position of the batch is NaN there, and the first scored one is position 0
      else expect([exact, new NumericsError(message(0, '0 (ids 0 to 7'))]).toContainEqual(error);
    });
  });
});

describe.runIf(gpu)('GPU faults', () => {
  it("a tensor past the adapter's largest storage binding is refused before allocating, naming it", async () => {
    const small = await createWebGPUBackend();
    Object.assign(small, { limits: { ...small.limits, maxStorageBufferBindingSize: 16384 } }); // the embedding (256 x 32 f32) needs 32768
    const error = await loadModel(llama, { backend: small }).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceError);
    expect((error as Error).message).toBe(
      `${join(llama, 'model.safetensors')}: tensor 'model.embed_tokens.weight' [256, 32]: 8192 x f32 needs 32768 bytes, more than this adapter's largest storage binding (16384 bytes); split the tensor or use the CPU backend`,
    );
    small.dispose();
  });

  it('a device lost mid-generation is a DeviceLostError, and the model reloads on a fresh backend', async () => {
    const first = await getBackend('webgpu');
    const model = await loadModel(llama, { backend: 'webgpu' });
    expect(model.backend).toBe(first);
    const events: number[] = [];
    const error = await (async () => {
      for await (const { tokenId } of model.generate({ inputIds: [1, 2, 3], maxNewTokens: 20, temperature: 0 })) {
        events.push(tokenId);
        if (events.length === 2) (first as WebGPUBackend).device.destroy(); // as a driver reset would
      }
    })().then(() => undefined, (e: unknown) => e);
    expect(events).toHaveLength(2);
    expect(error).toBeInstanceOf(DeviceLostError);
    model.dispose();

    const again = await loadModel(llama, { backend: 'webgpu' });
    expect(again.backend).not.toBe(first); // a lost backend is never handed out again
    const summary = await again.generate({ inputIds: [1, 2, 3], maxNewTokens: 3, temperature: 0 }).complete();
    expect(summary.tokenIds).toHaveLength(3);
    again.dispose();
    again.backend.dispose();
  });

  it('an uncaptured WebGPU validation error during generation is surfaced as a DeviceError', async () => {
    const own = await createWebGPUBackend();
    const model = await loadModel(llama, { backend: own });
    const error = await (async () => {
      for await (const _ of model.generate({ inputIds: [1, 2, 3], maxNewTokens: 5, temperature: 0 })) {
        own.device.createBuffer({ size: 4, usage: 0 }); // invalid: no usage, reported asynchronously
      }
    })().then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceError);
    expect((error as Error).message).toMatch(/WebGPU reported 1 error/);
    model.dispose();
    own.dispose();
  });
});

// Without an adapter (outside CI), one visible skipped test says why.
if (!gpu) it.skip(`GPU fault tests: ${gpuSkipReason}`, () => {});

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '@phalanx/core';
import { describe, expect, it } from 'vitest';
import { type LlamaConfig, loadConfig, parseConfig } from '../src/index.js';
import { tempDir } from './helpers.js';

/** meta-llama/Llama-3.2-1B-Instruct's config.json as transformers 4.x writes it. */
const LLAMA_32_1B_V4 = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.45.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

/** The same model as transformers 5.x writes it: `rope_parameters` holds the theta, `dtype` replaces torch_dtype. */
const { rope_scaling: _s, rope_theta: _t, torch_dtype: _d, ...rest } = LLAMA_32_1B_V4;
const LLAMA_32_1B_V5 = {
  ...rest,
  dtype: 'bfloat16',
  transformers_version: '5.0.0',
  rope_parameters: { rope_type: 'llama3', rope_theta: 500000.0, factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192 },
};

const EXPECTED_LLAMA: Partial<LlamaConfig> = {
  preset: 'llama',
  vocabSize: 128256,
  hiddenSize: 2048,
  numHiddenLayers: 16,
  numAttentionHeads: 32,
  numKeyValueHeads: 8,
  headDim: 64,
  intermediateSize: 8192,
  hiddenAct: 'silu',
  rmsNormEps: 1e-5,
  maxPositionEmbeddings: 131072,
  tieWordEmbeddings: true,
  bosTokenId: 128000,
  eosTokenIds: [128001, 128008, 128009],
  padTokenId: null,
  dtype: 'bfloat16',
  rope: { theta: 500000, scaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } },
  warnings: [],
};

/** Expects a ConfigError naming `field`, with a message matching `pattern`. */
function expectConfigError(json: unknown, field: string, pattern: RegExp, preset?: 'llama' | 'spartacus' | 'nanohammer' | 'parcae') {
  let err: unknown;
  try {
    parseConfig(json, { file: 'config.json', preset });
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).field).toBe(field);
  expect((err as ConfigError).file).toBe('config.json');
  expect((err as Error).message).toMatch(pattern);
}

describe('parseConfig: llama', () => {
  it('normalises a transformers 4.x Llama-3.2-1B config', () => {
    const c = parseConfig(LLAMA_32_1B_V4);
    expect(c).toMatchObject(EXPECTED_LLAMA);
    // Bookkeeping fields are kept without warnings.
    expect(c.extra).toMatchObject({ architectures: ['LlamaForCausalLM'], use_cache: true });
  });

  it('gives the same config from transformers 5.x rope_parameters', () => {
    const c4 = parseConfig(LLAMA_32_1B_V4);
    const c5 = parseConfig(LLAMA_32_1B_V5);
    expect(c5).toMatchObject(EXPECTED_LLAMA);
    expect({ ...c5, extra: undefined }).toEqual({ ...c4, extra: undefined });
  });

  it('fills transformers defaults: kv heads = heads, head_dim = hidden / heads, plain RoPE at 10000', () => {
    const c = parseConfig({ model_type: 'llama', vocab_size: 100, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 128, eos_token_id: 3, rope_scaling: null }) as LlamaConfig;
    expect(c).toMatchObject({ numKeyValueHeads: 4, headDim: 16, rope: { theta: 10000, scaling: { type: 'default' } }, eosTokenIds: [3], tieWordEmbeddings: false, rmsNormEps: 1e-6 });
  });

  it('keeps unknown fields and reports them', () => {
    const c = parseConfig({ ...LLAMA_32_1B_V4, sliding_window: 4096, rope_scaling: { ...LLAMA_32_1B_V4.rope_scaling, mystery: 1 } });
    expect(c.extra).toMatchObject({ sliding_window: 4096, 'rope_scaling.mystery': 1 });
    expect(c.warnings.sort()).toEqual(['rope_scaling.mystery: unknown field, kept in extra', 'sliding_window: unknown field, kept in extra']);
  });

  it.each([
    ['a missing required field', { hidden_size: undefined }, 'hidden_size', /missing \(required/],
    ['a wrong type', { num_hidden_layers: '16' }, 'num_hidden_layers', /expected an integer >= 1, got "16"/],
    ['heads not dividing the hidden size', { head_dim: undefined, num_attention_heads: 30 }, 'num_attention_heads', /30 heads do not divide hidden_size 2048/],
    ['kv heads not dividing heads', { num_key_value_heads: 5 }, 'num_key_value_heads', /5 KV heads do not divide num_attention_heads 32/],
    ['an odd head_dim', { head_dim: 63 }, 'head_dim', /63 is odd/],
    ['a token id outside the vocabulary', { eos_token_id: [128001, 130000] }, 'eos_token_id', /130000 is outside the vocabulary/],
    ['a negative eps', { rms_norm_eps: -1 }, 'rms_norm_eps', /expected a positive number/],
    ['an unsupported rope type', { rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'rope_scaling.rope_type', /'yarn' is not supported/],
    ['a llama3 rope missing a factor', { rope_scaling: { rope_type: 'llama3', low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }, 'rope_scaling.factor', /missing/],
    ['a rope_theta disagreeing with rope_parameters', { rope_parameters: { ...LLAMA_32_1B_V5.rope_parameters, rope_theta: 10000 } }, 'rope_theta', /500000 disagrees with rope_parameters\.rope_theta 10000/],
  ])('refuses %s', (_what, change, field, pattern) => {
    const json: Record<string, unknown> = { ...LLAMA_32_1B_V4, ...change };
    for (const [k, v] of Object.entries(change)) if (v === undefined) delete json[k];
    expectConfigError(json, field, pattern);
  });

  it('refuses an unknown model_type unless a preset is given', () => {
    expectConfigError({ ...LLAMA_32_1B_V4, model_type: 'mistral' }, 'model_type', /'mistral' is not a known preset's/);
    expect(parseConfig({ ...LLAMA_32_1B_V4, model_type: 'mistral' }, { preset: 'llama' }).warnings).toEqual([
      "model_type 'mistral' is not 'llama'; parsed as llama because that preset was asked for",
    ]);
  });

  it('refuses an unknown preset', () => {
    expectConfigError(LLAMA_32_1B_V4, 'preset', /'gpt2' is not a preset/, 'gpt2' as 'llama');
  });

  it('loadConfig reads a file and names it in errors', async () => {
    const dir = await tempDir();
    const good = join(dir, 'config.json');
    await writeFile(good, JSON.stringify(LLAMA_32_1B_V5));
    expect(await loadConfig(good)).toMatchObject(EXPECTED_LLAMA);
    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"hidden_size": ');
    await expect(loadConfig(bad)).rejects.toThrow(new RegExp(`${bad.replaceAll('/', '\\/')}: \\(file\\): not a readable JSON file`));
  });
});

describe('parseConfig: spartacus, nanohammer, parcae', () => {
  /** Spartacus-1B-Instruct's config.json (spec 1.1). */
  const SPARTACUS = {
    architectures: ['MonoidForCausalLM'],
    model_type: 'monoid',
    auto_map: { AutoConfig: 'MonoidForCausalLM.MonoidConfig', AutoModelForCausalLM: 'MonoidForCausalLM.MonoidForCausalLM' },
    hidden_size: 2048, num_hidden_layers: 16, num_attention_heads: 32, head_dim: 64, intermediate_size: 8192,
    hidden_act: 'silu', mlp_bias: false, attention_bias: false, rms_norm_eps: 1e-5, initializer_range: 1 / 24,
    vocab_size: 128256, bos_token_id: 128000, eos_token_id: 128009, pad_token_id: 128009,
    max_position_embeddings: 131072, dtype: 'bfloat16', transformers_version: '4.57.6',
  };

  it('spartacus (model_type monoid): MHA, tied embeddings, no RoPE', () => {
    const c = parseConfig(SPARTACUS);
    expect(c).toMatchObject({ preset: 'spartacus', numAttentionHeads: 32, headDim: 64, tieWordEmbeddings: true, padTokenId: 128009, eosTokenIds: [128009], warnings: [] });
    expect(c).not.toHaveProperty('rope');
    expectConfigError({ ...SPARTACUS, num_key_value_heads: 8 }, 'num_key_value_heads', /monoid attention needs one per head/);
    // The extra line of commit a6cf12a, whatever it is, is kept and reported.
    expect(parseConfig({ ...SPARTACUS, decay_mode: 'x' }).warnings).toEqual(['decay_mode: unknown field, kept in extra']);
  });

  it('nanohammer: a Llama base plus the state stream', () => {
    const c = parseConfig({ ...LLAMA_32_1B_V4, model_type: 'nanohammer', tie_word_embeddings: false });
    expect(c).toMatchObject({ preset: 'nanohammer', numKeyValueHeads: 8, stateDim: 512, numStateHeads: 16, tieWordEmbeddings: false });
    expectConfigError({ ...LLAMA_32_1B_V4, model_type: 'nanohammer', state_dim: 500 }, 'num_state_heads', /16 heads do not divide state_dim 500/);
    // each step is a pass through the state cell: an absurd count would hang the first forward
    expectConfigError({ ...LLAMA_32_1B_V4, model_type: 'nanohammer', state_cell_steps: 2 ** 40 }, 'state_cell_steps', /expected an integer from 0 to 1024, got 1099511627776/);
  });

  const PARCAE = { model_type: 'parcae', vocab_size: 8192, hidden_size: 512, num_hidden_layers: 11, num_attention_heads: 8, num_key_value_heads: 4, rope_theta: 10000 };

  it('parcae: the #1728 defaults under Hugging Face names', () => {
    const c = parseConfig(PARCAE);
    expect(c).toMatchObject({
      preset: 'parcae', headDim: 64, intermediateSize: 2048, tieWordEmbeddings: true, logitSoftcap: 30, ropeDims: 16,
      rope: { theta: 10000, scaling: { type: 'default' } }, globalAttnLayers: [4, 9, 10], localWindowSplitLayer: 6,
      loopStart: 3, loopEnd: 5, numLoops: 2, parallelStartLayer: 8, xsaLastN: 11, attnOutGateWidth: 12, smearGateWidth: 12,
    });
    expect(parseConfig({ ...PARCAE, local_window_split_layer: -1 })).toMatchObject({ localWindowSplitLayer: 5 });
  });

  it.each([
    ['global_attn_layers', { global_attn_layers: [4, 11] }, /layer 11 is past the last layer \(10\)/],
    ['loop_end', { loop_start: 5, loop_end: 4 }, /4 is before loop_start 5/],
    ['rope_dims', { rope_dims: 65 }, /65 must be even and at most head_dim 64/],
    ['num_loops', { num_loops: 1025 }, /expected an integer from 0 to 1024, got 1025/],
    ['num_key_value_heads', { num_key_value_heads: 3 }, /3 KV heads do not divide/],
    ['vocab_size', { vocab_size: undefined }, /missing/],
  ])('parcae refuses a bad %s', (field, change, pattern) => {
    const json: Record<string, unknown> = { ...PARCAE, ...change };
    for (const [k, v] of Object.entries(change)) if (v === undefined) delete json[k];
    expectConfigError(json, field, pattern);
  });
});

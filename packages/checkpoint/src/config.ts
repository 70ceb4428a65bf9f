import { ConfigError } from '@phalanx/core';

export type Preset = 'llama' | 'spartacus' | 'nanohammer' | 'parcae';

/** The `model_type` each preset's config.json carries. */
export const MODEL_TYPES: Record<Preset, string> = { llama: 'llama', spartacus: 'monoid', nanohammer: 'nanohammer', parcae: 'parcae' };

/** RoPE as `@phalanx/ops` takes it (`rope(x, { theta, scaling })`). */
export interface RopeConfig {
  theta: number;
  scaling: { type: 'default' } | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };
}

interface Common {
  /** The file it was parsed from (`parseConfig`'s `file`), which presets name in their ConfigErrors. */
  file: string;
  vocabSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  headDim: number;
  intermediateSize: number;
  tieWordEmbeddings: boolean;
  /** `dtype` (transformers 5) or `torch_dtype` (4), e.g. "bfloat16". */
  dtype: string | undefined;
  /** Fields no preset field reads, kept as they were. */
  extra: Record<string, unknown>;
  /** One line per field in `extra` that is not a usual Hugging Face bookkeeping field. */
  warnings: string[];
}

/** The Llama fields (transformers' LlamaConfig), shared by llama, spartacus and nanohammer. */
interface LlamaLike extends Common {
  hiddenAct: string;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  attentionBias: boolean;
  mlpBias: boolean;
  bosTokenId: number | null;
  /** Always a list: Llama 3 instruct configs stop on several ids. */
  eosTokenIds: number[];
  padTokenId: number | null;
}

export interface LlamaConfig extends LlamaLike {
  preset: 'llama';
  numKeyValueHeads: number;
  rope: RopeConfig;
}

/** Spartacus (model_type "monoid"): Llama geometry, full multi-head attention, no positional encoding. */
export interface SpartacusConfig extends LlamaLike {
  preset: 'spartacus';
  /** `decay_variant` (spec 1.3.1); absent: read from the weights (decay_proj's shape and bias sign). */
  decayVariant: 'scalar-logsigmoid' | 'vector-neg-softplus' | 'vector-logsigmoid' | undefined;
}

/** NanoHammer: a Llama base plus a per-layer state stream of `stateDim` = `numStateHeads` x state head dim. */
export interface NanoHammerConfig extends LlamaLike {
  preset: 'nanohammer';
  numKeyValueHeads: number;
  rope: RopeConfig;
  stateDim: number;
  numStateHeads: number;
  /** How the state is read as complex numbers (`holographic_pairing`, default interleaved: view_as_complex). */
  holographicPairing: 'interleaved' | 'half';
  /** Dims per rotation block (`holographic_width`, default stateDim / numStateHeads). */
  holographicWidth: number;
  holographicBase: number;
  holographicNormalize: 'none' | 'mean' | 'sqrt';
  stateCellSteps: number;
  stateCellNorm: 'layer' | 'rms';
  stateCellActivation: 'gelu' | 'silu';
  stateCellEps: number;
  /** Width of the cell's MLP (`state_cell_hidden_size`, default 2 x the state head dim). */
  stateCellHiddenSize: number;
}

/** Parcae (parameter-golf #1728): the script's knobs under Hugging Face names where one exists. */
export interface ParcaeConfig extends Common {
  preset: 'parcae';
  numKeyValueHeads: number;
  rope: RopeConfig;
  /** Rotated dims per head on global layers (local layers rotate all of `headDim`). */
  ropeDims: number;
  logitSoftcap: number;
  globalAttnLayers: number[];
  localWindowSizeEarly: number;
  localWindowSizeLate: number;
  /** First layer with the late window (the script's -1 already resolved to numHiddenLayers / 2). */
  localWindowSplitLayer: number;
  numLoops: number;
  loopStart: number;
  loopEnd: number;
  parallelStartLayer: number;
  xsaLastN: number;
  attnOutGateWidth: number;
  smearGateWidth: number;
  /** xIELU's per-layer coefficients (`xielu_coefficients` rows [a_p, a_n, b_p, b_n]); undefined: the golf table (11 layers, @phalanx/ops XIELU_GOLF_COEFFICIENTS). */
  xieluCoefficients: { ap: number; an: number; bp: number; bn: number }[] | undefined;
  /** Of the weightless RMSNorms (default finfo(float32).eps, torch's F.rms_norm(eps=None) on f32). */
  rmsNormEps: number;
  /** Reset the SmearGate at document starts (`smear_gate_reset`, the #1851 fix; default false as in #1728). */
  smearGateReset: boolean;
  /** The document-start token the reset looks for (`bos_token_id`; required with smear_gate_reset). */
  bosTokenId: number | null;
  /** Longest context (`max_position_embeddings`; default 4096, the record's train and eval length). */
  maxPositionEmbeddings: number;
}

export type ModelConfig = LlamaConfig | SpartacusConfig | NanoHammerConfig | ParcaeConfig;

/** Fields transformers writes into every config that say nothing about the architecture: kept, not warned about. */
const BOOKKEEPING = new Set([
  'architectures', 'auto_map', '_name_or_path', 'transformers_version', 'initializer_range', 'use_cache', 'pretraining_tp',
  'attention_dropout', 'output_attentions', 'output_hidden_states', 'return_dict', 'id2label', 'label2id', 'problem_type',
  'is_decoder', 'is_encoder_decoder', 'add_cross_attention', 'chunk_size_feed_forward', 'tie_encoder_decoder', 'torchscript', 'use_return_dict',
]);


/**
 * Normalises a Hugging Face config.json into the typed config of its preset, which `preset` names or
 * `model_type` implies. Takes transformers 4.x (`rope_theta` + `rope_scaling`, `torch_dtype`) and 5.x
 * (`rope_parameters`, `dtype`). Missing required fields, wrong types and inconsistent fields raise a
 * ConfigError naming the file and the field; unknown fields are kept in `extra` and listed in `warnings`.
 */
export function parseConfig(json: unknown, options: { file?: string; preset?: Preset } = {}): ModelConfig {
  const file = options.file ?? 'config.json';
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError(file, '(file)', 'not a JSON object');
  const f = new Fields(file, json as Record<string, unknown>);
  const modelType = f.optional('model_type', 'a string', (v) => typeof v === 'string') as string | undefined;
  const fromType = (Object.keys(MODEL_TYPES) as Preset[]).find((p) => MODEL_TYPES[p] === modelType);
  const preset = options.preset ?? fromType;
  if (options.preset !== undefined && !Object.hasOwn(MODEL_TYPES, options.preset)) {
    throw new ConfigError(file, 'preset', `'${options.preset}' is not a preset (expected one of ${Object.keys(MODEL_TYPES).join(', ')})`);
  }
  if (!preset) {
    throw new ConfigError(file, 'model_type', `${modelType === undefined ? 'missing' : `'${modelType}' is not a known preset's`} (expected one of ${Object.values(MODEL_TYPES).join(', ')}, or pass a preset)`);
  }
  if (modelType !== undefined && modelType !== MODEL_TYPES[preset]) f.warnings.push(`model_type '${modelType}' is not '${MODEL_TYPES[preset]}'; parsed as ${preset} because that preset was asked for`);

  switch (preset) {
    case 'llama': {
      const base = llamaLike(f);
      return f.finish({ preset, ...base, ...attention(f, base), rope: rope(f, 10000) });
    }
    case 'spartacus': {
      const base = llamaLike(f, true);
      // Monoid attention has one state per query head: grouped KV heads would not fit it.
      const kv = f.optional('num_key_value_heads', 'a positive integer', isPositiveInt) as number | undefined;
      if (kv !== undefined && kv !== base.numAttentionHeads) throw new ConfigError(file, 'num_key_value_heads', `${kv}, but monoid attention needs one per head (${base.numAttentionHeads})`);
      const decayVariant = f.optional('decay_variant', "'scalar-logsigmoid', 'vector-neg-softplus' or 'vector-logsigmoid'", (v) => ['scalar-logsigmoid', 'vector-neg-softplus', 'vector-logsigmoid'].includes(v as string)) as SpartacusConfig['decayVariant'];
      return f.finish({ preset, ...base, decayVariant });
    }
    case 'nanohammer': {
      const llama = llamaLike(f);
      const base = { ...llama, ...attention(f, llama), rope: rope(f, 10000) };
      const stateDim = f.int('state_dim', 512);
      const numStateHeads = f.int('num_state_heads', 16);
      if (stateDim % numStateHeads !== 0) throw new ConfigError(file, 'num_state_heads', `${numStateHeads} heads do not divide state_dim ${stateDim}`);
      const holographicWidth = f.int('holographic_width', stateDim / numStateHeads);
      if (holographicWidth % 2 !== 0 || stateDim % holographicWidth !== 0) throw new ConfigError(file, 'holographic_width', `${holographicWidth} must be even and divide state_dim ${stateDim}`);
      return f.finish({
        preset,
        ...base,
        stateDim,
        numStateHeads,
        holographicPairing: f.choice('holographic_pairing', ['interleaved', 'half'] as const, 'interleaved'),
        holographicWidth,
        holographicBase: f.positive('holographic_base', 10000),
        holographicNormalize: f.choice('holographic_normalize', ['none', 'mean', 'sqrt'] as const, 'none'),
        stateCellSteps: f.int('state_cell_steps', 1, 0, MAX_REPEATS),
        stateCellNorm: f.choice('state_cell_norm', ['layer', 'rms'] as const, 'layer'),
        stateCellActivation: f.choice('state_cell_activation', ['gelu', 'silu'] as const, 'gelu'),
        stateCellEps: f.positive('state_cell_eps', 1e-5),
        stateCellHiddenSize: f.int('state_cell_hidden_size', (2 * stateDim) / numStateHeads),
      });
    }
    case 'parcae':
      return f.finish(parcae(f));
  }
}

/** The geometry every preset shares; `head_dim` defaults to hidden_size / num_attention_heads, which must divide. */
function common(f: Fields, tieDefault: boolean, mlpDefault?: (hidden: number) => number) {
  const vocabSize = f.int('vocab_size');
  const hiddenSize = f.int('hidden_size');
  const numHiddenLayers = f.int('num_hidden_layers');
  const numAttentionHeads = f.int('num_attention_heads');
  const explicitHeadDim = f.optional('head_dim', 'a positive integer', isPositiveInt) as number | undefined;
  if (explicitHeadDim === undefined && hiddenSize % numAttentionHeads !== 0) {
    throw new ConfigError(f.file, 'num_attention_heads', `${numAttentionHeads} heads do not divide hidden_size ${hiddenSize} (and no head_dim is given)`);
  }
  const intermediateSize = f.int('intermediate_size', mlpDefault?.(hiddenSize));
  const tieWordEmbeddings = f.bool('tie_word_embeddings', tieDefault);
  const dtype = (f.optional('dtype', 'a string', isString) ?? f.optional('torch_dtype', 'a string', isString)) as string | undefined;
  return { file: f.file, vocabSize, hiddenSize, numHiddenLayers, numAttentionHeads, headDim: explicitHeadDim ?? hiddenSize / numAttentionHeads, intermediateSize, tieWordEmbeddings, dtype };
}

/** transformers' LlamaConfig fields and defaults (Spartacus ties its embeddings by default). */
function llamaLike(f: Fields, tieDefault = false) {
  const c = common(f, tieDefault);
  const tokenId = (field: string, fallback: number | null) => {
    const id = f.optional(field, 'a token id or null', (v) => v === null || isTokenId(v)) as number | null | undefined;
    return checkTokenId(f.file, field, id === undefined ? fallback : id, c.vocabSize);
  };
  const eos = f.optional('eos_token_id', 'a token id or a list of them', (v) => isTokenId(v) || (Array.isArray(v) && v.length > 0 && v.every(isTokenId))) as number | number[] | undefined;
  const eosTokenIds = eos === undefined ? [2] : Array.isArray(eos) ? eos : [eos];
  eosTokenIds.forEach((id) => checkTokenId(f.file, 'eos_token_id', id, c.vocabSize));
  return {
    ...c,
    hiddenAct: f.string('hidden_act', 'silu'),
    rmsNormEps: f.positive('rms_norm_eps', 1e-6),
    maxPositionEmbeddings: f.int('max_position_embeddings', 2048),
    attentionBias: f.bool('attention_bias', false),
    mlpBias: f.bool('mlp_bias', false),
    bosTokenId: tokenId('bos_token_id', 1),
    eosTokenIds,
    padTokenId: tokenId('pad_token_id', null),
  };
}

/** Grouped-query attention: num_key_value_heads (default: one per head) must divide num_attention_heads; RoPE needs an even head_dim. */
function attention(f: Fields, c: { numAttentionHeads: number; headDim: number }) {
  const heads = c.numAttentionHeads;
  const numKeyValueHeads = f.int('num_key_value_heads', heads);
  if (heads % numKeyValueHeads !== 0) throw new ConfigError(f.file, 'num_key_value_heads', `${numKeyValueHeads} KV heads do not divide num_attention_heads ${heads}`);
  if (c.headDim % 2 !== 0) throw new ConfigError(f.file, 'head_dim', `${c.headDim} is odd; RoPE rotates pairs of dims`);
  return { numKeyValueHeads };
}

/**
 * RoPE from transformers 5 (`rope_parameters` with `rope_theta` inside) or 4 (`rope_theta` plus
 * `rope_scaling`, whose type key is `rope_type` or the older `type`). Both present must agree.
 */
function rope(f: Fields, defaultTheta: number): RopeConfig {
  const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  const params = f.optional('rope_parameters', 'an object', isObject) as Record<string, unknown> | undefined;
  const scaling = f.optional('rope_scaling', 'an object or null', (v) => v === null || isObject(v)) as Record<string, unknown> | null | undefined;
  const topTheta = f.optional('rope_theta', 'a positive number', isPositive) as number | undefined;
  const [where, p] = params ? ['rope_parameters', params] : ['rope_scaling', scaling ?? {}];
  const sub = new Fields(f.file, p, `${where}.`);
  const theta = sub.positive('rope_theta', topTheta ?? defaultTheta);
  if (topTheta !== undefined && theta !== topTheta) throw new ConfigError(f.file, 'rope_theta', `${topTheta} disagrees with ${where}.rope_theta ${theta}`);
  const type = (sub.optional('rope_type', 'a string', isString) ?? sub.optional('type', 'a string', isString) ?? 'default') as string;
  if (params && scaling) {
    const legacy = scaling.rope_type ?? scaling.type ?? 'default';
    if (legacy !== type) throw new ConfigError(f.file, 'rope_scaling', `type '${String(legacy)}' disagrees with rope_parameters.rope_type '${type}'`);
  }
  let result: RopeConfig;
  if (type === 'default') result = { theta, scaling: { type: 'default' } };
  else if (type === 'llama3') {
    const lowFreqFactor = sub.positive('low_freq_factor');
    const highFreqFactor = sub.positive('high_freq_factor');
    if (highFreqFactor <= lowFreqFactor) throw new ConfigError(f.file, `${where}.high_freq_factor`, `${highFreqFactor} must be above low_freq_factor ${lowFreqFactor}`);
    const scaling = { type, factor: sub.positive('factor'), lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: sub.int('original_max_position_embeddings') } as const;
    result = { theta, scaling };
  } else throw new ConfigError(f.file, `${where}.rope_type`, `'${type}' is not supported (expected 'default' or 'llama3')`);
  // Unknown keys inside the RoPE object are kept and reported with the top-level ones.
  const leftover = sub.finish({});
  Object.assign(f.extra, leftover.extra);
  f.warnings.push(...leftover.warnings);
  return result;
}

function parcae(f: Fields): Omit<ParcaeConfig, 'extra' | 'warnings'> {
  const c = common(f, true, (hidden) => 4 * hidden); // the script's mlp_mult 4
  const { numKeyValueHeads } = attention(f, c);
  const L = c.numHiddenLayers;
  const layerIndex = (field: string, fallback: number, hi = L - 1) => {
    const v = f.int(field, fallback, 0);
    if (v > hi) throw new ConfigError(f.file, field, `${v} is past the last layer (${hi}; num_hidden_layers is ${L})`);
    return v;
  };
  const ropeDims = f.int('rope_dims', 16);
  if (ropeDims % 2 !== 0 || ropeDims > c.headDim) throw new ConfigError(f.file, 'rope_dims', `${ropeDims} must be even and at most head_dim ${c.headDim}`);
  const globalAttnLayers = f.intList('global_attn_layers', [4, 9, 10]);
  const badLayer = globalAttnLayers.find((l) => l >= L);
  if (badLayer !== undefined) throw new ConfigError(f.file, 'global_attn_layers', `layer ${badLayer} is past the last layer (${L - 1})`);
  const split = f.int('local_window_split_layer', 6, -1);
  const localWindowSplitLayer = split === -1 ? Math.floor(L / 2) : split; // -1 means halfway, as in the script
  if (localWindowSplitLayer > L) throw new ConfigError(f.file, 'local_window_split_layer', `${split} is past num_hidden_layers ${L}`);
  const loopStart = layerIndex('loop_start', 3);
  const loopEnd = layerIndex('loop_end', 5);
  if (loopEnd < loopStart) throw new ConfigError(f.file, 'loop_end', `${loopEnd} is before loop_start ${loopStart}`);
  const smearGateReset = f.bool('smear_gate_reset', false);
  const bos = f.optional('bos_token_id', 'a token id or null', (v) => v === null || isTokenId(v)) as number | null | undefined;
  const bosTokenId = checkTokenId(f.file, 'bos_token_id', bos ?? null, c.vocabSize);
  if (smearGateReset && bosTokenId === null) throw new ConfigError(f.file, 'bos_token_id', 'missing: smear_gate_reset needs the document-start token id');
  const gateWidth = (field: string) => {
    const w = f.int(field, 12, 0);
    if (w > c.hiddenSize) throw new ConfigError(f.file, field, `${w} is wider than hidden_size ${c.hiddenSize}`);
    return w;
  };
  return {
    preset: 'parcae',
    ...c,
    numKeyValueHeads,
    rope: rope(f, 10000),
    ropeDims,
    logitSoftcap: f.positive('logit_softcap', 30),
    globalAttnLayers,
    localWindowSizeEarly: f.int('local_window_size_early', 512),
    localWindowSizeLate: f.int('local_window_size_late', 1024),
    localWindowSplitLayer,
    numLoops: f.int('num_loops', 2, 0, MAX_REPEATS),
    loopStart,
    loopEnd,
    parallelStartLayer: layerIndex('parallel_start_layer', 8, L),
    xsaLastN: layerIndex('xsa_last_n', L, L),
    attnOutGateWidth: gateWidth('attn_out_gate_width'),
    smearGateWidth: gateWidth('smear_gate_width'),
    xieluCoefficients: xielu(f, L),
    rmsNormEps: f.positive('rms_norm_eps', 1.1920928955078125e-7),
    smearGateReset,
    bosTokenId,
    maxPositionEmbeddings: f.int('max_position_embeddings', 4096),
  };
}

/** `xielu_coefficients`: one [a_p, a_n, b_p, b_n] per layer; absent means the golf table, which has 11 layers. */
function xielu(f: Fields, L: number): ParcaeConfig['xieluCoefficients'] {
  const ok = (v: unknown) => Array.isArray(v) && v.length === L && v.every((r) => Array.isArray(r) && r.length === 4 && r.every((x) => typeof x === 'number' && Number.isFinite(x)));
  const rows = f.optional('xielu_coefficients', `a list of ${L} [a_p, a_n, b_p, b_n] rows (one per layer)`, ok) as number[][] | undefined;
  if (rows) return rows.map(([ap, an, bp, bn]) => ({ ap: ap!, an: an!, bp: bp!, bn: bn! }));
  if (L !== GOLF_LAYERS) throw new ConfigError(f.file, 'xielu_coefficients', `missing: required unless num_hidden_layers is ${GOLF_LAYERS} (the golf table); expected ${L} [a_p, a_n, b_p, b_n] rows`);
  return undefined;
}

/** Repeats of a block per token (parcae's `num_loops`, nanohammer's `state_cell_steps`): each is one more pass, so an absurd count would hang the first forward. */
const MAX_REPEATS = 1024;

/** Layers of the golf record, whose xIELU table (@phalanx/ops XIELU_GOLF_COEFFICIENTS) is the default. */
const GOLF_LAYERS = 11;

const isString = (v: unknown) => typeof v === 'string';
const isPositive = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0;
const isPositiveInt = (v: unknown) => Number.isSafeInteger(v) && (v as number) > 0;
const isTokenId = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

function checkTokenId(file: string, field: string, id: number | null, vocabSize: number): number | null {
  if (id !== null && id >= vocabSize) throw new ConfigError(file, field, `${id} is outside the vocabulary (vocab_size ${vocabSize})`);
  return id;
}

/** Typed access to a config object's fields; remembers which were read so the rest can be reported. */
class Fields {
  readonly read = new Set<string>();
  readonly extra: Record<string, unknown> = {};
  readonly warnings: string[] = [];

  constructor(
    readonly file: string,
    private readonly json: Record<string, unknown>,
    private readonly prefix = '',
  ) {}

  /** The value of `field`, checked with `ok`, or undefined when absent. */
  optional(field: string, expected: string, ok: (v: unknown) => boolean): unknown {
    this.read.add(field);
    if (!Object.hasOwn(this.json, field)) return undefined;
    const v = this.json[field];
    if (!ok(v)) throw new ConfigError(this.file, this.prefix + field, `expected ${expected}, got ${JSON.stringify(v)}`);
    return v;
  }

  private get<T>(field: string, expected: string, ok: (v: unknown) => boolean, fallback: T | undefined): T {
    const v = this.optional(field, expected, ok);
    if (v !== undefined) return v as T;
    if (fallback === undefined) throw new ConfigError(this.file, this.prefix + field, `missing (required, ${expected})`);
    return fallback;
  }

  /** An integer >= `min` (default 1) and <= `max`, when given. */
  int(field: string, fallback?: number, min = 1, max?: number): number {
    const expected = max === undefined ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
    return this.get(field, expected, (v) => Number.isSafeInteger(v) && (v as number) >= min && (max === undefined || (v as number) <= max), fallback);
  }

  positive(field: string, fallback?: number): number {
    return this.get(field, 'a positive number', isPositive, fallback);
  }

  bool(field: string, fallback: boolean): boolean {
    return this.get(field, 'true or false', (v) => typeof v === 'boolean', fallback);
  }

  string(field: string, fallback: string): string {
    return this.get(field, 'a string', isString, fallback);
  }

  /** One of `allowed` (strings). */
  choice<T extends string>(field: string, allowed: readonly T[], fallback: T): T {
    return this.get(field, allowed.map((a) => `'${a}'`).join(' or '), (v) => allowed.includes(v as T), fallback);
  }

  intList(field: string, fallback: number[]): number[] {
    const list = this.get<number[]>(field, 'a list of distinct non-negative integers', (v) => Array.isArray(v) && v.every(isTokenId) && new Set(v).size === v.length, fallback);
    return [...list];
  }

  /** Attaches the unread fields (kept in `extra`, warned about unless bookkeeping) to the parsed config. */
  finish<T extends object>(config: T): T & { extra: Record<string, unknown>; warnings: string[] } {
    for (const [k, v] of Object.entries(this.json)) {
      if (this.read.has(k)) continue;
      this.extra[this.prefix + k] = v;
      if (!BOOKKEEPING.has(k)) this.warnings.push(`${this.prefix}${k}: unknown field, kept in extra`);
    }
    return { ...config, extra: this.extra, warnings: this.warnings };
  }
}

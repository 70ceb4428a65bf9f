/**
 * Layers every model preset needs: norms, the softmax family, embedding, activations, softcap, residual
 * mixes and cross-entropy. Each op validates its inputs, works out its attributes and runs on the inputs'
 * backend. Inputs may be f32, f16 or bf16; outputs are f32.
 *
 * @example
 * import { tensor } from '@phalanx/core';
 * import { rmsNorm, softmax } from '@phalanx/ops';
 * const x = tensor([1, 2, 3, 4], [2, 2]);
 * const y = await softmax(await rmsNorm(x, null));
 */
import { DTypeError, InputError, ShapeError, assertFloat, formatShape, runKernel, sameShape, sizeOf, Tensor, tensor } from '@phalanx/core';
import './cpu/layers.js';
import './webgpu/layers.js';

/** Attributes of a row-wise op: the input read as [rows, d], reduced or normalized over d (the last dim). */
export interface RowAttrs {
  rows: number;
  d: number;
  outShape: number[];
}

export interface RmsNormAttrs extends RowAttrs {
  eps: number;
  weightOffset: number;
  /** Inputs are [x, weight] when true, [x] when false. */
  hasWeight: boolean;
  /** Multiplies the output (after the weight); 1 for none. */
  scale: number;
  /** Applied last; null for none. */
  activation: RmsNormActivation | null;
}

/** The activations rmsNorm can apply to its output. */
export type RmsNormActivation = 'silu';

export interface LayerNormAttrs extends RowAttrs {
  eps: number;
  /** Inputs are [x, weight?, bias?], in that order, as these say. */
  hasWeight: boolean;
  hasBias: boolean;
}

export interface CrossEntropyAttrs extends RowAttrs {
  ignoreIndex: number;
}

export interface EmbeddingAttrs {
  vocab: number;
  d: number;
  outShape: number[];
}

export interface GeluAttrs {
  approximate: 'none' | 'tanh';
}

/** xIELU's coefficients: a_p u² + b_p u for u > 0, a_n u² + b_n u for u <= 0. */
export interface XieluCoefficients {
  ap: number;
  an: number;
  bp: number;
  bn: number;
}

export interface SoftcapAttrs {
  cap: number;
}

export interface LerpAttrs {
  t: number;
}

export interface MixAttrs {
  /** Length of the per-channel weights (the last dim). */
  d: number;
}

/** The fixed per-layer xIELU coefficients of the parameter-golf record (spec parcae-golf §3.5), layers 0..10. */
export const XIELU_GOLF_COEFFICIENTS: readonly Readonly<XieluCoefficients>[] = Object.freeze(
  [
    [0.103, 0.39, 0.126, 0.785],
    [0.196, 0.578, 0.07, 0.638],
    [1.415, 0.363, 0.0, 0.405],
    [1.196, 0.491, 0.0, 0.377],
    [1.485, 0.536, 0.0, 0.314],
    [1.546, 0.548, 0.002, 0.289],
    [1.337, 0.579, 0.017, 0.313],
    [1.727, 0.983, 0.067, 0.571],
    [1.495, 1.058, 0.005, 0.42],
    [0.988, 0.935, 0.058, 0.286],
    [0.917, 0.845, 0.568, 0.52],
  ].map(([ap, an, bp, bn]) => Object.freeze({ ap: ap!, an: an!, bp: bp!, bn: bn! })),
);

// ---- validation ----

const nameOf = (t: Tensor, fallback: string) => t.name ?? fallback;

/** A float tensor of exactly the `expected` shape; `why` (made only for the error) says where that shape comes from. */
function checkShape(op: string, t: Tensor, name: string, expected: readonly number[], why: () => string): void {
  assertFloat(op, t, name);
  if (!sameShape(t.shape, expected)) throw new ShapeError(`${op}: ${nameOf(t, name)} has shape ${formatShape(t.shape)}, expected ${formatShape(expected)} (${why()})`);
}

function checkNumber(op: string, name: string, v: number): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new InputError(`${op}: ${name} must be a finite number, got ${v}`);
}

/** Validates a float input of rank >= 1 with a non-empty last dim and views it as [rows, d]. */
function rowAttrs(op: string, x: Tensor, name = 'x'): RowAttrs {
  assertFloat(op, x, name);
  const d = x.shape[x.rank - 1] ?? 0;
  if (d === 0) throw new ShapeError(`${op}: ${nameOf(x, name)} has shape ${formatShape(x.shape)}, expected [..., d] with d >= 1`);
  return { rows: x.size / d, d, outShape: [...x.shape] };
}

/** A per-channel vector of the last dim, when given. */
function checkChannel(op: string, v: Tensor | null, name: string, x: Tensor, d: number): void {
  if (v) checkShape(op, v, name, [d], () => `the last dim of ${nameOf(x, 'x')} ${formatShape(x.shape)}`);
}

function checkIdTensor(op: string, ids: Tensor, name: string): void {
  if (ids.dtype !== 'i32' && ids.dtype !== 'u32') throw new DTypeError(`${op}: ${nameOf(ids, name)} is ${ids.dtype}, expected i32 or u32`);
}

/** Host ids as an i32 tensor on `like`'s backend, after checking each is an integer in [0, limit) (or `ignore`). */
function hostIds(op: string, ids: ArrayLike<number>, what: string, limit: number, shape: readonly number[], like: Tensor, ignore?: number): Tensor {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id === ignore) continue;
    if (!Number.isInteger(id) || id < 0 || id >= limit) throw new InputError(`${op}: ${what} ${id} at position ${i} is not an integer in [0, ${limit})`);
  }
  return tensor(Int32Array.from(ids), shape, { dtype: 'i32', backend: like.backend, name: what });
}

async function one(op: string, inputs: Tensor[], attrs: unknown): Promise<Tensor> {
  return (await runKernel(op, inputs, attrs))[0]!;
}

// ---- norms ----

/**
 * RMSNorm over the last dim: x / sqrt(mean(x²) + eps) * (weight + weightOffset). A null weight is the
 * weightless form (no per-channel weight at all), so `weightOffset` then must stay 0. `scale` multiplies the
 * result and `activation` (e.g. 'silu') is applied last: elementwise follow-ups done in the norm's dispatch.
 */
export async function rmsNorm(x: Tensor, weight: Tensor | null, options: { eps?: number; weightOffset?: number; scale?: number; activation?: RmsNormActivation } = {}): Promise<Tensor> {
  const { eps = 1e-6, weightOffset = 0, scale = 1, activation } = options;
  const row = rowAttrs('rmsNorm', x);
  checkChannel('rmsNorm', weight, 'weight', x, row.d);
  checkNumber('rmsNorm', 'eps', eps);
  checkNumber('rmsNorm', 'weightOffset', weightOffset);
  checkNumber('rmsNorm', 'scale', scale);
  if (!weight && weightOffset !== 0) throw new InputError(`rmsNorm: weightOffset ${weightOffset} needs a weight (a null weight is the weightless form)`);
  if (activation !== undefined && activation !== 'silu') throw new InputError(`rmsNorm: unknown activation '${activation}'; expected 'silu' or none`);
  const attrs: RmsNormAttrs = { ...row, eps, weightOffset, hasWeight: weight !== null, scale, activation: activation ?? null };
  return one('rmsNorm', weight ? [x, weight] : [x], attrs);
}

/** LayerNorm over the last dim with the biased variance: (x - mean) / sqrt(var + eps) * weight + bias. */
export async function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, options: { eps?: number } = {}): Promise<Tensor> {
  const { eps = 1e-5 } = options;
  const row = rowAttrs('layerNorm', x);
  checkChannel('layerNorm', weight, 'weight', x, row.d);
  checkChannel('layerNorm', bias, 'bias', x, row.d);
  checkNumber('layerNorm', 'eps', eps);
  const attrs: LayerNormAttrs = { ...row, eps, hasWeight: weight !== null, hasBias: bias !== null };
  return one('layerNorm', [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])], attrs);
}

// ---- softmax family (all numerically stable: the row max is subtracted before exp) ----

/** Softmax over the last dim. */
export async function softmax(x: Tensor): Promise<Tensor> {
  return one('softmax', [x], rowAttrs('softmax', x));
}

/** log(softmax(x)) over the last dim, computed as (x - max) - log(sum(exp(x - max))). */
export async function logSoftmax(x: Tensor): Promise<Tensor> {
  return one('logSoftmax', [x], rowAttrs('logSoftmax', x));
}

/** log(sum(exp(x))) over the last dim; the last dim is dropped, or kept as 1 with `keepDims`. */
export async function logsumexp(x: Tensor, options: { keepDims?: boolean } = {}): Promise<Tensor> {
  const row = rowAttrs('logsumexp', x);
  const lead = x.shape.slice(0, -1);
  return one('logsumexp', [x], { ...row, outShape: options.keepDims ? [...lead, 1] : lead } satisfies RowAttrs);
}

/**
 * Per-token cross-entropy of logits [N, V] against targets [N]: logsumexp(row) - row[target], 0 where the
 * target is `ignoreIndex`. Host targets are checked (an out-of-range one is an InputError); a target tensor
 * (i32 or u32) is not read back to check, and an out-of-range target there gives NaN for its token.
 */
export async function crossEntropy(logits: Tensor, targets: ArrayLike<number> | Tensor, options: { ignoreIndex?: number } = {}): Promise<Tensor> {
  const { ignoreIndex = -100 } = options;
  if (logits.rank !== 2) throw new ShapeError(`crossEntropy: ${nameOf(logits, 'logits')} has shape ${formatShape(logits.shape)}, expected [N, V]`);
  const row = rowAttrs('crossEntropy', logits, 'logits');
  if (!Number.isInteger(ignoreIndex)) throw new InputError(`crossEntropy: ignoreIndex must be an integer, got ${ignoreIndex}`);
  const n = logits.shape[0]!;
  const attrs: CrossEntropyAttrs = { ...row, outShape: [n], ignoreIndex };
  if (targets instanceof Tensor) {
    checkIdTensor('crossEntropy', targets, 'targets');
    if (!sameShape(targets.shape, [n])) throw new ShapeError(`crossEntropy: ${nameOf(targets, 'targets')} has shape ${formatShape(targets.shape)}, expected [${n}] (the rows of ${nameOf(logits, 'logits')} ${formatShape(logits.shape)})`);
    return one('crossEntropy', [logits, targets], attrs);
  }
  if (targets.length !== n) throw new ShapeError(`crossEntropy: targets has ${targets.length} entries, expected ${n} (the rows of ${nameOf(logits, 'logits')} ${formatShape(logits.shape)})`);
  const t = hostIds('crossEntropy', targets, 'target', row.d, [n], logits, ignoreIndex);
  try {
    return await one('crossEntropy', [logits, t], attrs);
  } finally {
    t.dispose();
  }
}

// ---- embedding ----

/**
 * Rows of `weight` [V, D] gathered by `ids`: [...ids.shape, D] in f32. Host ids (shape [n], or
 * `options.shape`) are checked to be integers in [0, V). A tensor of ids (i32 or u32) is not read back to
 * check: an out-of-range id there gives a row of NaN (the kernels never read outside `weight`).
 */
export async function embedding(weight: Tensor, ids: ArrayLike<number> | Tensor, options: { shape?: readonly number[] } = {}): Promise<Tensor> {
  assertFloat('embedding', weight, 'weight');
  if (weight.rank !== 2 || weight.shape[0] === 0) throw new ShapeError(`embedding: ${nameOf(weight, 'weight')} has shape ${formatShape(weight.shape)}, expected [V, D] with V >= 1`);
  const [vocab, d] = weight.shape as [number, number];
  if (ids instanceof Tensor) {
    checkIdTensor('embedding', ids, 'ids');
    return one('embedding', [weight, ids], { vocab, d, outShape: [...ids.shape, d] } satisfies EmbeddingAttrs);
  }
  const shape = options.shape ?? [ids.length];
  if (sizeOf(shape) !== ids.length) throw new ShapeError(`embedding: options.shape ${formatShape(shape)} holds ${sizeOf(shape)} ids, got ${ids.length}`);
  const t = hostIds('embedding', ids, 'id', vocab, shape, weight);
  try {
    return await one('embedding', [weight, t], { vocab, d, outShape: [...shape, d] } satisfies EmbeddingAttrs);
  } finally {
    t.dispose();
  }
}

// ---- activations ----

/** x * sigmoid(x). */
export async function silu(x: Tensor): Promise<Tensor> {
  assertFloat('silu', x, 'x');
  return one('silu', [x], {});
}

/** GELU: 0.5 x (1 + erf(x / √2)), or with `approximate: 'tanh'` 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))). */
export async function gelu(x: Tensor, options: { approximate?: 'none' | 'tanh' } = {}): Promise<Tensor> {
  const { approximate = 'none' } = options;
  assertFloat('gelu', x, 'x');
  if (approximate !== 'none' && approximate !== 'tanh') throw new InputError(`gelu: approximate must be 'none' or 'tanh', got '${approximate}'`);
  return one('gelu', [x], { approximate } satisfies GeluAttrs);
}

/** silu(gate) * up, for gate and up of one shape. */
export async function swiglu(gate: Tensor, up: Tensor): Promise<Tensor> {
  assertFloat('swiglu', gate, 'gate');
  checkShape('swiglu', up, 'up', gate.shape, () => `the shape of ${nameOf(gate, 'gate')}`);
  return one('swiglu', [gate, up], {});
}

/** The piecewise-quadratic xIELU of spec §3.5: ap u² + bp u for u > 0, an u² + bn u for u <= 0. */
export async function xielu(x: Tensor, coefficients: XieluCoefficients): Promise<Tensor> {
  assertFloat('xielu', x, 'x');
  const { ap, an, bp, bn } = coefficients;
  for (const [k, v] of Object.entries({ ap, an, bp, bn })) checkNumber('xielu', k, v);
  return one('xielu', [x], { ap, an, bp, bn } satisfies XieluCoefficients);
}

/** cap * tanh(x / cap): squashes x smoothly into (-cap, cap). */
export async function softcap(x: Tensor, cap: number): Promise<Tensor> {
  assertFloat('softcap', x, 'x');
  checkNumber('softcap', 'cap', cap);
  if (cap <= 0) throw new InputError(`softcap: cap must be > 0, got ${cap}`);
  return one('softcap', [x], { cap } satisfies SoftcapAttrs);
}

// ---- residual mixes ----

/** a + t * (b - a), for a and b of one shape. */
export async function lerp(a: Tensor, b: Tensor, t: number): Promise<Tensor> {
  assertFloat('lerp', a, 'a');
  checkShape('lerp', b, 'b', a.shape, () => `the shape of ${nameOf(a, 'a')}`);
  checkNumber('lerp', 't', t);
  return one('lerp', [a, b], { t } satisfies LerpAttrs);
}

/** wa * a + wb * b per channel: a and b of one shape [..., D], wa and wb [D]. */
export async function mix(a: Tensor, b: Tensor, wa: Tensor, wb: Tensor): Promise<Tensor> {
  const { d } = rowAttrs('mix', a, 'a');
  checkShape('mix', b, 'b', a.shape, () => `the shape of ${nameOf(a, 'a')}`);
  checkChannel('mix', wa, 'wa', a, d);
  checkChannel('mix', wb, 'wb', a, d);
  return one('mix', [a, b, wa, wb], { d } satisfies MixAttrs);
}


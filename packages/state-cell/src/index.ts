/**
 * @phalanx/state-cell: NanoHammer's multi-head Euler state-update cell (spec 2.6, a derived spec). The state
 * row S (D = heads * d values) is refined by K steps of
 *   S_h <- S_h + eta_h * MLP(Norm_pre(S)_h)  for each head h,   then   S <- Norm_post(S)
 * (a fixed-point iteration of one Euler step). Importing the package registers its kernels on the CPU and
 * WebGPU; on WebGPU the whole cell, every step and head, is one dispatch (one workgroup per row).
 *
 * @example
 * import { stateCell, loadStateCellParams } from '@phalanx/state-cell';
 * const params = loadStateCellParams(checkpointTensors, 'model.layers.3.state_cell.');
 * const next = await stateCell(S, params, { heads: 16, steps: 1, norm: 'layer' }); // S: [..., 512]
 */
import { CheckpointError, InputError, ShapeError, type Tensor, assertFloat, formatShape, runKernel } from '@phalanx/core';
import './cpu.js';
import './webgpu.js';

export interface NormParams {
  /** [group size]; null: no scale. */
  weight: Tensor | null;
  /** [group size]; LayerNorm only. */
  bias?: Tensor | null;
}

export interface LinearParams {
  /** Hugging Face layout [out, in]; or [heads, out, in] for one MLP per head. */
  weight: Tensor;
  /** [out], or [heads, out]. */
  bias?: Tensor | null;
}

export interface StateCellParams {
  /** eta, one step size per head: [heads]. */
  stepSize: Tensor;
  preNorm: NormParams;
  /** d -> hidden. */
  fc1: LinearParams;
  /** hidden -> d. */
  fc2: LinearParams;
  postNorm: NormParams;
}

/** What the spec leaves open (spec 2.6 [D]), as options; defaults are the spec's reading. */
export interface StateCellOptions {
  /** State heads; d = D / heads. Default 16 (spec 2.3). */
  heads?: number;
  /** Euler steps K (the same step applied K times, post-norm included). Default 1. */
  steps?: number;
  /** 'layer' (LayerNorm, biased variance) or 'rms'. Default 'layer' (the seed names them LN). */
  norm?: 'layer' | 'rms';
  /** Default 1e-5. */
  eps?: number;
  /** The MLP's activation: 'gelu' (erf) or 'silu'. Default 'gelu'. */
  activation?: 'gelu' | 'silu';
  /** Pre-norm over each head's d values ('head', as spec 2.6 writes LN_pre(S_h)) or all D ('state'). Default 'head'. */
  preNormOver?: 'head' | 'state';
  /** Post-norm over all D values ('state', as spec 2.6 writes LN_post(concat_h)) or each head ('head'). Default 'state'. */
  postNormOver?: 'head' | 'state';
}

/** The kernels' names for the parameters (inputs after S, in the order `names` lists). */
export type ParamName = 'stepSize' | 'preW' | 'preB' | 'fc1W' | 'fc1B' | 'fc2W' | 'fc2B' | 'postW' | 'postB';

export interface StateCellAttrs {
  rows: number;
  D: number;
  heads: number;
  d: number;
  hidden: number;
  /** fc1/fc2 hold one MLP per head ([heads, out, in]) rather than one shared. */
  perHeadMlp: boolean;
  steps: number;
  norm: 'layer' | 'rms';
  eps: number;
  activation: 'gelu' | 'silu';
  /** Values per normalized group: d or D. */
  preNormSize: number;
  postNormSize: number;
  /** The parameters present, in input order after S. */
  names: ParamName[];
  outShape: number[];
}

const OP = 'stateCell';

function check(t: Tensor, role: string, expected: readonly (readonly number[])[]): void {
  assertFloat(OP, t, role);
  if (!expected.some((s) => s.length === t.rank && s.every((n, i) => n === t.shape[i]))) {
    throw new ShapeError(`${OP}: ${role} (${t.name ?? 'tensor'}) is ${formatShape(t.shape)}; expected ${expected.map(formatShape).join(' or ')}`);
  }
}

function oneOf<T extends string>(value: T, allowed: readonly T[], what: string): T {
  if (!allowed.includes(value)) throw new InputError(`${OP}: ${what} must be ${allowed.map((a) => `'${a}'`).join(' or ')}, got ${JSON.stringify(value)}`);
  return value;
}

/**
 * The cell on S [..., D] (f32, f16 or bf16; every leading index is an independent row), returned as f32 of
 * S's shape. Parameters may be f32, f16 or bf16.
 */
export async function stateCell(S: Tensor, params: StateCellParams, options: StateCellOptions = {}): Promise<Tensor> {
  const { heads = 16, steps = 1, eps = 1e-5 } = options;
  const norm = oneOf(options.norm ?? 'layer', ['layer', 'rms'], 'norm');
  const activation = oneOf(options.activation ?? 'gelu', ['gelu', 'silu'], 'activation');
  const preOver = oneOf(options.preNormOver ?? 'head', ['head', 'state'], 'preNormOver');
  const postOver = oneOf(options.postNormOver ?? 'state', ['head', 'state'], 'postNormOver');
  assertFloat(OP, S, 'S');
  if (S.rank < 1) throw new ShapeError(`${OP}: S (${S.name ?? 'tensor'}) is a scalar; expected [..., D]`);
  const D = S.shape[S.rank - 1]!;
  if (!Number.isInteger(heads) || heads < 1 || D % heads !== 0) throw new InputError(`${OP}: heads must be a positive integer dividing D = ${D}, got ${heads}`);
  if (!Number.isInteger(steps) || steps < 0) throw new InputError(`${OP}: steps must be an integer >= 0, got ${steps}`);
  if (!(eps > 0)) throw new InputError(`${OP}: eps must be positive, got ${eps}`);
  const d = D / heads;
  const { fc1, fc2, preNorm, postNorm } = params;
  const perHeadMlp = fc1.weight.rank === 3;
  const hidden = fc1.weight.shape[fc1.weight.rank - 2] ?? 0;
  const lead = perHeadMlp ? [heads] : [];
  check(params.stepSize, 'stepSize', [[heads]]);
  check(fc1.weight, 'fc1.weight', [[...lead, hidden, d]]);
  check(fc2.weight, 'fc2.weight', [[...lead, d, hidden]]);
  if (fc1.bias) check(fc1.bias, 'fc1.bias', [[...lead, hidden]]);
  if (fc2.bias) check(fc2.bias, 'fc2.bias', [[...lead, d]]);
  const preNormSize = preOver === 'head' ? d : D;
  const postNormSize = postOver === 'head' ? d : D;
  for (const [role, p, size] of [['preNorm', preNorm, preNormSize], ['postNorm', postNorm, postNormSize]] as const) {
    if (p.weight) check(p.weight, `${role}.weight`, [[size]]);
    if (p.bias) check(p.bias, `${role}.bias`, [[size]]);
    if (p.bias && norm === 'rms') throw new InputError(`${OP}: ${role}.bias is given but norm 'rms' has no bias`);
  }
  const named: [ParamName, Tensor | null | undefined][] = [
    ['stepSize', params.stepSize], ['preW', preNorm.weight], ['preB', preNorm.bias], ['fc1W', fc1.weight], ['fc1B', fc1.bias],
    ['fc2W', fc2.weight], ['fc2B', fc2.bias], ['postW', postNorm.weight], ['postB', postNorm.bias],
  ];
  const present = named.filter((e): e is [ParamName, Tensor] => !!e[1]);
  const attrs: StateCellAttrs = {
    rows: S.size / Math.max(D, 1), D, heads, d, hidden, perHeadMlp, steps, norm, eps, activation, preNormSize, postNormSize,
    names: present.map(([n]) => n), outShape: [...S.shape],
  };
  return (await runKernel(OP, [S, ...present.map(([, t]) => t)], attrs))[0]!;
}

/**
 * Checkpoint names of the cell's tensors, after a per-layer prefix (spec 2.9 guesses; no NanoHammer key list
 * was readable). Required: step_size, mlp.fc1.weight, mlp.fc2.weight; the rest are optional.
 */
export const CHECKPOINT_NAMES = {
  stepSize: 'step_size',
  preW: 'pre_norm.weight',
  preB: 'pre_norm.bias',
  fc1W: 'mlp.fc1.weight',
  fc1B: 'mlp.fc1.bias',
  fc2W: 'mlp.fc2.weight',
  fc2B: 'mlp.fc2.bias',
  postW: 'post_norm.weight',
  postB: 'post_norm.bias',
} as const satisfies Record<ParamName, string>;

/**
 * The cell's parameters from checkpoint tensors (a name -> tensor map, e.g. a safetensors file), by
 * `prefix` + the names of CHECKPOINT_NAMES (`names` renames any of them). Fails loudly on a missing required
 * tensor and on any unknown tensor under the prefix: an unknown one means the layout differs from this one.
 */
export function loadStateCellParams(tensors: ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>, prefix: string, options: { names?: Partial<Record<ParamName, string>>; file?: string } = {}): StateCellParams {
  const all = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
  const names = { ...CHECKPOINT_NAMES, ...options.names };
  const file = options.file ?? 'checkpoint';
  const known = new Set(Object.values(names).map((n) => prefix + n));
  const unknown = [...all.keys()].filter((k) => k.startsWith(prefix) && !known.has(k));
  if (unknown.length > 0) throw new CheckpointError(file, `unknown state-cell tensors ${unknown.join(', ')} (known: ${[...known].join(', ')})`);
  const get = (n: ParamName) => all.get(prefix + names[n]) ?? null;
  const need = (n: ParamName) => {
    const t = get(n);
    if (!t) throw new CheckpointError(file, `missing state-cell tensor ${prefix + names[n]}`);
    return t;
  };
  return {
    stepSize: need('stepSize'),
    preNorm: { weight: get('preW'), bias: get('preB') },
    fc1: { weight: need('fc1W'), bias: get('fc1B') },
    fc2: { weight: need('fc2W'), bias: get('fc2B') },
    postNorm: { weight: get('postW'), bias: get('postB') },
  };
}

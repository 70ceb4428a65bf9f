/**
 * @phalanx/monoid-scan: Spartacus's causal monoid state compression: gated linear attention with vector
 * decay, chunked prefill and O(1) decode. Per head, with S a Dk x Dv state:
 *   S_t = diag(exp(logDecay_t)) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t   (read after the update)
 * No scaling is applied inside: callers scale q. Importing the package registers its CPU kernels.
 *
 * @example
 * import { full, randn } from '@phalanx/core';
 * import { monoidScan, monoidStep } from '@phalanx/monoid-scan';
 * const [B, T, H, D] = [1, 16, 2, 8];
 * const q = randn([B, T, H, D], { seed: 1 }), k = randn([B, T, H, D], { seed: 2 }), v = randn([B, T, H, D], { seed: 3 });
 * const logDecay = full([B, T, H], -0.05);
 * const { output, finalState } = await monoidScan({ q, k, v, logDecay }, { mode: 'chunk', chunkSize: 8 });
 * // then one token at a time from the prefilled state:
 * // q1, k1, v1: [B, H, D]; ld1: [B, H]
 * const step = await monoidStep(finalState, { q: q1, k: k1, v: v1, logDecay: ld1 });
 */
import { InputError, ShapeError, type Tensor, assertFloat, formatShape, runKernel } from '@phalanx/core';
import './cpu.js';
import './webgpu.js';

export { type MonoidElement, combine, identity, prefixScan } from './scan.js';

/**
 * 'recurrent': the literal recurrence (the reference). 'chunk': the chunked form with sub-chunk
 * stabilisation (spec 1.5d). 'scan': a log-depth Hillis-Steele scan with `combine` (keeps T states: for tests
 * and small T). 'auto': the backend's choice: the recurrence on the CPU (its cheapest form); on WebGPU the chunk
 * kernel when T > 64 (and Dk, Dv <= 64), the recurrent kernel otherwise.
 */
export type MonoidScanMode = 'auto' | 'recurrent' | 'chunk' | 'scan';

export interface MonoidScanInputs {
  /** [B, T, H, Dk], already scaled. */
  q: Tensor;
  /** [B, T, H, Dk]. */
  k: Tensor;
  /** [B, T, H, Dv]. */
  v: Tensor;
  /** [B, T, H, Dk] (vector decay) or [B, T, H] (one per head); log of the decay, so <= 0 for a decay in (0, 1]. */
  logDecay: Tensor;
  /** [B, H, Dk, Dv], or [N, H, Dk, Dv] with N packed sequences; zeros when absent. */
  initialState?: Tensor;
}

export interface MonoidScanOptions {
  /** Default 'auto'. */
  mode?: MonoidScanMode;
  /** Tokens per chunk in mode 'chunk'. Default 64 (spec 1.10 [D]). */
  chunkSize?: number;
  /**
   * Rows per sub-chunk in mode 'chunk': scores between different sub-chunks are factored with a reference
   * log-decay so every exponent is <= 0. Default 16 (spec 1.5d [D]); a value >= chunkSize evaluates the whole
   * chunk element by element.
   */
  subChunkSize?: number;
  /**
   * Packed sequences (B = 1): token offsets [0, end_1, ..., T] of N sequences. The state restarts at each
   * boundary from that sequence's initial state; initialState and finalState are then [N, H, Dk, Dv].
   */
  cuSeqlens?: ArrayLike<number>;
}

export interface MonoidScanResult {
  /** [B, T, H, Dv], f32. */
  output: Tensor;
  /** [B or N, H, Dk, Dv], f32: the state after each sequence's last token. */
  finalState: Tensor;
}

/** One sequence: tokens [start, end) of batch row `batch`; its states are initialState[n] and finalState[n]. */
export interface Sequence {
  batch: number;
  start: number;
  end: number;
}

/** Attributes of 'monoidScan' and 'monoidStep' (a step is a scan of T = 1 from a given state). */
export interface MonoidScanAttrs {
  B: number;
  T: number;
  H: number;
  Dk: number;
  Dv: number;
  /** logDecay is one value per (token, head) rather than per key dim. */
  scalarDecay: boolean;
  /** The fifth input is the initial state; zeros otherwise. */
  hasInitialState: boolean;
  sequences: Sequence[];
  mode: MonoidScanMode;
  chunkSize: number;
  subChunkSize: number;
  outputShape: number[];
  stateShape: number[];
  /** monoidStep's prologue (inputs 6 and 7 are the q and k norm weights), see `MonoidStepPrologue`. */
  prologue?: StepPrologueAttrs;
}

/**
 * What `monoidStep` computes from the raw projections in its own dispatch, before the update, so that a decode
 * step of MonoidAttention needs one dispatch between its projections and W_o instead of four: per head,
 * q <- rmsNorm(q) * qNorm * qScale and k <- kActivation(rmsNorm(k) * kNorm) over the head's Dk values, and
 * `logDecay` holds the decay projection z, from which log a = logDecay(z, { gate, floor }) (./decay.ts).
 */
export interface MonoidStepPrologue {
  /** RMSNorm weights of q and k: [Dk] (every head) or [H * Dk] (a row per head). */
  qNorm: Tensor;
  kNorm: Tensor;
  eps: number;
  /** q times this after its norm (spec 1.7: 1 / sqrt(Dk)). Default 1. */
  qScale?: number;
  /** k through this after its norm. Default none. */
  kActivation?: 'silu';
  gate: 'logsigmoid' | 'neg-softplus';
  /** log a clamped to >= floor when set (LOG_DECAY_FLOOR). */
  floor?: number;
}

/** The kernels' view of a prologue. */
export interface StepPrologueAttrs {
  eps: number;
  qScale: number;
  kSilu: boolean;
  /** log a = logsigmoid(sign * z). */
  sign: 1 | -1;
  floor: number | null;
  /** Norm weights hold a row per head (else one row for all). */
  perHead: boolean;
}

function checkInput(t: Tensor, role: string, op: string, expected: readonly number[][]): void {
  const name = `${role} (${t.name ?? 'tensor'})`;
  assertFloat(op, t, role);
  if (!expected.some((s) => s.length === t.rank && s.every((d, i) => d === t.shape[i]))) {
    throw new ShapeError(`${op}: ${name} is ${formatShape(t.shape)}; expected ${expected.map(formatShape).join(' or ')}`);
  }
}

function positiveInt(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1) throw new InputError(`monoidScan: ${what} must be a positive integer, got ${value}`);
  return value;
}

/** Sequences of the packed layout, from offsets [0, ..., T]. */
function packedSequences(cuSeqlens: ArrayLike<number>, B: number, T: number, q: Tensor): Sequence[] {
  if (B !== 1) throw new ShapeError(`monoidScan: cuSeqlens packs sequences along T, so q (${q.name ?? 'tensor'}) ${formatShape(q.shape)} must have B = 1`);
  const cu = Array.from(cuSeqlens);
  const valid = cu.length >= 2 && cu[0] === 0 && cu[cu.length - 1] === T && cu.every((c, i) => Number.isInteger(c) && (i === 0 || c >= cu[i - 1]!));
  if (!valid) throw new InputError(`monoidScan: cuSeqlens [${cu.join(', ')}] must be non-decreasing integers from 0 to T = ${T}`);
  return cu.slice(1).map((end, n) => ({ batch: 0, start: cu[n]!, end }));
}

/**
 * The whole scan: output [B, T, H, Dv] and the state after the last token. With `cuSeqlens`, B = 1 holds N
 * sequences back to back, each starting from its own initial state.
 */
export async function monoidScan(inputs: MonoidScanInputs, options: MonoidScanOptions = {}): Promise<MonoidScanResult> {
  const { q, k, v, logDecay, initialState } = inputs;
  const op = 'monoidScan';
  if (q.rank !== 4) throw new ShapeError(`${op}: q (${q.name ?? 'tensor'}) is ${formatShape(q.shape)}; expected [B, T, H, Dk]`);
  const [B, T, H, Dk] = q.shape as [number, number, number, number];
  checkInput(k, 'k', op, [[B, T, H, Dk]]);
  if (v.rank !== 4) throw new ShapeError(`${op}: v (${v.name ?? 'tensor'}) is ${formatShape(v.shape)}; expected [${B}, ${T}, ${H}, Dv]`);
  const Dv = v.shape[3]!;
  checkInput(v, 'v', op, [[B, T, H, Dv]]);
  checkInput(logDecay, 'logDecay', op, [[B, T, H, Dk], [B, T, H]]);
  checkInput(q, 'q', op, [[B, T, H, Dk]]);

  const sequences = options.cuSeqlens ? packedSequences(options.cuSeqlens, B, T, q) : Array.from({ length: B }, (_, b) => ({ batch: b, start: 0, end: T }));
  const stateShape = [sequences.length, H, Dk, Dv];
  if (initialState) checkInput(initialState, 'initialState', op, [stateShape]);

  const mode = options.mode ?? 'auto';
  if (!['auto', 'recurrent', 'chunk', 'scan'].includes(mode)) throw new InputError(`${op}: unknown mode '${mode}'; expected auto, recurrent, chunk or scan`);
  const chunkSize = positiveInt(options.chunkSize ?? 64, 'chunkSize');
  const subChunkSize = positiveInt(options.subChunkSize ?? 16, 'subChunkSize');

  const attrs: MonoidScanAttrs = {
    B, T, H, Dk, Dv, scalarDecay: logDecay.rank === 3, hasInitialState: !!initialState, sequences, mode, chunkSize, subChunkSize, outputShape: [B, T, H, Dv], stateShape,
  };
  const [output, finalState] = await runKernel(op, initialState ? [q, k, v, logDecay, initialState] : [q, k, v, logDecay], attrs);
  return { output: output!, finalState: finalState! };
}

/**
 * One decode step per sequence, O(Dk Dv) per head: S <- diag(exp(logDecay)) S + k v^T, output S^T q.
 * state: [B, H, Dk, Dv]; q, k: [B, H, Dk]; v: [B, H, Dv]; logDecay: [B, H, Dk] or [B, H]. Returns the output
 * [B, H, Dv] and the new state (a new tensor: the caller disposes the old one). With `prologue`, q and k are
 * the raw projections and logDecay the decay projection z, normed and gated in the same dispatch.
 */
export async function monoidStep(
  state: Tensor,
  inputs: { q: Tensor; k: Tensor; v: Tensor; logDecay: Tensor },
  options: { prologue?: MonoidStepPrologue } = {},
): Promise<{ output: Tensor; state: Tensor }> {
  const { q, k, v, logDecay } = inputs;
  const op = 'monoidStep';
  if (state.rank !== 4) throw new ShapeError(`${op}: state (${state.name ?? 'tensor'}) is ${formatShape(state.shape)}; expected [B, H, Dk, Dv]`);
  const [B, H, Dk, Dv] = state.shape as [number, number, number, number];
  checkInput(state, 'state', op, [[B, H, Dk, Dv]]);
  checkInput(q, 'q', op, [[B, H, Dk]]);
  checkInput(k, 'k', op, [[B, H, Dk]]);
  checkInput(v, 'v', op, [[B, H, Dv]]);
  checkInput(logDecay, 'logDecay', op, [[B, H, Dk], [B, H]]);
  const pro = options.prologue;
  let prologue: StepPrologueAttrs | undefined;
  if (pro) {
    checkInput(pro.qNorm, 'prologue.qNorm', op, [[Dk], [H * Dk]]);
    checkInput(pro.kNorm, 'prologue.kNorm', op, [pro.qNorm.shape as number[]]);
    const { eps, qScale = 1, kActivation, gate, floor } = pro;
    if (!(Number.isFinite(eps) && eps > 0)) throw new InputError(`${op}: prologue.eps must be a finite number > 0, got ${eps}`);
    if (!Number.isFinite(qScale)) throw new InputError(`${op}: prologue.qScale must be finite, got ${qScale}`);
    if (kActivation !== undefined && kActivation !== 'silu') throw new InputError(`${op}: prologue.kActivation must be 'silu' or absent, got '${kActivation}'`);
    if (gate !== 'logsigmoid' && gate !== 'neg-softplus') throw new InputError(`${op}: prologue.gate must be 'logsigmoid' or 'neg-softplus', got '${gate}'`);
    if (floor !== undefined && !(Number.isFinite(floor) && floor <= 0)) throw new InputError(`${op}: prologue.floor must be a finite number <= 0, got ${floor}`);
    prologue = { eps, qScale, kSilu: kActivation === 'silu', sign: gate === 'logsigmoid' ? 1 : -1, floor: floor ?? null, perHead: pro.qNorm.shape[0] !== Dk };
  }
  // [B, H, D] is laid out as [B, T = 1, H, D]
  const sequences: Sequence[] = [];
  for (let b = 0; b < B; b++) sequences.push({ batch: b, start: 0, end: 1 });
  const attrs: MonoidScanAttrs = {
    B, T: 1, H, Dk, Dv, scalarDecay: logDecay.rank === 2, hasInitialState: true, sequences,
    mode: 'recurrent', chunkSize: 1, subChunkSize: 1, outputShape: [B, H, Dv], stateShape: [B, H, Dk, Dv], prologue,
  };
  const [output, next] = await runKernel(op, pro ? [q, k, v, logDecay, state, pro.qNorm, pro.kNorm] : [q, k, v, logDecay, state], attrs);
  return { output: output!, state: next! };
}
export * from './attention.js';

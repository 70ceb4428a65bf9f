/**
 * @phalanx/holographic-rope: NanoHammer's holographic integral state (spec 2.4-2.5, a derived spec). A real
 * vector z_t is read as complex lanes (pairs of dims), each turning at its own frequency omega_k, and
 * accumulated as
 *   c_t = e^{-i omega} (.) c_{t-1} + z_t   =   Rot^-1( sum_{s <= t} Rot(z_s, s), t )
 * so c_t = sum_s e^{-i omega (t-s)} z_s is a fixed-size, relative-position-aware summary of the prefix.
 * Importing the package registers its kernels on the CPU and WebGPU.
 *
 * @example
 * import { randn } from '@phalanx/core';
 * import { holographicIntegral, holographicStep, rotate } from '@phalanx/holographic-rope';
 * const z = randn([1, 100, 512], { seed: 1 });                         // token_to_state outputs
 * const { output, finalState } = await holographicIntegral(z, { mode: 'chunk' });
 * // decode: the token at position 100, z1: [1, 512]
 * const step = await holographicStep(finalState, z1, { position: 100 });
 * // the rotation alone, RoPE-style, on [B, T, H, D] heads:
 * const q2 = await rotate(q, positions, { pairing: 'half', width: 64, base: 500000 });
 */
import { InputError, ShapeError, Tensor, assertFloat, formatShape, runKernel } from '@phalanx/core';
import type { RopeAttrs, RopePairing } from '@phalanx/ops';
import { type Rotation, type RotationOptions, resolveRotation, rotationTable } from './rotation.js';
import './cpu.js';
import './webgpu.js';

export { type HolographicElement, combine, identity, prefixScan } from './scan.js';
export type { Rotation, RotationOptions } from './rotation.js';

/**
 * 'recurrent': c_t = e^{-i omega} c_{t-1} + z_t (the reference; the decode form). 'chunk': the chunked
 * parallel form of spec 2.5 (ii) (prefill). 'direct': rotate -> prefix-sum -> unrotate, for parity with a
 * framework implementation (its angles grow with the position: see `angles`). 'auto': the backend's choice
 * ('recurrent' on the CPU; 'chunk' on WebGPU once T exceeds one chunk).
 */
export type HolographicMode = 'auto' | 'recurrent' | 'chunk' | 'direct';

/** Scale of the output c_t: none, 1/(t+1) ('mean') or 1/sqrt(t+1) ('sqrt'), t the absolute position. */
export type HolographicNormalize = 'none' | 'mean' | 'sqrt';

export interface HolographicOptions extends RotationOptions {
  /** Default 'auto'. */
  mode?: HolographicMode;
  /** Tokens per chunk in mode 'chunk'. Default 64. */
  chunkSize?: number;
  /** Default 'none' (spec 2.5 leaves it open). Only outputs are scaled; the state carried on never is. */
  normalize?: HolographicNormalize;
  /**
   * Absolute position of the first token, one for all sequences or one per sequence ([B]): where the
   * entering state ends (offset - 1). It sets the angles of mode 'direct' and the t of `normalize`. Default 0.
   */
  offset?: number | ArrayLike<number>;
}

export interface HolographicResult {
  /** [B, T, D], f32: c_t for every token (scaled by `normalize`). */
  output: Tensor;
  /** [B, D], f32: c after the last token, unscaled. Its size does not depend on T. */
  finalState: Tensor;
}

/** Attributes of 'holographicIntegral' (a decode step is the integral of T = 1 from a given state). */
export interface HolographicAttrs {
  B: number;
  T: number;
  D: number;
  rotation: Rotation;
  mode: HolographicMode;
  chunkSize: number;
  normalize: HolographicNormalize;
  /** Position of each sequence's first token. */
  offsets: number[];
  /** The second input is the entering state; zeros otherwise. */
  hasInitialState: boolean;
  outputShape: number[];
  stateShape: number[];
}

const nameOf = (t: Tensor, role: string) => `${role} (${t.name ?? 'tensor'})`;

function checkShape(op: string, t: Tensor, role: string, expected: readonly number[]): void {
  assertFloat(op, t, role);
  if (t.rank !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
    throw new ShapeError(`${op}: ${nameOf(t, role)} is ${formatShape(t.shape)}; expected ${formatShape(expected)}`);
  }
}

function integer(op: string, value: number, what: string, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) throw new InputError(`${op}: ${what} must be an integer >= ${min}, got ${value}`);
  return value;
}

/** One position per sequence from a number or a [B] list. */
function perSequence(op: string, value: number | ArrayLike<number>, B: number, what: string): number[] {
  const list = typeof value === 'number' ? new Array<number>(B).fill(value) : Array.from(value);
  if (list.length !== B) throw new ShapeError(`${op}: ${what} has ${list.length} values, expected one or B = ${B}`);
  return list.map((p, b) => integer(op, p, `${what}[${b}]`, 0));
}

function attrsOf(op: string, B: number, T: number, D: number, options: HolographicOptions, hasInitialState: boolean, outputShape: number[]): HolographicAttrs {
  const rotation = resolveRotation(op, D, options);
  const mode = options.mode ?? 'auto';
  if (!['auto', 'recurrent', 'chunk', 'direct'].includes(mode)) throw new InputError(`${op}: unknown mode '${mode}'; expected auto, recurrent, chunk or direct`);
  const normalize = options.normalize ?? 'none';
  if (!['none', 'mean', 'sqrt'].includes(normalize)) throw new InputError(`${op}: unknown normalize '${normalize}'; expected none, mean or sqrt`);
  const chunkSize = integer(op, options.chunkSize ?? 64, 'chunkSize', 1);
  const offsets = perSequence(op, options.offset ?? 0, B, 'offset');
  return { B, T, D, rotation, mode, chunkSize, normalize, offsets, hasInitialState, outputShape, stateShape: [B, D] };
}

/**
 * The holographic integral of z [B, T, D] (D even), from `initialState` [B, D] (zeros when absent): every
 * c_t and the state after the last token. All modes compute the same c_t (in float64 on the CPU, f32 on
 * WebGPU); they differ in parallelism and in which angles they form.
 */
export async function holographicIntegral(z: Tensor, options: HolographicOptions & { initialState?: Tensor } = {}): Promise<HolographicResult> {
  const op = 'holographicIntegral';
  if (z.rank !== 3) throw new ShapeError(`${op}: ${nameOf(z, 'z')} is ${formatShape(z.shape)}; expected [B, T, D]`);
  const [B, T, D] = z.shape as [number, number, number];
  assertFloat(op, z, 'z');
  const { initialState } = options;
  if (initialState) checkShape(op, initialState, 'initialState', [B, D]);
  const attrs = attrsOf(op, B, T, D, options, !!initialState, [B, T, D]);
  const [output, finalState] = await runKernel(op, initialState ? [z, initialState] : [z], attrs);
  return { output: output!, finalState: finalState! };
}

/**
 * One decode step per sequence, O(D), by the recurrence c <- e^{-i omega} c + z (no angle grows with the
 * position). state, z: [B, D]; `position`: the absolute position of this token (one, or [B]), needed by
 * `normalize`. Returns the output c_t
 * [B, D] (scaled by `normalize`) and the new state (a new tensor: the caller disposes the old one).
 */
export async function holographicStep(state: Tensor, z: Tensor, options: RotationOptions & { position?: number | ArrayLike<number>; normalize?: HolographicNormalize } = {}): Promise<{ output: Tensor; state: Tensor }> {
  const op = 'holographicStep';
  if (state.rank !== 2) throw new ShapeError(`${op}: ${nameOf(state, 'state')} is ${formatShape(state.shape)}; expected [B, D]`);
  const [B, D] = state.shape as [number, number];
  checkShape(op, state, 'state', [B, D]);
  checkShape(op, z, 'z', [B, D]);
  const { position, ...rest } = options;
  if (position === undefined && (rest.normalize ?? 'none') !== 'none') throw new InputError(`${op}: normalize '${rest.normalize}' needs the token's position`);
  // [B, D] is laid out as [B, T = 1, D]
  const attrs = attrsOf(op, B, 1, D, { ...rest, mode: 'recurrent', offset: position ?? 0 }, true, [B, D]);
  const [output, next] = await runKernel('holographicIntegral', [z, state], attrs);
  return { output: output!, state: next! };
}

/** Positions as a host list: [T] shared by the batch, or [B*T]; integers. */
async function positionList(op: string, positions: ArrayLike<number> | Tensor, B: number, T: number): Promise<ArrayLike<number>> {
  const values = positions instanceof Tensor ? await positions.data() : positions;
  if (values.length !== T && values.length !== B * T) throw new ShapeError(`${op}: positions has ${values.length} values, expected T = ${T}${B > 1 ? ` or B*T = ${B * T}` : ''}`);
  for (let i = 0; i < values.length; i++) {
    if (!Number.isSafeInteger(values[i])) throw new InputError(`${op}: positions[${i}] = ${values[i]} is not an integer`);
  }
  return values;
}

/**
 * Rot(x, p) of every pair of x's last dim: x [T, D], [B, T, D] or [B, T, H, D] (f32, f16 or bf16, returned
 * as f32 of the same shape); positions: [T] or [B*T] integers (any tensor of that size). Runs on the
 * '@phalanx/ops' rope kernels with a table of cos/sin computed in float64 on the host.
 */
export async function rotate(x: Tensor, positions: ArrayLike<number> | Tensor, options: RotationOptions = {}): Promise<Tensor> {
  return turn('rotate', x, positions, options, 1);
}

/** Rot^-1(x, p): the inverse of `rotate` (e^{-i omega p}), same arguments. */
export async function unrotate(x: Tensor, positions: ArrayLike<number> | Tensor, options: RotationOptions = {}): Promise<Tensor> {
  return turn('unrotate', x, positions, options, -1);
}

async function turn(op: string, x: Tensor, positions: ArrayLike<number> | Tensor, options: RotationOptions, sign: 1 | -1): Promise<Tensor> {
  if (x.rank < 2 || x.rank > 4) throw new ShapeError(`${op}: ${nameOf(x, 'x')} is ${formatShape(x.shape)}; expected [T, D], [B, T, D] or [B, T, H, D]`);
  assertFloat(op, x, 'x');
  const [batch, seq] = x.rank === 2 ? [1, x.shape[0]!] : [x.shape[0]!, x.shape[1]!];
  const rotation = resolveRotation(op, x.shape[x.rank - 1]!, options);
  const list = await positionList(op, positions, batch, seq);
  const { cos, sin } = rotationTable(list, rotation, sign);
  const { width, pairing } = rotation;
  const blocks = x.size / (batch * seq * width);
  const attrs: RopeAttrs = { batch, seq, heads: blocks, dim: width, rotaryDim: width, pairing, cos, sin, batchStride: list.length === seq ? 0 : seq };
  const view = x.reshape([batch, seq, blocks, width]);
  const [out] = await runKernel('rope', [view], attrs);
  view.dispose();
  const y = out!.reshape(x.shape);
  out!.dispose();
  return y;
}

/**
 * The same rotation as '@phalanx/ops' `rope` options, to mix it into another model's attention: for heads
 * of `width` dims, `rope(q, { ...ropeOptions(o), positions })` equals `rotate(q, positions, o)` (angles
 * 'exact').
 */
export function ropeOptions(options: RotationOptions & { width: number }): { invFreq: Float64Array; pairing: RopePairing; rotaryDim: number } {
  const { invFreq, pairing, width } = resolveRotation('ropeOptions', options.width, options);
  return { invFreq, pairing, rotaryDim: width };
}

import { angle } from './rotation.js';

/**
 * One complex lane of one sequence, in float64, as every CPU form of the integral sees it: z_t for T tokens
 * as (re, im) pairs, the accumulator c entering the sequence (the state after position offset - 1) and the
 * lane's frequency omega.
 */
export interface Lane {
  T: number;
  z: Float64Array;
  state: [re: number, im: number];
  omega: number;
  /** Position of the first token. */
  offset: number;
}

/** c_t for the T tokens as (re, im) pairs, and c after the last one. */
export interface LaneOutputs {
  output: Float64Array;
  state: [re: number, im: number];
}

/**
 * The recurrence (spec 2.5), the ground truth: c_t = e^{-i omega} c_{t-1} + z_t. Only the one small angle
 * omega is ever formed, so it is exact at any position.
 */
export function recurrentLane({ T, z, state, omega }: Lane): LaneOutputs {
  const [cr, ci] = [Math.cos(omega), -Math.sin(omega)];
  let [re, im] = state;
  const output = new Float64Array(2 * T);
  for (let t = 0; t < T; t++) {
    [re, im] = [cr * re - ci * im + z[2 * t]!, cr * im + ci * re + z[2 * t + 1]!];
    output[2 * t] = re;
    output[2 * t + 1] = im;
  }
  return { output, state: [re, im] };
}

/**
 * Rotate -> prefix-sum -> unrotate (spec 2.5 (i)): I_t = Rot(c_entering, offset - 1) + sum_s Rot(z_s, s),
 * c_t = Rot^-1(I_t, t), with angles position * omega formed as `angles` says ('f32' reproduces a framework's
 * pos_fp32 * inv_freq_fp32 and its error at large positions).
 */
export function directLane({ T, z, state, omega, offset }: Lane, angles: 'exact' | 'f32'): LaneOutputs {
  const a0 = angle(offset - 1, omega, angles);
  let re = state[0] * Math.cos(a0) - state[1] * Math.sin(a0);
  let im = state[1] * Math.cos(a0) + state[0] * Math.sin(a0);
  const output = new Float64Array(2 * T);
  let last: [number, number] = [...state];
  for (let t = 0; t < T; t++) {
    const a = angle(offset + t, omega, angles);
    const [c, s] = [Math.cos(a), Math.sin(a)];
    re += z[2 * t]! * c - z[2 * t + 1]! * s;
    im += z[2 * t + 1]! * c + z[2 * t]! * s;
    last = [re * c + im * s, im * c - re * s];
    output.set(last, 2 * t);
  }
  return { output, state: last };
}

/** The factor of output c_t under `normalize`: 1, 1/(t+1) or 1/sqrt(t+1), t the absolute position. */
export function normScale(normalize: 'none' | 'mean' | 'sqrt', position: number): number {
  return normalize === 'mean' ? 1 / (position + 1) : normalize === 'sqrt' ? 1 / Math.sqrt(position + 1) : 1;
}

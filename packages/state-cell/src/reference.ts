import { geluErf64, silu64 } from '@phalanx/ops';
import type { ParamName, StateCellAttrs } from './index.js';

/** The cell's parameters as float64-readable arrays, by name; absent optional ones are undefined. */
export type ParamValues = Partial<Record<ParamName, ArrayLike<number>>>;

const ACTIVATIONS = { gelu: geluErf64, silu: silu64 };

/**
 * LayerNorm (biased variance) or RMSNorm of each group of `size` consecutive values of v, in place, then
 * * weight + bias, with weight and bias indexed within the group.
 */
function normalize(v: Float64Array, size: number, a: StateCellAttrs, weight?: ArrayLike<number>, bias?: ArrayLike<number>): void {
  for (let g0 = 0; g0 < v.length; g0 += size) {
    let mean = 0;
    if (a.norm === 'layer') {
      for (let i = 0; i < size; i++) mean += v[g0 + i]!;
      mean /= size;
    }
    let sq = 0;
    for (let i = 0; i < size; i++) sq += (v[g0 + i]! - mean) ** 2;
    const inv = 1 / Math.sqrt(sq / size + a.eps);
    for (let i = 0; i < size; i++) v[g0 + i] = (v[g0 + i]! - mean) * inv * (weight ? weight[i]! : 1) + (bias ? bias[i]! : 0);
  }
}

/**
 * The cell on one state row S (D values), in float64, in place (spec 2.6). Each of the K steps:
 *   S_h <- S_h + eta_h * fc2(act(fc1(Norm_pre(S)_h)))   for every head h (d = D / heads values)
 *   S   <- Norm_post(S)
 */
export function cellRow(s: Float64Array, p: ParamValues, a: StateCellAttrs): void {
  const { heads, d, hidden, perHeadMlp } = a;
  const act = ACTIVATIONS[a.activation];
  const n = new Float64Array(s.length);
  const h1 = new Float64Array(hidden);
  for (let step = 0; step < a.steps; step++) {
    n.set(s);
    normalize(n, a.preNormSize, a, p.preW, p.preB);
    for (let h = 0; h < heads; h++) {
      // a per-head MLP's weights start at head h's slice; a shared one at 0
      const [w1, b1, w2, b2] = perHeadMlp ? [h * hidden * d, h * hidden, h * d * hidden, h * d] : [0, 0, 0, 0];
      for (let m = 0; m < hidden; m++) {
        let acc = p.fc1B ? p.fc1B[b1 + m]! : 0;
        for (let j = 0; j < d; j++) acc += p.fc1W![w1 + m * d + j]! * n[h * d + j]!;
        h1[m] = act(acc);
      }
      for (let j = 0; j < d; j++) {
        let acc = p.fc2B ? p.fc2B[b2 + j]! : 0;
        for (let m = 0; m < hidden; m++) acc += p.fc2W![w2 + j * hidden + m]! * h1[m]!;
        s[h * d + j] = s[h * d + j]! + p.stepSize![h]! * acc;
      }
    }
    normalize(s, a.postNormSize, a, p.postW, p.postB);
  }
}

/**
 * One sequence of one head, in float64, as every CPU form of the scan sees it. Rows are tokens: `q`, `k` and
 * `logDecay` hold T rows of Dk (a scalar decay is already broadcast over Dk), `v` T rows of Dv; `state` is
 * the Dk x Dv state entering the sequence (row i = key dim, column j = value dim).
 */
export interface HeadInputs {
  T: number;
  Dk: number;
  Dv: number;
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  logDecay: Float64Array;
  state: Float64Array;
}

/** The T rows of Dv outputs and the Dk x Dv state after the last token. */
export interface HeadOutputs {
  output: Float64Array;
  state: Float64Array;
}

/**
 * The literal recurrence (spec 1.3), the ground truth of every other form:
 * S_t[i, j] = exp(logDecay_t[i]) S_{t-1}[i, j] + k_t[i] v_t[j], then o_t[j] = sum_i q_t[i] S_t[i, j].
 */
export function recurrentHead({ T, Dk, Dv, q, k, v, logDecay, state }: HeadInputs): HeadOutputs {
  const S = Float64Array.from(state);
  const output = new Float64Array(T * Dv);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < Dk; i++) {
      const a = Math.exp(logDecay[t * Dk + i]!);
      const ki = k[t * Dk + i]!;
      for (let j = 0; j < Dv; j++) S[i * Dv + j] = a * S[i * Dv + j]! + ki * v[t * Dv + j]!;
    }
    readout(S, q, t, Dk, Dv, output);
  }
  return { output, state: S };
}

/** o_t = S^T q_t into row t of `output` (the readout after the update, shared by every form). */
export function readout(S: Float64Array, q: Float64Array, t: number, Dk: number, Dv: number, output: Float64Array): void {
  for (let j = 0; j < Dv; j++) {
    let acc = 0;
    for (let i = 0; i < Dk; i++) acc += q[t * Dk + i]! * S[i * Dv + j]!;
    output[t * Dv + j] = acc;
  }
}

import type { HeadInputs, HeadOutputs } from './reference.js';

/** How the chunked form splits a sequence (spec 1.5d). */
export interface ChunkOptions {
  /** Tokens per chunk C: chunks run one after another, everything inside one is parallel. */
  chunkSize: number;
  /**
   * Rows per sub-chunk for the intra-chunk scores A. Blocks of A between different sub-chunks factor as two
   * products whose exponents are both <= 0; blocks on the diagonal take exp(B_r - B_s) per element.
   */
  subChunkSize: number;
}

/**
 * Mode 'chunk' (spec 1.5d, GLA with a key-dim gate). Per chunk with entering state S0 and inclusive local
 * cumulative log-decay B_r (<= 0, non-increasing):
 *   O[r]   = (q_r * exp(B_r)) S0 + sum_{s <= r} A[r, s] v_s,  A[r, s] = sum_i q_r[i] k_s[i] exp(B_r[i] - B_s[i])
 *   S_next = diag(exp(B_L)) S0 + sum_s (k_s * exp(B_L - B_s)) v_s^T
 * Every exponent is <= 0, so nothing overflows however strongly the chunk decays; k * exp(-B) is never formed.
 */
export function chunkHead(x: HeadInputs, { chunkSize, subChunkSize }: ChunkOptions): HeadOutputs {
  const { T, Dk, Dv, q, k, v, logDecay } = x;
  const S = Float64Array.from(x.state);
  const output = new Float64Array(T * Dv);
  for (let c0 = 0; c0 < T; c0 += chunkSize) {
    const L = Math.min(chunkSize, T - c0);
    const row = (r: number) => (c0 + r) * Dk;
    // B[r * Dk + i]: log-decay of chunk rows 0..r, dim i
    const B = new Float64Array(L * Dk);
    for (let r = 0; r < L; r++) for (let i = 0; i < Dk; i++) B[r * Dk + i] = (r > 0 ? B[(r - 1) * Dk + i]! : 0) + logDecay[row(r) + i]!;

    const A = scores(x, c0, L, B, subChunkSize);
    for (let r = 0; r < L; r++) {
      for (let j = 0; j < Dv; j++) {
        let acc = 0;
        for (let i = 0; i < Dk; i++) acc += q[row(r) + i]! * Math.exp(B[r * Dk + i]!) * S[i * Dv + j]!;
        for (let s = 0; s <= r; s++) acc += A[r * L + s]! * v[(c0 + s) * Dv + j]!;
        output[(c0 + r) * Dv + j] = acc;
      }
    }

    const last = (L - 1) * Dk;
    for (let i = 0; i < Dk; i++) {
      const decay = Math.exp(B[last + i]!);
      for (let j = 0; j < Dv; j++) {
        let acc = decay * S[i * Dv + j]!;
        for (let s = 0; s < L; s++) acc += k[row(s) + i]! * Math.exp(B[last + i]! - B[s * Dk + i]!) * v[(c0 + s) * Dv + j]!;
        S[i * Dv + j] = acc;
      }
    }
  }
  return { output, state: S };
}

/**
 * The causal scores A[r, s] (s <= r) of one chunk, by sub-chunk blocks (R1 chunk_gla_fwd_A_kernel_intra_sub_inter).
 * For query sub-chunk p starting at row p0 and an earlier key sub-chunk, with g = B[p0]:
 * A = (Q * exp(B_r - g)) (K * exp(g - B_s))^T, both exponents <= 0 since B is non-increasing.
 */
function scores({ Dk, q, k }: HeadInputs, c0: number, L: number, B: Float64Array, sub: number): Float64Array {
  const A = new Float64Array(L * L);
  for (let p0 = 0; p0 < L; p0 += sub) {
    const g = B.subarray(p0 * Dk, (p0 + 1) * Dk);
    // keys of the earlier sub-chunks, scaled towards the reference g
    const kScaled = new Float64Array(p0 * Dk);
    for (let s = 0; s < p0; s++) for (let i = 0; i < Dk; i++) kScaled[s * Dk + i] = k[(c0 + s) * Dk + i]! * Math.exp(g[i]! - B[s * Dk + i]!);
    for (let r = p0; r < Math.min(p0 + sub, L); r++) {
      const qr = (c0 + r) * Dk;
      for (let s = 0; s < p0; s++) {
        let acc = 0;
        for (let i = 0; i < Dk; i++) acc += q[qr + i]! * Math.exp(B[r * Dk + i]! - g[i]!) * kScaled[s * Dk + i]!;
        A[r * L + s] = acc;
      }
      // the diagonal block, element by element
      for (let s = p0; s <= r; s++) {
        let acc = 0;
        for (let i = 0; i < Dk; i++) acc += q[qr + i]! * k[(c0 + s) * Dk + i]! * Math.exp(B[r * Dk + i]! - B[s * Dk + i]!);
        A[r * L + s] = acc;
      }
    }
  }
  return A;
}

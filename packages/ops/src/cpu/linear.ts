import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import { silu64 } from '../activations.js';
import type { LinearsAttrs, MatmulAttrs, NormAttrs, SwigluLinearAttrs } from '../linear.js';

/**
 * Rows of x [rows, K] through an RMSNorm (`InputNorm`) in float64, for the kernels that apply it to their input:
 * x / sqrt(mean(x²) + eps) * (weight + weightOffset).
 */
function normRows(x: ArrayLike<number>, K: number, norm: NormAttrs, weight: ArrayLike<number>): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / K; r++) {
    let ss = 0;
    for (let k = 0; k < K; k++) ss += x[r * K + k]! ** 2;
    const inv = 1 / Math.sqrt(ss / K + norm.eps);
    for (let k = 0; k < K; k++) out[r * K + k] = x[r * K + k]! * inv * (weight[k]! + norm.weightOffset);
  }
  return out;
}

/** The kernels' input x, normed when `norm` is set (its weight is the last input). */
function inputRows(inputs: Tensor[], K: number, norm: NormAttrs | undefined): ArrayLike<number> {
  const x = cpuValues(inputs[0]!);
  return norm ? normRows(x, K, norm, cpuValues(inputs[inputs.length - 1]!)) : x;
}

/** The reference product: float64 accumulation, one output at a time, plus any residual, rounded to f32 once. */
function matmul(inputs: Tensor[], { batch, M, N, K, transB, bShared, hasBias, hasRowScale, hasResidual, norm, outShape }: MatmulAttrs): Tensor {
  const [, b, ...rest] = norm ? inputs.slice(0, -1) : inputs;
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const x = inputRows(inputs, K, norm);
  const w = cpuValues(b!);
  const bias = hasBias ? cpuValues(rest[0]!) : undefined;
  const scale = hasRowScale ? cpuValues(rest[hasBias ? 1 : 0]!) : undefined;
  const residual = hasResidual ? cpuValues(rest[rest.length - 1]!) : undefined;
  // element (k, n) of op(w) for this batch: strides of w read as [K, N]
  const [sk, sn] = transB ? [1, K] : [N, 1];
  for (let p = 0; p < batch; p++) {
    const wBase = bShared ? 0 : p * K * N;
    for (let m = 0; m < M; m++) {
      const xRow = (p * M + m) * K;
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0, wi = wBase + n * sn; k < K; k++, wi += sk) acc += x[xRow + k]! * w[wi]!;
        const i = (p * M + m) * N + n;
        o[i] = (residual ? residual[i]! : 0) + (acc * (scale ? scale[n]! : 1) + (bias ? bias[n]! : 0));
      }
    }
  }
  return out;
}

/** silu(x gate^T) * (x up^T): both dot products in float64, the product rounded to f32 once. */
function swigluLinear(inputs: Tensor[], { M, N, K, hasRowScale, norm, outShape }: SwigluLinearAttrs): Tensor {
  const [, gate, up, gateScale, upScale] = inputs;
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const xv = inputRows(inputs, K, norm);
  const gv = cpuValues(gate!);
  const uv = cpuValues(up!);
  const gs = hasRowScale ? cpuValues(gateScale!) : undefined;
  const us = hasRowScale ? cpuValues(upScale!) : undefined;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let g = 0;
      let u = 0;
      for (let k = 0; k < K; k++) {
        const xk = xv[m * K + k]!;
        g += xk * gv[n * K + k]!;
        u += xk * uv[n * K + k]!;
      }
      o[m * N + n] = silu64(g * (gs ? gs[n]! : 1)) * (u * (us ? us[n]! : 1));
    }
  }
  return out;
}

/** Each matrix's product as `matmul` computes it for `linear`: the same float64 sums, so the same f32 results. */
function linears(inputs: Tensor[], { M, K, outputs, norm }: LinearsAttrs): Tensor[] {
  const [x, ...rest] = inputs;
  const normWeight = norm ? [inputs[inputs.length - 1]!] : [];
  let at = 0;
  return outputs.map(({ N, hasBias, hasRowScale, outShape }) => {
    const own = rest.slice(at, (at += 1 + (hasBias ? 1 : 0) + (hasRowScale ? 1 : 0)));
    return matmul([x!, ...own, ...normWeight], { batch: 1, M, N, K, transB: true, bShared: true, hasBias, hasRowScale, norm, outShape });
  });
}

// Registered on import (the package lists its kernel files under sideEffects).
registerKernel({ op: 'matmul', backend: 'cpu', fn: matmul });
registerKernel({ op: 'swigluLinear', backend: 'cpu', fn: swigluLinear });
registerKernel({ op: 'linears', backend: 'cpu', fn: linears });

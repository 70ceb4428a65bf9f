import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import { silu64 } from '../activations.js';
import type { LinearsAttrs, MatmulAttrs, SwigluLinearAttrs } from '../linear.js';

/** The reference product: float64 accumulation, one output at a time, plus any residual, rounded to f32 once. */
function matmul([a, b, ...rest]: Tensor[], { batch, M, N, K, transB, bShared, hasBias, hasRowScale, hasResidual, outShape }: MatmulAttrs): Tensor {
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const x = cpuValues(a!);
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
function swigluLinear([x, gate, up, gateScale, upScale]: Tensor[], { M, N, K, hasRowScale, outShape }: SwigluLinearAttrs): Tensor {
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const xv = cpuValues(x!);
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
function linears([x, ...rest]: Tensor[], { M, K, outputs }: LinearsAttrs): Tensor[] {
  let at = 0;
  return outputs.map(({ N, hasBias, hasRowScale, outShape }) => {
    const inputs = rest.slice(at, (at += 1 + (hasBias ? 1 : 0) + (hasRowScale ? 1 : 0)));
    return matmul([x!, ...inputs], { batch: 1, M, N, K, transB: true, bShared: true, hasBias, hasRowScale, outShape });
  });
}

// Registered on import (the package lists its kernel files under sideEffects).
registerKernel({ op: 'matmul', backend: 'cpu', fn: matmul });
registerKernel({ op: 'swigluLinear', backend: 'cpu', fn: swigluLinear });
registerKernel({ op: 'linears', backend: 'cpu', fn: linears });

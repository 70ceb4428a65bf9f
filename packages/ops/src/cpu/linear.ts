import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import type { MatmulAttrs } from '../linear.js';

/** The reference product: float64 accumulation, one output at a time. */
function matmul([a, b, ...rest]: Tensor[], { batch, M, N, K, transB, bShared, hasBias, hasRowScale, outShape }: MatmulAttrs): Tensor {
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const x = cpuValues(a!);
  const w = cpuValues(b!);
  const bias = hasBias ? cpuValues(rest[0]!) : undefined;
  const scale = hasRowScale ? cpuValues(rest[hasBias ? 1 : 0]!) : undefined;
  // element (k, n) of op(w) for this batch: strides of w read as [K, N]
  const [sk, sn] = transB ? [1, K] : [N, 1];
  for (let p = 0; p < batch; p++) {
    const wBase = bShared ? 0 : p * K * N;
    for (let m = 0; m < M; m++) {
      const xRow = (p * M + m) * K;
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0, wi = wBase + n * sn; k < K; k++, wi += sk) acc += x[xRow + k]! * w[wi]!;
        o[(p * M + m) * N + n] = acc * (scale ? scale[n]! : 1) + (bias ? bias[n]! : 0);
      }
    }
  }
  return out;
}

// Registered on import (the package lists its kernel files under sideEffects).
registerKernel({ op: 'matmul', backend: 'cpu', fn: matmul });

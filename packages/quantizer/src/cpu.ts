import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import type { PackedLinearAttrs } from './linear.js';
import { unpackRange } from './pack.js';

/** The reference: one row of W decoded at a time (never all of W), float64 accumulation. */
function packedLinear([x, codes, scales, bias]: Tensor[], { M, N, K, bits, hasBias, outShape }: PackedLinearAttrs): Tensor {
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const xs = cpuValues(x!);
  const s = cpuValues(scales!);
  const b = hasBias ? cpuValues(bias!) : undefined;
  const bytes = cpuStorage(codes!) as Uint8Array;
  const row = new Int8Array(K);
  for (let n = 0; n < N; n++) {
    unpackRange(bytes, bits, n * K, row);
    for (let m = 0; m < M; m++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += xs[m * K + k]! * row[k]!;
      o[m * N + n] = acc * s[n]! + (b ? b[n]! : 0);
    }
  }
  return out;
}

// Registered on import (package.json lists this file under sideEffects).
registerKernel({ op: 'packedLinear', backend: 'cpu', fn: packedLinear });

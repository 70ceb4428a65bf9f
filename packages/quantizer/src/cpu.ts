import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import type { PackedLinearAttrs } from './linear.js';
import { unpackRange } from './pack.js';
import { roundHalfEven } from './sdclip.js';
import { INT8_ACTIVATION_BLOCK } from './webgpu.js';

/** The reference: one row of W decoded at a time (never all of W), float64 accumulation. */
function packedLinear([x, codes, scales, bias]: Tensor[], { M, N, K, bits, hasBias, int8Activations, outShape }: PackedLinearAttrs): Tensor {
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const xs = int8Activations ? int8ActivationRows(cpuValues(x!), M, K) : cpuValues(x!);
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

/**
 * x [M, K] quantized as the int8-activation GEMV does it: per block of INT8_ACTIVATION_BLOCK consecutive x of a
 * row, in f32, s = max |x| / 127 (1 for a block of zeros) and q = round(x * (1 / s)), ties to even, clamped to
 * [-127, 127]; returned as q * s, so that the products with the codes sum to what the kernel's integer dot
 * products give, each block's times its s.
 */
export function int8ActivationRows(x: ArrayLike<number>, M: number, K: number): Float64Array {
  const out = new Float64Array(M * K);
  const B = INT8_ACTIVATION_BLOCK;
  for (let start = 0; start < M * K; start += B) {
    let max = 0;
    for (let k = start; k < start + B; k++) max = Math.max(max, Math.abs(x[k]!));
    const s = max > 0 ? Math.fround(max / 127) : 1;
    const inv = Math.fround(1 / s);
    for (let k = start; k < start + B; k++) out[k] = Math.max(-127, Math.min(127, roundHalfEven(Math.fround(x[k]! * inv)))) * s;
  }
  return out;
}

// Registered on import (package.json lists this file under sideEffects).
registerKernel({ op: 'packedLinear', backend: 'cpu', fn: packedLinear });

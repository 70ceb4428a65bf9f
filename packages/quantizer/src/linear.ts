import { type Backend, type Tensor } from '@phalanx/core';
import { linear } from '@phalanx/ops';
import type { QuantizedTensor } from './quantize.js';

/**
 * y = x W^T + b for a quantized W without expanding it: @phalanx/ops `linear` reads the i8 codes (one byte
 * per weight) and applies each row's scale in its epilogue, on whatever backend x lives on. The quantized
 * tensor must be 2-D ([out, in]) and live on x's backend (see `quantizedTo`).
 */
export function quantizedLinear(x: Tensor, q: QuantizedTensor, bias?: Tensor | null): Promise<Tensor> {
  return linear(x, q.codes, bias, { rowScale: q.scales });
}

/** A copy of the quantized tensor's codes and scales on `backend`. */
export async function quantizedTo(q: QuantizedTensor, backend: Backend): Promise<QuantizedTensor> {
  return { ...q, codes: await q.codes.to(backend), scales: await q.scales.to(backend) };
}

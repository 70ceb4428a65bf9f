import { type Backend, InputError, ShapeError, type Tensor, assertFloat, formatShape, runKernel } from '@phalanx/core';
import { linear } from '@phalanx/ops';
import { type CodeLayout, codeLayout, packQuantized, quantizedDims, unpackQuantized } from './pack.js';
import type { QuantizedTensor } from './quantize.js';
import './cpu.js';
import './webgpu.js';

/**
 * y[m, n] = (sum_k x[m, k] * code[n, k]) * scale[n] (+ bias[n]) with the codes read from a `packBits` stream
 * (row n's codes are codes [n*K, (n+1)*K) of it). x is read as [M, K].
 */
export interface PackedLinearAttrs {
  M: number;
  N: number;
  K: number;
  bits: number;
  hasBias: boolean;
  outShape: number[];
}

/**
 * y = x W^T + b for a quantized W [out, in] (W = codes * scale_r) without expanding it, on whatever backend x
 * lives on (the quantized tensor must live there too: see `quantizedTo`). x: [..., in], f32/f16/bf16; returns
 * f32 [..., out].
 *  - int8 codes: @phalanx/ops `linear` reads one byte per weight and scales each row in its epilogue.
 *  - packed codes (2..8 bits): the 'packedLinear' kernels decode the bit stream as they read it: a GEMV for
 *    up to 4 rows of x, a tiled matrix product for more.
 *
 * @example
 * const q = await quantizedTo(await quantize(w, { bits: 4, clipSigmas: 6 }), gpu, { layout: 'packed' });
 * const y = await quantizedLinear(x, q, bias); // reads 4 bits per weight
 */
export async function quantizedLinear(x: Tensor, q: QuantizedTensor, bias?: Tensor | null): Promise<Tensor> {
  if (codeLayout(q) === 'int8') return linear(x, q, bias);
  const name = q.codes.name ?? 'codes';
  const [N, K] = quantizedDims(q);
  assertFloat('quantizedLinear', x, 'input');
  if (x.rank < 1 || x.shape[x.rank - 1] !== K) throw new ShapeError(`quantizedLinear: input ${x.name ?? 'x'} ${formatShape(x.shape)} must end in ${K} (${name} holds [${N}, ${K}])`);
  for (const [role, t] of [['scales', q.scales], ['bias', bias]] as const) {
    if (!t) continue;
    assertFloat('quantizedLinear', t, role);
    if (t.rank !== 1 || t.shape[0] !== N) throw new ShapeError(`quantizedLinear: ${role} ${t.name ?? role} ${formatShape(t.shape)} must be [${N}] to match ${name}`);
  }
  const attrs: PackedLinearAttrs = { M: x.size / K, N, K, bits: q.bits, hasBias: !!bias, outShape: [...x.shape.slice(0, -1), N] };
  return (await runKernel('packedLinear', [x, q.codes, q.scales, ...(bias ? [bias] : [])], attrs))[0]!;
}

/**
 * A copy of the quantized tensor's codes and scales on `backend`, in `layout` ('packed': the u8 bit stream;
 * 'int8': one byte per code; default: as q holds them).
 */
export async function quantizedTo(q: QuantizedTensor, backend: Backend, options: { layout?: CodeLayout } = {}): Promise<QuantizedTensor> {
  const { layout = codeLayout(q) } = options;
  if (layout !== 'packed' && layout !== 'int8') throw new InputError(`quantizedTo: layout must be 'packed' or 'int8', got ${JSON.stringify(layout)}`);
  const form = layout === 'packed' ? await packQuantized(q) : await unpackQuantized(q);
  const moved = { ...form, codes: await form.codes.to(backend), scales: await q.scales.to(backend) };
  if (form.codes !== q.codes) form.codes.dispose();
  return moved;
}

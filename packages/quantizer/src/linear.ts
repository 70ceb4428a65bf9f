import { type Backend, InputError, ShapeError, type Tensor, assertFloat, cpu, formatShape, runKernel, tensor } from '@phalanx/core';
import { linear } from '@phalanx/ops';
import { type HadamardRotation, hadamardRotation, rotateRows } from './hadamard.js';
import { type CodeLayout, codeLayout, packQuantized, quantizedDims, unpackQuantized } from './pack.js';
import type { QuantizedTensor } from './quantize.js';
import './cpu.js';
import { PACKED_GEMV_MAX_ROWS, int8ActivationRefusal } from './webgpu.js';

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
  /** x quantized per row to int8, products as integer dot products (`QuantizedLinearOptions.int8Activations`). */
  int8Activations?: boolean;
  outShape: number[];
}

export interface QuantizedLinearOptions {
  /**
   * Opt-in, packed 4- or 8-bit codes in the GEMV case (1 to 4 rows of x, K a multiple of 32 at 4 bits and of 16
   * at 8): x is quantized to int8 in blocks of 16 consecutive values of a row, s_b = max |x_b| / 127 and
   * q = round(x / s_b) (ties to even, in f32), and the products are exact integer dot products (WGSL
   * `dot4I8Packed`): y = scale[n] * sum_b s_b * sum_(k in b) q code + b. Faster on GPUs with 4-way int8 dot
   * products; x's rounding adds an error of at most s_b / 2 per element (docs/packages/quantizer.md). Other
   * shapes and widths are an InputError.
   */
  int8Activations?: boolean;
}

/**
 * y = x W^T + b for a quantized W [out, in] (W = codes * scale_r) without expanding it, on whatever backend x
 * lives on (the quantized tensor must live there too: see `quantizedTo`). x: [..., in], f32/f16/bf16; returns
 * f32 [..., out].
 *  - int8 codes: @phalanx/ops `linear` reads one byte per weight and scales each row in its epilogue.
 *  - packed codes (2..8 bits): the 'packedLinear' kernels decode the bit stream as they read it: a GEMV for
 *    up to 4 rows of x, a tiled matrix product for more.
 * A rotated q (codes of W R, `quantize`'s `rotate`) gets x R first (`rotateHadamard`), so y is the unrotated
 * layer's up to the quantization error.
 *
 * @example
 * const q = await quantizedTo(await quantize(w, { bits: 4, clipSigmas: 6 }), gpu, { layout: 'packed' });
 * const y = await quantizedLinear(x, q, bias); // reads 4 bits per weight
 */
export async function quantizedLinear(x: Tensor, q: QuantizedTensor, bias?: Tensor | null, options: QuantizedLinearOptions = {}): Promise<Tensor> {
  const name = q.codes.name ?? 'codes';
  const [N, K] = quantizedDims(q);
  assertFloat('quantizedLinear', x, 'input');
  if (x.rank < 1 || x.shape[x.rank - 1] !== K) throw new ShapeError(`quantizedLinear: input ${x.name ?? 'x'} ${formatShape(x.shape)} must end in ${K} (${name} holds [${N}, ${K}])`);
  if (options.int8Activations) {
    const M = x.size / K;
    const why =
      codeLayout(q) !== 'packed' ? 'codes held one per byte (int8 layout); use quantizedTo(q, backend, { layout: "packed" })'
      : M > PACKED_GEMV_MAX_ROWS ? `${M} rows of x (the GEMV takes 1 to ${PACKED_GEMV_MAX_ROWS})`
      : int8ActivationRefusal(q.bits, K);
    if (why) throw new InputError(`quantizedLinear ${name}: int8Activations cannot run here: ${why}`);
  }
  if (!q.rotation) return codesLinear(x, q, bias, options);
  const rotated = await rotateHadamard(x, q.rotation);
  try {
    return await codesLinear(rotated, q, bias, options);
  } finally {
    rotated.dispose();
  }
}

/** y = x (codes * scale_r)^T + b; x checked by the caller. */
async function codesLinear(x: Tensor, q: QuantizedTensor, bias: Tensor | null | undefined, options: QuantizedLinearOptions): Promise<Tensor> {
  if (codeLayout(q) === 'int8') return linear(x, q, bias);
  const name = q.codes.name ?? 'codes';
  const [N, K] = quantizedDims(q);
  for (const [role, t] of [['scales', q.scales], ['bias', bias]] as const) {
    if (!t) continue;
    assertFloat('quantizedLinear', t, role);
    if (t.rank !== 1 || t.shape[0] !== N) throw new ShapeError(`quantizedLinear: ${role} ${t.name ?? role} ${formatShape(t.shape)} must be [${N}] to match ${name}`);
  }
  const attrs: PackedLinearAttrs = { M: x.size / K, N, K, bits: q.bits, hasBias: !!bias, int8Activations: !!options.int8Activations, outShape: [...x.shape.slice(0, -1), N] };
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

/** R_block (or R_block^T) on each backend that rotated an input off the CPU, uploaded once per rotation. */
const rotationMatrices = new WeakMap<Backend, Map<string, Tensor>>();

async function rotationMatrix(rotation: HadamardRotation, inverse: boolean, backend: Backend): Promise<Tensor> {
  const { block } = rotation;
  const key = `${block} ${rotation.seed} ${inverse}`;
  let cached = rotationMatrices.get(backend);
  if (!cached) rotationMatrices.set(backend, (cached = new Map()));
  let m = cached.get(key);
  if (!m) {
    // linear(x, m) = x m^T, so m = (R or R^T)^T: the rows of I R^T (or of I R)
    const eye = new Float64Array(block * block);
    for (let i = 0; i < block; i++) eye[i * block + i] = 1;
    const host = tensor(Float32Array.from(rotateRows(eye, rotation, !inverse)), [block, block], { name: `hadamard${block}` });
    m = await host.to(backend);
    if (m !== host) host.dispose();
    cached.set(key, m);
  }
  return m;
}

/**
 * x R over x's last dim (`HadamardRotation`), or x R^T with `inverse` (undoing it). On the CPU: the fast
 * transform in float64 (K log block operations per row). On other backends: one @phalanx/ops `linear` of x's
 * blocks by the dense [block, block] R_block (block * K multiply-adds per row, no kernel of its own; keep the
 * block small there, e.g. `quantize`'s `rotate: { block: 128 }`). x: [..., K] float, K a multiple of the
 * block; returns f32 on x's backend.
 */
export async function rotateHadamard(x: Tensor, rotation: HadamardRotation, options: { inverse?: boolean } = {}): Promise<Tensor> {
  const { inverse = false } = options;
  assertFloat('rotateHadamard', x, 'input');
  const K = x.shape[x.rank - 1] ?? 0;
  hadamardRotation('rotateHadamard', `input ${x.name ?? 'x'} ${formatShape(x.shape)}`, K, rotation);
  if (x.backend === cpu) return tensor(Float32Array.from(rotateRows(Float64Array.from(await x.data()), rotation, inverse)), x.shape);
  const blocks = x.reshape([x.size / rotation.block, rotation.block]);
  try {
    const y = await linear(blocks, await rotationMatrix(rotation, inverse, x.backend));
    try {
      return y.reshape(x.shape);
    } finally {
      y.dispose();
    }
  } finally {
    blocks.dispose();
  }
}

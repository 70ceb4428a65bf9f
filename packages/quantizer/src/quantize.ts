import { InputError, ShapeError, Tensor, assertFloat, encodeHalf, formatShape, tensor } from '@phalanx/core';
import { type Hessian, gptqCodes, hessianMatrix } from './gptq.js';
import { type HadamardOptions, type HadamardRotation, hadamardRotation, rotateRows, rotateSymmetric } from './hadamard.js';
import { codeValues, quantizedDims } from './pack.js';
import { assertBits, clipRange, quantizeValue, rowScales } from './sdclip.js';

export type QuantMethod = 'rtn' | 'gptq';

export interface QuantizeOptions {
  /** Code width, 2..8: codes are integers in [-R, R] with R = 2^(bits-1) - 1. */
  bits: number;
  /** SDClip k: each row clips at +-k standard deviations. */
  clipSigmas: number;
  /** 'rtn' (default): round to nearest. 'gptq': GPTQ error feedback; needs `hessian`. */
  method?: QuantMethod;
  /** For GPTQ: an accumulator from `accumulateHessian`, or a [cols, cols] float tensor. */
  hessian?: Hessian | Tensor;
  /** GPTQ block width (lazy batch updates). Default 128. */
  blockSize?: number;
  /** GPTQ damping, as a fraction of the mean Hessian diagonal. Default 0.01. */
  damping?: number;
  /** GPTQ act-order (columns by descending Hessian diagonal). Default true. */
  actOrder?: boolean;
  /**
   * 'hadamard' (or its `HadamardOptions`: block, seed): quantize W R instead of W, R the block-diagonal
   * randomized Hadamard rotation of the inputs (`HadamardRotation`), which spreads a column's outliers over
   * its block; a GPTQ Hessian becomes R^T H R. The result records R (`rotation`); `quantizedLinear` rotates
   * x to match. Default: no rotation.
   */
  rotate?: 'hadamard' | HadamardOptions;
}

/**
 * A quantized [rows, cols] matrix: W ~ codes * scales[row]. `quantize` returns int8 codes on the CPU;
 * `packQuantized` / `quantizedTo(q, backend, { layout: 'packed' })` give the packed form, and the codes'
 * dtype tells which one a tensor holds (`codeLayout`).
 */
export interface QuantizedTensor {
  /**
   * i8 [rows, cols]: integers in [-R, R], one per byte; or u8 [ceil(rows*cols*bits/8)]: the same codes
   * row-major in one bit stream (`packBits`), rows not padded.
   */
  codes: Tensor;
  /** [rows], f16 from `quantize` (any float dtype works): one scale per output row. */
  scales: Tensor;
  bits: number;
  clipSigmas: number;
  method: QuantMethod;
  /** The original weight's shape (rows = shape[0]; the rest is flattened into cols). */
  shape: readonly number[];
  /** Set when the codes hold W R rather than W (`quantize`'s `rotate`): the input must be rotated too, x R. */
  rotation?: HadamardRotation;
}

/**
 * SDClip quantization of a weight [rows, cols] (Hugging Face [out, in] layout) with one f16 scale per row:
 * s_r = fp16(max(k * std(W_r) / R, 1e-10)) (unbiased std), code = clamp(round(w / s_r), -R, R), rounding
 * half to even. With `method: 'gptq'` the codes come from GPTQ (the same scales and grid). With
 * `rotate: 'hadamard'` all of this applies to W R (see `HadamardRotation`).
 *
 * @example
 * const q = await quantize(w, { bits: 6, clipSigmas: 12 });
 * const h = createHessian(w.shape[1]); await accumulateHessian(h, x);
 * const g = await quantize(w, { bits: 6, clipSigmas: 12, method: 'gptq', hessian: h });
 * const r = await quantize(w, { bits: 4, clipSigmas: 2.5, rotate: 'hadamard' }); // codes of W R
 */
export async function quantize(w: Tensor, options: QuantizeOptions): Promise<QuantizedTensor> {
  const name = w.name ?? 'weight';
  const { bits, clipSigmas, method = 'rtn', hessian, blockSize = 128, damping = 0.01, actOrder = true, rotate } = options;
  assertFloat('quantize', w, 'weight');
  if (w.rank !== 2) throw new ShapeError(`quantize: ${name} must be [rows, cols], got ${formatShape(w.shape)}`);
  const [rows, cols] = w.shape as [number, number];
  if (cols < 2) throw new ShapeError(`quantize: ${name} ${formatShape(w.shape)} needs at least 2 columns (the unbiased row std is undefined for 1)`);
  assertBits('quantize', bits);
  if (!(clipSigmas > 0) || !Number.isFinite(clipSigmas)) throw new InputError(`quantize: clipSigmas must be a positive number, got ${clipSigmas}`);
  if (method !== 'rtn' && method !== 'gptq') throw new InputError(`quantize: method must be 'rtn' or 'gptq', got ${JSON.stringify(method)}`);
  if (method === 'rtn' && hessian) throw new InputError(`quantize: a hessian was given for ${name} but method is 'rtn' (did you mean 'gptq'?)`);
  if (method === 'gptq' && !hessian) throw new InputError(`quantize: method 'gptq' needs a hessian for ${name}`);
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new InputError(`quantize: blockSize must be a positive integer, got ${blockSize}`);
  if (!(damping >= 0) || !Number.isFinite(damping)) throw new InputError(`quantize: damping must be a non-negative number, got ${damping}`);
  if (rotate !== undefined && rotate !== 'hadamard' && (typeof rotate !== 'object' || rotate === null)) throw new InputError(`quantize: rotate must be 'hadamard', { block?, seed? } or absent, got ${JSON.stringify(rotate)}`);
  const rotation = rotate ? hadamardRotation('quantize', `${name} ${formatShape(w.shape)}`, cols, rotate === 'hadamard' ? {} : rotate) : undefined;

  const raw = await w.data();
  const bad = raw.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) throw new InputError(`quantize: ${name} element ${bad} is ${raw[bad]}`);
  const data = rotation ? rotateRows(Float64Array.from(raw), rotation) : raw; // every row times R
  const R = clipRange(bits);
  const scales = rowScales(data, rows, cols, clipSigmas, R);
  let codes: Int8Array;
  if (method === 'gptq') {
    const h = await hessianArray(hessian!, cols, name);
    codes = gptqCodes(data, rows, cols, scales.values, R, rotation ? rotateSymmetric(h, cols, rotation) : h, { blockSize, damping, actOrder });
  } else {
    codes = new Int8Array(rows * cols);
    for (let i = 0; i < codes.length; i++) codes[i] = quantizeValue(data[i]!, scales.values[Math.floor(i / cols)]!, R);
  }
  return {
    codes: tensor(codes, [rows, cols], { name: `${name}.codes` }),
    scales: tensor(scales.bits, [rows], { dtype: 'f16', name: `${name}.scales` }),
    bits,
    clipSigmas,
    method,
    shape: w.shape,
    ...(rotation && { rotation }),
  };
}

async function hessianArray(h: Hessian | Tensor, cols: number, name: string): Promise<ArrayLike<number>> {
  if (h instanceof Tensor) {
    assertFloat('quantize', h, 'hessian');
    if (h.rank !== 2 || h.shape[0] !== cols || h.shape[1] !== cols) throw new ShapeError(`quantize: hessian ${formatShape(h.shape)} must be [${cols}, ${cols}] for ${name}`);
    return h.data();
  }
  if (h.columns !== cols) throw new ShapeError(`quantize: hessian is [${h.columns}, ${h.columns}], ${name} needs [${cols}, ${cols}]`);
  return hessianMatrix(h);
}

export interface DequantizeOptions {
  /**
   * 'f32' (default), or 'bf16': each f32 value codes * scale_r rounded to the nearest bf16 (ties to even),
   * as the reference's `(q.float() * s.float()[:, None]).to(torch.bfloat16)` does for `tok_emb`, whose
   * template dtype is bf16 (spec section 7, dequantization).
   */
  dtype?: 'f32' | 'bf16';
  /**
   * For a rotated q: true returns W R as stored (codes * scale_r, what `quantizedLinear` multiplies by x R);
   * false (default) the weight itself, (W R) R^T, rotated back in float64 and then rounded to `dtype`.
   */
  rotated?: boolean;
}

/**
 * W = codes * scale_r (computed in f32) in the original shape, on the CPU; int8 or packed codes. A rotated q
 * (`rotation`) gives the unrotated weight unless `rotated` is set.
 */
export async function dequantize(q: QuantizedTensor, options: DequantizeOptions = {}): Promise<Tensor> {
  const { dtype = 'f32', rotated = false } = options;
  if (dtype !== 'f32' && dtype !== 'bf16') throw new InputError(`dequantize: dtype must be 'f32' or 'bf16', got ${JSON.stringify(dtype)}`);
  const [rows, cols] = quantizedDims(q);
  const codes = await codeValues(q);
  const scales = await q.scales.data();
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = codes[r * cols + c]! * scales[r]!;
  if (q.rotation && !rotated) out.set(rotateRows(Float64Array.from(out), q.rotation, true));
  return tensor(dtype === 'bf16' ? encodeHalf('bf16', out) : out, q.shape, { dtype });
}

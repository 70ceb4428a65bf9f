import type { Backend } from './backend.js';
import { type DType, assertDType } from './dtype.js';
import { DTypeError } from './errors.js';
import { runKernel } from './kernels.js';
import { broadcastShapes, broadcastStrides, normAxis, sameShape } from './shape.js';
import type { Tensor } from './tensor.js';

/** Attributes of an elementwise binary op, worked out once here so every backend's kernel gets the same. */
export interface BinaryAttrs {
  outShape: number[];
  outDType: DType;
  /** Strides of a and b as broadcast to outShape (0 along broadcast dims); undefined when no broadcasting is needed. */
  aStrides?: number[];
  bStrides?: number[];
}

/** Result dtype of arithmetic: i32 op i32 stays i32, u32 op u32 stays u32, anything else computes in f32. */
export function arithmeticDType(a: DType, b: DType): DType {
  return a === b && (a === 'i32' || a === 'u32') ? a : 'f32';
}

function binaryAttrs(op: string, a: Tensor, b: Tensor): BinaryAttrs {
  const outShape = broadcastShapes(a.shape, b.shape, op);
  const outDType = arithmeticDType(a.dtype, b.dtype);
  if (sameShape(a.shape, outShape) && sameShape(b.shape, outShape)) return { outShape, outDType };
  return { outShape, outDType, aStrides: broadcastStrides(a.shape, outShape), bStrides: broadcastStrides(b.shape, outShape) };
}

async function one(op: string, inputs: Tensor[], attrs: unknown, backend?: Backend): Promise<Tensor> {
  return (await runKernel(op, inputs, attrs, backend))[0]!;
}

/** a + b with NumPy broadcasting. */
export async function add(a: Tensor, b: Tensor): Promise<Tensor> {
  return one('add', [a, b], binaryAttrs('add', a, b));
}

/** a * b with NumPy broadcasting. */
export async function mul(a: Tensor, b: Tensor): Promise<Tensor> {
  return one('mul', [a, b], binaryAttrs('mul', a, b));
}

export interface ScaleAttrs {
  scale: number;
  bias: number;
}

/** x * scale + bias, in f32. */
export async function scale(x: Tensor, scale: number, bias = 0): Promise<Tensor> {
  return one('scale', [x], { scale, bias } satisfies ScaleAttrs);
}

/** A new tensor with the same dtype, shape and values. */
export async function copy(x: Tensor): Promise<Tensor> {
  return one('copy', [x], {});
}

export interface CastAttrs {
  dtype: DType;
}

/** Supported cast targets: floats round to nearest even; f32 -> i32/u32 truncates toward zero. */
export const CAST_TARGETS: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'u32'];

/** Converts to `dtype` (f16/bf16 are rounded to nearest even; float -> integer truncates toward zero). */
export async function cast(x: Tensor, dtype: DType): Promise<Tensor> {
  assertDType(dtype, `cast ${x.name ?? 'tensor'}`);
  if (!CAST_TARGETS.includes(dtype)) throw new DTypeError(`cast ${x.name ?? 'tensor'} to ${dtype}: unsupported target (use one of ${CAST_TARGETS.join(', ')})`);
  if (dtype === x.dtype) return copy(x);
  return one('cast', [x], { dtype } satisfies CastAttrs);
}

export interface SumAttrs {
  /** The input read as [outer, n, inner], reduced over n. */
  outer: number;
  n: number;
  inner: number;
  outShape: number[];
}

/** Sum over one axis (or all elements when `axis` is omitted), in f32 (the CPU accumulates in float64). */
export async function sum(x: Tensor, options: { axis?: number; keepDims?: boolean } = {}): Promise<Tensor> {
  const { keepDims = false } = options;
  let attrs: SumAttrs;
  if (options.axis === undefined) {
    attrs = { outer: 1, n: x.size, inner: 1, outShape: keepDims ? x.shape.map(() => 1) : [] };
  } else {
    const axis = normAxis(options.axis, x.rank, `sum ${x.name ?? 'tensor'}: axis`);
    const outer = x.shape.slice(0, axis).reduce((p, d) => p * d, 1);
    const inner = x.shape.slice(axis + 1).reduce((p, d) => p * d, 1);
    const outShape = keepDims ? x.shape.map((d, i) => (i === axis ? 1 : d)) : x.shape.filter((_, i) => i !== axis);
    attrs = { outer, n: x.shape[axis]!, inner, outShape };
  }
  return one('sum', [x], attrs);
}

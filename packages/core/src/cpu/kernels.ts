import { type DType, type StorageArray, f32ToBf16Bits, f32ToF16Bits, isFloat, storageToData } from '../dtype.js';
import { registerKernel } from '../kernels.js';
import type { BinaryAttrs, CastAttrs, ScaleAttrs, SumAttrs } from '../ops.js';
import { empty, type Tensor } from '../tensor.js';
import { cpu } from './backend.js';

/** The storage array of a CPU tensor (for CPU kernels). */
export function cpuStorage(t: Tensor): StorageArray {
  return t.storage as StorageArray;
}

/** A CPU tensor's values as numbers (f16/bf16 decoded). */
export function cpuValues(t: Tensor): ArrayLike<number> {
  return storageToData(t.dtype, cpuStorage(t));
}

/**
 * Registers an elementwise CPU kernel: out[i] = f(values, i, attrs), where values are the inputs as numbers
 * (f16/bf16 decoded), written as f32 in the shape of input 0 unless `shape` says otherwise.
 */
export function registerCpuMap<A>(op: string, f: (values: ArrayLike<number>[], i: number, attrs: A) => number, shape = (inputs: Tensor[], _attrs: A): readonly number[] => inputs[0]!.shape): void {
  registerKernel({
    op,
    backend: 'cpu',
    fn: (inputs: Tensor[], attrs: A) => {
      const out = empty(shape(inputs, attrs), { backend: cpu });
      const o = cpuStorage(out);
      const values = inputs.map(cpuValues);
      for (let i = 0; i < o.length; i++) o[i] = f(values, i, attrs);
      return out;
    },
  });
}

function binary(combine: (x: number, y: number) => number, intCombine: (x: number, y: number) => number) {
  return ([a, b]: Tensor[], attrs: BinaryAttrs) => {
    const out = empty(attrs.outShape, { dtype: attrs.outDType, backend: cpu });
    const o = cpuStorage(out);
    const x = cpuValues(a!);
    const y = cpuValues(b!);
    const f = attrs.outDType === 'f32' ? combine : intCombine;
    if (!attrs.aStrides || !attrs.bStrides) {
      for (let i = 0; i < o.length; i++) o[i] = f(x[i]!, y[i]!);
      return out;
    }
    const { outShape, aStrides, bStrides } = attrs;
    const rank = outShape.length;
    const idx = new Array<number>(rank).fill(0);
    let ia = 0;
    let ib = 0;
    for (let i = 0; i < o.length; i++) {
      o[i] = f(x[ia]!, y[ib]!);
      // odometer increment of the output index, keeping the input offsets in step
      for (let d = rank - 1; d >= 0; d--) {
        ia += aStrides[d]!;
        ib += bStrides[d]!;
        if (++idx[d]! < outShape[d]!) break;
        ia -= aStrides[d]! * outShape[d]!;
        ib -= bStrides[d]! * outShape[d]!;
        idx[d] = 0;
      }
    }
    return out;
  };
}

function encoder(dtype: DType): (v: number) => number {
  switch (dtype) {
    case 'f16':
      return f32ToF16Bits;
    case 'bf16':
      return f32ToBf16Bits;
    default:
      return (v) => v;
  }
}

/**
 * Conversion to i32/u32 as the WebGPU kernels do it: truncate toward zero and saturate, floats to the largest
 * f32 inside the target's range (WGSL's rule), integers to the target's full range.
 */
function castValue(from: DType, to: DType, v: number): number {
  const float = isFloat(from);
  if (to === 'i32') return Math.max(-(2 ** 31), Math.min(float ? 2 ** 31 - 128 : 2 ** 31 - 1, Math.trunc(v)));
  if (to === 'u32') return Math.max(0, Math.min(float ? 2 ** 32 - 256 : 2 ** 32 - 1, Math.trunc(v)));
  return v;
}

// Registered on import (the package lists this file under sideEffects).
registerKernel({ op: 'add', backend: 'cpu', fn: binary((x, y) => x + y, (x, y) => x + y) });
registerKernel({ op: 'mul', backend: 'cpu', fn: binary((x, y) => x * y, Math.imul) });
registerCpuMap<ScaleAttrs>('scale', ([v], i, { scale, bias }) => v![i]! * scale + bias);
registerKernel({
  op: 'copy',
  backend: 'cpu',
  fn: ([x]: Tensor[]) => {
    const out = empty(x!.shape, { dtype: x!.dtype, backend: cpu });
    cpuStorage(out).set(cpuStorage(x!) as never);
    return out;
  },
});
registerKernel({
  op: 'cast',
  backend: 'cpu',
  fn: ([x]: Tensor[], { dtype }: CastAttrs) => {
    const out = empty(x!.shape, { dtype, backend: cpu });
    const o = cpuStorage(out);
    const v = cpuValues(x!);
    const enc = encoder(dtype);
    for (let i = 0; i < o.length; i++) o[i] = enc(castValue(x!.dtype, dtype, v[i]!));
    return out;
  },
});
registerKernel({
  op: 'sum',
  backend: 'cpu',
  fn: ([x]: Tensor[], { outer, n, inner, outShape }: SumAttrs) => {
    const out = empty(outShape, { backend: cpu });
    const o = cpuStorage(out);
    const v = cpuValues(x!);
    for (let a = 0; a < outer; a++) {
      for (let c = 0; c < inner; c++) {
        let acc = 0; // float64
        for (let j = 0, p = a * n * inner + c; j < n; j++, p += inner) acc += v[p]!;
        o[a * inner + c] = acc;
      }
    }
    return out;
  },
});

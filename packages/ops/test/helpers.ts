import { type Backend, type DType, Rng, type Tensor, tensor } from '@phalanx/core';
import type { Int8Weight } from '../src/index.js';
import type { WebGPUBackend } from '@phalanx/webgpu';
import type { GemvShape } from '../src/webgpu/linear.js';

/** A seeded normal tensor on `backend` and its values as stored (after rounding to `dtype`). */
export async function rand(shape: number[], seed: number, backend: Backend, dtype: DType = 'f32', name?: string): Promise<{ t: Tensor; v: number[] }> {
  const rng = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const t = tensor(Array.from({ length: n }, () => rng.normal()), shape, { dtype, backend, name });
  return { t, v: Array.from(await t.data()) };
}

/** Seeded int8 weights [N, K] (codes over the whole i8 range, one small f32 scale per row) and their dequantized values. */
export async function randInt8(N: number, K: number, seed: number, backend: Backend, name = 'w'): Promise<{ w: Int8Weight; v: number[] }> {
  const rng = new Rng(seed);
  const codes = Array.from({ length: N * K }, () => rng.int(256) - 128);
  const scales = tensor(Array.from({ length: N }, () => 0.01 + rng.uniform() * 0.05), [N], { backend, name: `${name}.scales` });
  const sv = Array.from(await scales.data());
  return { w: { codes: tensor(new Int8Array(codes), [N, K], { backend, name }), scales }, v: codes.map((c, i) => c * sv[Math.floor(i / K)]!) };
}

/** The kernels `f` dispatches on `g` and how many times each, sorted by name; f's result is disposed. */
export async function dispatches(g: WebGPUBackend, f: () => Promise<Tensor>): Promise<[string, number][]> {
  const p = g.profile();
  (await f()).dispose();
  return (await p.stop()).kernels.map((k) => [k.name, k.count] as [string, number]).sort();
}

/** GEMV shapes besides the default that the benchmark tried; the GEMV kernels' tests run each of them. */
export const GEMV_SHAPES: GemvShape[] = [
  { rowsPerGroup: 8, lanes: 32, unroll: 2 },
  { rowsPerGroup: 2, lanes: 128, unroll: 4 },
  { rowsPerGroup: 4, lanes: 64, unroll: 8 },
];

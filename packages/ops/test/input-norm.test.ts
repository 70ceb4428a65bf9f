import { InputError, ShapeError, type Tensor, assertClose, tensor } from '@phalanx/core';
import { type WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { dispatches, rand, randInt8 } from './helpers.js';
import { type InputNorm, type LinearWeight, linear, linears, rmsNorm, swigluLinear } from '../src/index.js';

const { backends, gpu } = await testBackends();

let seed = 900;

/** A norm weight near 1 (as trained ones are) with an offset of 0 or 1 (Gemma-style `1 + w`). */
async function normOf(K: number, backend: Parameters<typeof rand>[2], weightOffset = 0): Promise<InputNorm> {
  const { t } = await rand([K], seed++, backend);
  const weight = tensor(Array.from(await t.data(), (v) => 1 - weightOffset + 0.2 * v), [K], { backend, name: 'input_layernorm.weight' });
  return { weight, eps: 1e-5, weightOffset };
}

/** The same op on rmsNorm(x) computed first: what the fused kernels must match. */
async function normed(x: Tensor, norm: InputNorm): Promise<Tensor> {
  return rmsNorm(x, norm.weight, { eps: norm.eps, weightOffset: norm.weightOffset });
}

describe.each(backends)('products with an input RMSNorm on $name', (backend) => {
  // (M, N, K): 1..4 rows with K a multiple of 4 are the fused GEMV; 5+ rows and K % 4 != 0 run rmsNorm first
  const SHAPES: [number, number, number][] = [
    [1, 63, 100],
    [3, 257, 36],
    [1, 33, 7],
    [5, 63, 64],
  ];

  it.each(SHAPES.flatMap((s) => (['f32', 'bf16', 'i8'] as const).map((k) => [...s, k] as const)))('linear M=%i N=%i K=%i, %s weights: equals linear(rmsNorm(x)), with bias and residual', async (M, N, K, kind) => {
    const x = await rand([M, K], seed++, backend);
    const w: LinearWeight = kind === 'i8' ? (await randInt8(N, K, seed++, backend)).w : (await rand([N, K], seed++, backend, kind)).t;
    const b = await rand([N], seed++, backend);
    const r = await rand([M, N], seed++, backend);
    for (const offset of [0, 1]) {
      const norm = await normOf(K, backend, offset);
      const y = await linear(x.t, w, b.t, { norm, residual: r.t });
      const want = await linear(await normed(x.t, norm), w, b.t, { residual: r.t });
      assertClose(await want.data(), await y.data(), { rtol: 1e-5, name: `linear ${M}x${N}x${K} ${kind} offset ${offset}` });
    }
  });

  it.each(SHAPES)('linears M=%i N=[%i, 5, 9] K=%i, f32, int8 and bf16 weights: each equals linear(rmsNorm(x), W_i, b_i)', async (M, N, K) => {
    const x = await rand([M, K], seed++, backend);
    const ws: LinearWeight[] = [(await rand([N, K], seed++, backend)).t, (await randInt8(5, K, seed++, backend)).w, (await rand([9, K], seed++, backend, 'bf16')).t];
    const bias = await rand([9], seed++, backend);
    const norm = await normOf(K, backend);
    const ys = await linears(x.t, ws, [null, null, bias.t], { norm });
    const h = await normed(x.t, norm);
    for (const [i, y] of ys.entries()) {
      const want = await linear(h, ws[i]!, i === 2 ? bias.t : null);
      assertClose(await want.data(), await y.data(), { rtol: 1e-5, name: `linears matrix ${i}` });
    }
  });

  it.each(SHAPES.flatMap((s) => (['bf16', 'i8'] as const).map((k) => [...s, k] as const)))('swigluLinear M=%i N=%i K=%i, %s weights: equals swigluLinear(rmsNorm(x))', async (M, N, K, kind) => {
    const x = await rand([M, K], seed++, backend);
    const pick = async (): Promise<LinearWeight> => (kind === 'i8' ? (await randInt8(N, K, seed++, backend)).w : (await rand([N, K], seed++, backend, kind)).t);
    const [g, u] = [await pick(), await pick()];
    const norm = await normOf(K, backend);
    const y = await swigluLinear(x.t, g, u, { norm });
    const want = await swigluLinear(await normed(x.t, norm), g, u);
    assertClose(await want.data(), await y.data(), { rtol: 1e-5, name: `swigluLinear ${M}x${N}x${K} ${kind}` });
  });

  it('refuses a norm weight of the wrong size, a bad eps or offset, naming them', async () => {
    const x = await rand([1, 8], seed++, backend);
    const w = (await rand([3, 8], seed++, backend)).t;
    const weight = tensor(new Float32Array(7), [7], { backend, name: 'ln.weight' });
    await expect(linear(x.t, w, null, { norm: { weight, eps: 1e-5 } })).rejects.toThrow(new ShapeError('linear: norm weight ln.weight [7] must be [8] to match input x [1, 8]'));
    const good = tensor(new Float32Array(8).fill(1), [8], { backend });
    await expect(linears(x.t, [w, w], [], { norm: { weight: good, eps: 0 } })).rejects.toThrow(new InputError('linears: norm eps must be a finite number > 0, got 0'));
    await expect(swigluLinear(x.t, w, w, { norm: { weight: good, eps: 1e-5, weightOffset: NaN } })).rejects.toThrow(/swigluLinear: norm weightOffset must be finite/);
  });
});

describe.runIf(gpu)('input RMSNorm on WebGPU: dispatches', () => {
  it('the norm runs inside the GEMV: one dispatch per op in decode, rmsNorm first for prefill', async () => {
    const g = gpu as WebGPUBackend;
    const K = 64;
    const norm = await normOf(K, g);
    const [w, v] = [(await rand([63, K], seed++, g)).t, (await rand([63, K], seed++, g)).t];
    const x = (await rand([1, K], seed++, g)).t;
    expect(await dispatches(g, () => linear(x, w, null, { norm }))).toEqual([['matmul', 1]]);
    expect(await dispatches(g, async () => (await linears(x, [w, v], [], { norm }))[0]!)).toEqual([['linears', 1]]);
    expect(await dispatches(g, () => swigluLinear(x, w, v, { norm }))).toEqual([['swigluLinear', 1]]);
    const prefill = (await rand([5, K], seed++, g)).t;
    expect(await dispatches(g, () => linear(prefill, w, null, { norm }))).toEqual([['matmul', 1], ['rmsNorm', 1]]);
  });
});

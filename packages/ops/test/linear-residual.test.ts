import { ShapeError, add, assertClose, tensor } from '@phalanx/core';
import { type WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { dispatches, rand, randInt8 } from './helpers.js';
import { fusesLinearResidual, linear } from '../src/index.js';
import { gemvProgram } from '../src/webgpu/linear.js';

const { backends, gpu } = await testBackends();

let seed = 500;

describe.each(backends)('linear with a residual on $name', (backend) => {
  // (M, N, K): 1..4 rows with K a multiple of 4 take the fused epilogue; 5+ rows and K % 4 != 0 compose
  const SHAPES: [number, number, number][] = [
    [1, 1, 64],
    [1, 63, 100],
    [2, 257, 288],
    [4, 257, 36],
    [1, 63, 7],
    [5, 63, 64],
  ];
  const KINDS = ['f32', 'bf16', 'i8'] as const;
  it.each(SHAPES.flatMap((s) => KINDS.map((k) => [...s, k] as const)))('M=%i N=%i K=%i, %s weights, vs linear then add', async (M, N, K, kind) => {
    const x = await rand([M, K], seed++, backend);
    const w = kind === 'i8' ? (await randInt8(N, K, seed++, backend)).w : (await rand([N, K], seed++, backend, kind)).t;
    const b = await rand([N], seed++, backend);
    const r = await rand([M, N], seed++, backend);
    for (const bias of [b.t, null]) {
      const y = await linear(x.t, w, bias, { residual: r.t });
      expect(y.shape).toEqual([M, N]);
      expect(y.dtype).toBe('f32');
      const want = await add(r.t, await linear(x.t, w, bias));
      assertClose(await want.data(), await y.data(), { rtol: 1e-5, name: `${M}x${N}x${K} ${kind}${bias ? ' +bias' : ''}` });
    }
    expect(fusesLinearResidual(M, K)).toBe(M <= 4 && K % 4 === 0);
  });

  it('keeps leading dims; a bf16 residual', async () => {
    const x = await rand([1, 1, 64], seed++, backend);
    const w = await rand([63, 64], seed++, backend);
    const r = await rand([1, 1, 63], seed++, backend, 'bf16');
    const y = await linear(x.t, w.t, null, { residual: r.t });
    expect(y.shape).toEqual([1, 1, 63]);
    assertClose(await (await add(r.t, await linear(x.t, w.t))).data(), await y.data(), { rtol: 1e-5 });
  });

  it('refuses a residual of another shape, naming it', async () => {
    const x = tensor(new Float32Array(8), [2, 4], { backend, name: 'h' });
    const w = tensor(new Float32Array(12), [3, 4], { backend, name: 'o_proj.weight' });
    for (const shape of [[2, 4], [3], [1, 2, 3]]) {
      const r = tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, { backend, name: 'x' });
      await expect(linear(x, w, null, { residual: r })).rejects.toThrow(ShapeError);
      await expect(linear(x, w, null, { residual: r })).rejects.toThrow(/residual x \[.*\] must be the output's shape \[2, 3\]/);
    }
  });
});

describe.runIf(gpu)('linear with a residual on WebGPU: kernel choice', () => {
  it('one dispatch in decode (float and int8 weights); matmul + add for prefill', async () => {
    const g = gpu as WebGPUBackend;
    const [N, K] = [63, 64];
    const w = await rand([N, K], seed++, g, 'bf16');
    const q = (await randInt8(N, K, seed++, g)).w;
    for (const M of [1, 4]) {
      const x = await rand([M, K], seed++, g);
      const r = await rand([M, N], seed++, g);
      expect(await dispatches(gpu as WebGPUBackend, () => linear(x.t, w.t, null, { residual: r.t }))).toEqual([['matmul', 1]]);
      expect(await dispatches(gpu as WebGPUBackend, () => linear(x.t, q, null, { residual: r.t }))).toEqual([['matmul', 1]]);
    }
    const x = await rand([5, K], seed++, g);
    const r = await rand([5, N], seed++, g);
    const composed = await dispatches(gpu as WebGPUBackend, () => linear(x.t, w.t, null, { residual: r.t }));
    expect(composed.map(([name]) => name)).toContain('matmul');
    expect(composed.length).toBe(2);
  });

  it('the GEMV program writes every output with the residual (NaN-poisoned output)', async () => {
    const g = gpu as WebGPUBackend;
    const [M, N, K] = [3, 37, 288];
    const x = await rand([M, K], seed++, g);
    const w = await rand([N, K], seed++, g, 'f16');
    const r = await rand([M, N], seed++, g);
    const out = tensor(new Float32Array(M * N).fill(NaN), [M, N], { backend: g });
    await g.run(gemvProgram('f32', 'f16', M, { residual: 'f32' }), [x.t, w.t, r.t], [out], { N, K }, [Math.ceil(N / 4), 1, 1]);
    const want = await add(r.t, await linear(x.t, w.t));
    assertClose(await want.data(), await out.data(), { rtol: 1e-5, name: 'gemv residual' });
  });
});

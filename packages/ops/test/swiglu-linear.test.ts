import { type DType, DTypeError, ShapeError, type Tensor, assertClose, tensor } from '@phalanx/core';
import { type WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { GEMV_SHAPES, dispatches, rand, randInt8 } from './helpers.js';
import { fusesSwigluLinear, linear, silu64, swiglu, swigluLinear } from '../src/index.js';
import { gemvProgram } from '../src/webgpu/linear.js';

const { backends, gpu } = await testBackends();

/** float64 reference: silu(x gate^T) * (x up^T) for x [M, K], gate and up [N, K]. */
function ref(x: number[], gate: number[], up: number[], M: number, N: number, K: number): number[] {
  const out: number[] = [];
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let g = 0;
      let u = 0;
      for (let k = 0; k < K; k++) {
        g += x[m * K + k]! * gate[n * K + k]!;
        u += x[m * K + k]! * up[n * K + k]!;
      }
      out.push(silu64(g) * u);
    }
  return out;
}

/** The unfused composition, as swigluMlp ran it before. */
async function composed(x: Tensor, gate: Tensor, up: Tensor): Promise<Tensor> {
  return swiglu(await linear(x, gate), await linear(x, up));
}

let seed = 100;

describe.each(backends)('swigluLinear on $name', (backend) => {
  // (M, N, K): the fused GEMV (rows 1..4, K a multiple of 4; odd N, a K past the unrolled loop) and the composition
  const FUSED: [number, number, number][] = [
    [1, 1, 64],
    [1, 63, 100],
    [2, 257, 288],
    [3, 63, 4],
    [4, 257, 36],
  ];
  it.each(FUSED.flatMap((s) => (['f32', 'bf16'] as DType[]).map((d) => [...s, d] as const)))('fused M=%i N=%i K=%i, %s weights, vs the composition', async (M, N, K, dtype) => {
    expect(fusesSwigluLinear(M, K)).toBe(true);
    const x = await rand([M, K], seed++, backend);
    const g = await rand([N, K], seed++, backend, dtype);
    const u = await rand([N, K], seed++, backend, dtype);
    const y = await swigluLinear(x.t, g.t, u.t);
    expect(y.shape).toEqual([M, N]);
    expect(y.dtype).toBe('f32');
    const out = await y.data();
    assertClose(await (await composed(x.t, g.t, u.t)).data(), out, { rtol: 1e-5, name: `fused vs composed ${M}x${N}x${K} ${dtype}` });
    assertClose(ref(x.v, g.v, u.v, M, N, K), out, { rtol: 1e-5, name: `fused vs float64 ${M}x${N}x${K} ${dtype}` });
  });

  // K not a multiple of 4, more rows than the GEMV takes, mixed weight dtypes: the composition serves them
  it.each([
    [1, 63, 7, 'f32', 'f32'],
    [3, 257, 30, 'bf16', 'bf16'],
    [4, 1, 1, 'f32', 'f32'],
    [5, 63, 64, 'f32', 'f32'],
    [37, 257, 36, 'bf16', 'bf16'],
    [1, 63, 64, 'f32', 'bf16'],
  ] as const)('composed M=%i N=%i K=%i, %s gate, %s up', async (M, N, K, gd, ud) => {
    const x = await rand([M, K], seed++, backend);
    const g = await rand([N, K], seed++, backend, gd);
    const u = await rand([N, K], seed++, backend, ud);
    const y = await swigluLinear(x.t, g.t, u.t);
    expect(y.shape).toEqual([M, N]);
    assertClose(ref(x.v, g.v, u.v, M, N, K), await y.data(), { rtol: 1e-5, name: `composed ${M}x${N}x${K}` });
  });

  // int8 weights: fused in decode (each dot product times its row scale), composed for prefill; leading dims kept
  it.each([
    [1, 33, 64],
    [3, 257, 36],
    [5, 33, 64],
  ])('int8 weights, M=%i N=%i K=%i, vs float64 of the dequantized weights and the composition', async (M, N, K) => {
    const [g, u] = [await randInt8(N, K, seed++, backend, 'gate'), await randInt8(N, K, seed++, backend, 'up')];
    const x = await rand([1, M, K], seed++, backend);
    const y = await swigluLinear(x.t, g.w, u.w);
    expect(y.shape).toEqual([1, M, N]);
    const out = await y.data();
    assertClose(ref(x.v, g.v, u.v, M, N, K), out, { rtol: 1e-5, name: `int8 ${M}x${N}x${K}` });
    const composedInt8 = await swiglu(await linear(x.t, g.w), await linear(x.t, u.w));
    assertClose(await composedInt8.data(), out, { rtol: 1e-5, name: `int8 ${M}x${N}x${K} vs composed` });
  });

  it('refuses bad shapes and dtypes, naming the tensors', async () => {
    const x = tensor(new Float32Array(8), [2, 4], { backend, name: 'h' });
    const gate = tensor(new Float32Array(12), [3, 4], { backend, name: 'mlp.gate_proj.weight' });
    const up = tensor(new Float32Array(12), [3, 4], { backend, name: 'mlp.up_proj.weight' });
    await expect(swigluLinear(x, gate, tensor(new Float32Array(8), [2, 4], { backend, name: 'mlp.up_proj.weight' }))).rejects.toThrow(
      /up mlp.up_proj.weight \[2, 4\] must have the shape of gate mlp.gate_proj.weight \[3, 4\]/,
    );
    await expect(swigluLinear(tensor(new Float32Array(6), [2, 3], { backend, name: 'h' }), gate, up)).rejects.toThrow(
      /input h \[2, 3\] must end in 4 \(gate mlp.gate_proj.weight and up mlp.up_proj.weight are \[3, 4\]\)/,
    );
    await expect(swigluLinear(x, tensor(new Float32Array(12), [12], { backend, name: 'g' }), up)).rejects.toThrow(ShapeError);
    await expect(swigluLinear(x, gate, tensor(new Int32Array(12), [3, 4], { backend, name: 'u' }))).rejects.toThrow(/up u is i32, expected f32, f16 or bf16/);
    await expect(swigluLinear(x, { codes: gate, scales: tensor([1, 1, 1], [3], { backend }) }, up)).rejects.toThrow(DTypeError);
    await expect(swigluLinear(tensor(new Int32Array(8), [2, 4], { backend }), gate, up)).rejects.toThrow(DTypeError);
  });
});

describe.runIf(gpu)('swigluLinear on WebGPU: kernel choice', () => {
  it('one dispatch in decode, float or int8 weights; linear + linear + swiglu for prefill and mixed kinds', async () => {
    const g = gpu as WebGPUBackend;
    const [N, K] = [63, 64];
    const gate = await rand([N, K], seed++, g, 'bf16');
    const up = await rand([N, K], seed++, g, 'bf16');
    for (const M of [1, 4]) {
      const x = await rand([M, K], seed++, g);
      expect(await dispatches(gpu as WebGPUBackend, () => swigluLinear(x.t, gate.t, up.t))).toEqual([['swigluLinear', 1]]);
    }
    const prefill = await rand([5, K], seed++, g);
    expect(await dispatches(gpu as WebGPUBackend, () => swigluLinear(prefill.t, gate.t, up.t))).toEqual([['matmul', 2], ['swiglu', 1]]);
    const x = await rand([1, K], seed++, g);
    const codes = tensor(new Int8Array(N * K), [N, K], { backend: g });
    const scales = tensor(new Float32Array(N).fill(1), [N], { backend: g });
    expect(await dispatches(gpu as WebGPUBackend, () => swigluLinear(x.t, { codes, scales }, { codes, scales }))).toEqual([['swigluLinear', 1]]);
    expect(await dispatches(gpu as WebGPUBackend, () => swigluLinear(x.t, { codes, scales }, up.t))).toEqual([['matmul', 2], ['swiglu', 1]]);
  });

  // Other GEMV shapes, f16 weights and an f16 x, into an output poisoned with NaN (unwritten elements show)
  it.each(GEMV_SHAPES)('fused program %j, rows 1 and 3, f32/f16 x, f16/bf16 weights', async (shape) => {
    const g = gpu as WebGPUBackend;
    const [N, K] = [37, 288];
    for (const [M, xd, wd] of [[1, 'f32', 'f16'], [3, 'f16', 'bf16']] as const) {
      const x = await rand([M, K], seed++, g, xd);
      const gate = await rand([N, K], seed++, g, wd);
      const up = await rand([N, K], seed++, g, wd);
      const out = tensor(new Float32Array(M * N).fill(NaN), [M, N], { backend: g });
      await g.run(gemvProgram(xd, wd, M, { swiglu: true }, shape), [x.t, gate.t, up.t], [out], { N, K }, [Math.ceil(N / shape.rowsPerGroup), 1, 1]);
      assertClose(ref(x.v, gate.v, up.v, M, N, K), await out.data(), { rtol: 1e-5, name: `M=${M} ${xd} x ${wd}` });
    }
  });
});

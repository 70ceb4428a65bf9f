import { type DType, ShapeError, DTypeError, Rng, assertClose, tensor } from '@phalanx/core';
import { type WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { GEMV_SHAPES, rand } from './helpers.js';
import { linear, matmul } from '../src/index.js';
import { type GemmTile, gemmProgram, gemvProgram } from '../src/webgpu/linear.js';

const { backends, gpu } = await testBackends();

/** float64 reference: out[p, m, n] = sum_k a[p, m, k] * opb[p, k, n] (+ bias[n]). */
function ref(a: number[], b: number[], batch: number, M: number, N: number, K: number, transB: boolean, bShared: boolean, bias?: number[]) {
  const out: number[] = [];
  for (let p = 0; p < batch; p++)
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let acc = bias ? bias[n]! : 0;
        const wb = bShared ? 0 : p * K * N;
        for (let k = 0; k < K; k++) acc += a[(p * M + m) * K + k]! * b[wb + (transB ? n * K + k : k * N + n)]!;
        out.push(acc);
      }
  return out;
}

describe.each(backends)('linear / matmul on $name', (backend) => {
  // (M, N, K): GEMV rows (1..4), tiles with ragged edges, non-power-of-two and odd dims
  const LINEAR: [number, number, number][] = [
    [1, 63, 64],
    [1, 257, 100],
    [3, 130, 36],
    [4, 1, 4],
    [1, 5, 7], // K not a multiple of 4: the tiled kernel serves one row
    [5, 63, 257],
    [129, 130, 17],
    [1, 1, 1],
  ];
  it.each(LINEAR)('linear M=%i N=%i K=%i (+bias)', async (M, N, K) => {
    const x = await rand([M, K], 1, backend);
    const w = await rand([N, K], 2, backend);
    const b = await rand([N], 3, backend);
    const y = await linear(x.t, w.t, b.t);
    expect(y.shape).toEqual([M, N]);
    assertClose(ref(x.v, w.v, 1, M, N, K, true, true, b.v), await y.data(), { rtol: 1e-5, name: `linear ${M}x${N}x${K}` });
    const noBias = await linear(x.t, w.t);
    assertClose(ref(x.v, w.v, 1, M, N, K, true, true), await noBias.data(), { rtol: 1e-5 });
  });

  it.each(['f16', 'bf16'] as DType[])('linear with %s weights (decode row and a batch), f16 input', async (dtype) => {
    for (const M of [1, 2, 37]) {
      const x = await rand([M, 96], 4, backend, M === 2 ? 'f16' : 'f32');
      const w = await rand([70, 96], 5, backend, dtype);
      const b = await rand([70], 6, backend, dtype);
      const y = await linear(x.t, w.t, b.t);
      assertClose(ref(x.v, w.v, 1, M, 70, 96, true, true, b.v), await y.data(), { rtol: 1e-5 });
    }
  });

  it.each([
    [1, 70, 96], // GEMV, 16-byte loads of codes
    [3, 33, 30], // GEMV rows, K not a multiple of 4: tiled kernel with scalar loads
    [37, 70, 96], // tiled kernel, vector loads
  ])('quantized linear: i8 codes x row scales, M=%i N=%i K=%i', async (M, N, K) => {
    const rng = new Rng(21);
    const codes = Array.from({ length: N * K }, () => rng.int(256) - 128); // the whole i8 range, -128 and 127 included
    const scales = Array.from({ length: N }, () => 0.01 + rng.uniform() * 0.05);
    const x = await rand([M, K], 22, backend);
    const b = await rand([N], 23, backend);
    const w = tensor(new Int8Array(codes), [N, K], { backend, name: 'q.codes' });
    const s = tensor(scales, [N], { backend, dtype: 'f16', name: 'q.scales' });
    const sv = Array.from(await s.data());
    const dequant = codes.map((c, i) => c * sv[Math.floor(i / K)]!);
    const y = await linear(x.t, { codes: w, scales: s }, b.t);
    assertClose(ref(x.v, dequant, 1, M, N, K, true, true, b.v), await y.data(), { rtol: 1e-5, name: `quantized ${M}x${N}x${K}` });
    const noBias = await linear(x.t, { codes: w, scales: s });
    assertClose(ref(x.v, dequant, 1, M, N, K, true, true), await noBias.data(), { rtol: 1e-5 });
  });

  it('quantized linear refuses float codes and scales of the wrong length', async () => {
    const x = tensor(new Float32Array(4), [1, 4], { backend });
    const s = tensor([1, 1], [2], { backend });
    await expect(linear(x, { codes: tensor(new Float32Array(8), [2, 4], { backend, name: 'w' }), scales: s })).rejects.toThrow(/codes w must be i8, got f32/);
    await expect(linear(x, { codes: tensor(new Int8Array(8), [2, 4], { backend }), scales: tensor([1], [1], { backend, name: 's' }) })).rejects.toThrow(/scales s \[1\] must be \[2\]/);
    await expect(linear(x, tensor(new Int8Array(8), [2, 4], { backend }))).rejects.toThrow(DTypeError);
  });

  it('linear keeps leading dims', async () => {
    const x = await rand([2, 3, 8], 7, backend);
    const w = await rand([5, 8], 8, backend);
    const y = await linear(x.t, w.t);
    expect(y.shape).toEqual([2, 3, 5]);
    assertClose(ref(x.v, w.v, 1, 6, 5, 8, true, true), await y.data(), { rtol: 1e-5 });
  });

  it.each([
    [1, 1, 1, 1],
    [3, 33, 65, 17],
    [2, 130, 5, 129],
  ])('batched matmul batch=%i M=%i N=%i K=%i, plain and transposed, batched and shared b', async (batch, M, N, K) => {
    const a = await rand([batch, M, K], 9, backend);
    for (const transB of [false, true]) {
      for (const shared of [false, true]) {
        const bShape = transB ? [N, K] : [K, N];
        const b = await rand(shared ? bShape : [batch, ...bShape], 10, backend);
        const y = await matmul(a.t, b.t, { transposeB: transB });
        expect(y.shape).toEqual([batch, M, N]);
        assertClose(ref(a.v, b.v, batch, M, N, K, transB, shared), await y.data(), { rtol: 1e-5, name: `matmul transB=${transB} shared=${shared}` });
      }
    }
  });

  it('refuses mismatched shapes and integer inputs, naming the tensors', async () => {
    const x = tensor(new Float32Array(6), [2, 3], { backend, name: 'h' });
    const w = tensor(new Float32Array(8), [2, 4], { backend, name: 'q_proj.weight' });
    await expect(linear(x, w)).rejects.toThrow(ShapeError);
    await expect(linear(x, w)).rejects.toThrow(/input h \[2, 3\] must end in 4 \(weight q_proj.weight is \[2, 4\]\)/);
    const w3 = tensor(new Float32Array(6), [2, 3], { backend, name: 'o' });
    await expect(linear(x, w3, tensor([1, 2, 3], [3], { backend, name: 'o.bias' }))).rejects.toThrow(/bias o.bias \[3\] must be \[2\]/);
    await expect(linear(tensor(new Int32Array(3), [1, 3], { backend }), w3)).rejects.toThrow(DTypeError);
    await expect(matmul(x, x)).rejects.toThrow(/disagree on K/);
  });
});

describe.runIf(gpu)('matmul tiles', () => {
  // Every tile shape the benchmark may pick must be correct too.
  const TILES: GemmTile[] = [
    { BM: 64, BN: 64, BK: 16, TM: 4, TN: 4 },
    { BM: 128, BN: 64, BK: 16, TM: 8, TN: 4 },
    { BM: 128, BN: 64, BK: 8, TM: 8, TN: 4 }, // fewer b loads than threads
    { BM: 64, BN: 128, BK: 8, TM: 4, TN: 8 },
  ];
  it.each(TILES.flatMap((tile) => [true, false].map((transB) => [tile, transB] as const)))('%j transB=%s, vector and scalar loads', async (tile, transB) => {
    const g = gpu as WebGPUBackend;
    const [M, N, K] = [77, 148, 40];
    const a = await rand([M, K], 11, g);
    const b = await rand(transB ? [N, K] : [K, N], 12, g);
    for (const vec of [true, false]) {
      const out = tensor(new Float32Array(M * N).fill(NaN), [M, N], { backend: g });
      await g.run(gemmProgram('f32', 'f32', transB, {}, vec, tile), [a.t, b.t], [out], { M, N, K, bBatchStride: 0 }, [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), 1]);
      assertClose(ref(a.v, b.v, 1, M, N, K, transB, true), await out.data(), { rtol: 1e-5, name: `vec=${vec}` });
    }
  });
});

describe.runIf(gpu)('GEMV shapes', () => {
  // The shapes the benchmark tried; K = 4 * 70 + 8 leaves a tail past the unrolled loop.
  it.each(GEMV_SHAPES)('%j with 1 and 3 rows, f32 and bf16 weights', async (shape) => {
    const g = gpu as WebGPUBackend;
    const [N, K] = [37, 288];
    for (const [M, dtype] of [[1, 'f32'], [3, 'bf16']] as const) {
      const x = await rand([M, K], 13, g);
      const w = await rand([N, K], 14, g, dtype);
      const out = tensor(new Float32Array(M * N).fill(NaN), [M, N], { backend: g });
      await g.run(gemvProgram('f32', dtype, M, {}, shape), [x.t, w.t], [out], { N, K }, [Math.ceil(N / shape.rowsPerGroup), 1, 1]);
      assertClose(ref(x.v, w.v, 1, M, N, K, true, true), await out.data(), { rtol: 1e-5, name: `M=${M} ${dtype}` });
    }
  });
});

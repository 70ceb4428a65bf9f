import { type Backend, DTypeError, Rng, ShapeError, type Tensor, assertClose, empty, randn, tensor } from '@phalanx/core';
import { linear } from '@phalanx/ops';
import { WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { type QuantizedTensor, codeLayout, dequantize, packQuantized, quantize, quantizedLinear, quantizedTo } from '../src/index.js';
import { defaultPackedGemv, packedChunk, runPackedLinear } from '../src/webgpu.js';

const { backends } = await testBackends();

/** Codes over the whole signed range of `bits` (-2^(bits-1) included, which SDClip never makes) and f16 scales. */
function randomQuantized(rows: number, cols: number, bits: number, seed: number): QuantizedTensor {
  const rng = new Rng(seed);
  const half = 2 ** (bits - 1);
  return {
    codes: tensor(Int8Array.from({ length: rows * cols }, () => rng.int(2 * half) - half), [rows, cols], { name: 'w.codes' }),
    scales: tensor(Float32Array.from({ length: rows }, () => 0.01 + 0.1 * rng.uniform()), [rows], { dtype: 'f16', name: 'w.scales' }),
    bits,
    clipSigmas: 3,
    method: 'rtn',
    shape: [rows, cols],
  };
}

/**
 * quantizedLinear with packed codes on `backend` against the float64 CPU `linear` of the dequantized weight
 * (codes * scale is exact in f32, so only the kernel's f32 accumulation differs).
 */
async function checkPacked(backend: Backend, q: QuantizedTensor, x: Tensor, bias: Tensor | null) {
  const packed = await quantizedTo(q, backend, { layout: 'packed' });
  expect(codeLayout(packed)).toBe('packed');
  const y = await quantizedLinear(await x.to(backend), packed, bias && (await bias.to(backend)));
  expect(y.backend).toBe(backend);
  const ref = await linear(x, await dequantize(q), bias);
  expect(y.shape).toEqual(ref.shape);
  assertClose(await ref.data(), await y.data(), { rtol: 1e-5, name: `${q.bits}-bit [${q.shape}] x [${x.shape}]` });
}

describe.each(backends)('quantizedLinear on $name', (backend) => {
  it.each([1, 9])('int8 codes: equals linear with the dequantized weight (M = %i)', async (M) => {
    const w = randn([48, 64], { seed: 1 });
    const q = await quantizedTo(await quantize(w, { bits: 6, clipSigmas: 12 }), backend);
    expect(codeLayout(q)).toBe('int8');
    const x = randn([M, 64], { seed: 2, backend });
    const bias = randn([48], { seed: 3, backend });
    const y = await quantizedLinear(x, q, bias);
    expect(y.backend).toBe(backend);
    const ref = await linear(x, await (await dequantize(q)).to(backend), bias);
    assertClose(await ref.data(), await y.data(), { rtol: 1e-5 });
  });

  // aligned rows (every bit width's chunk divides 128 and 384) and rows that start anywhere in a word
  const INS = [1, 7, 33, 100, 257, 128, 384];
  const OUTS = [1, 5, 63];
  describe.each([2, 3, 4, 5, 6, 7, 8])('packed %i-bit codes', (bits) => {
    it.each([1, 17])('equal dequantize + linear over odd shapes (M = %i)', async (M) => {
      let seed = 100 * bits + M;
      for (const K of INS) {
        for (const N of OUTS) {
          const q = randomQuantized(N, K, bits, seed++);
          await checkPacked(backend, q, randn([M, K], { seed: seed++ }), randn([N], { seed: seed++ }));
        }
      }
    });

    it('aligned GEMV over several K-slices, the last one partial, and rows past N in the last workgroup', async () => {
      const { codes } = packedChunk(bits);
      const K = codes * (64 * defaultPackedGemv(bits, 64 * 16 * codes).unroll * 2 + 5); // two full slices of 64 lanes, then 5 groups
      const shape = defaultPackedGemv(bits, K);
      expect([shape.lanes, shape.rowsPerThread]).toEqual([64, 4]);
      await checkPacked(backend, randomQuantized(37, K, bits, bits), randn([1, K], { seed: bits }), randn([37], { seed: 1 }));
    });
  });

  // the shapes the benchmark tries (--packed-gemv RxLxUxT) run the same aligned kernel with other constants
  it.each([
    [{ rowsPerGroup: 32, lanes: 32, unroll: 2, rowsPerThread: 8 }, 1, 4],
    [{ rowsPerGroup: 8, lanes: 16, unroll: 3, rowsPerThread: 2 }, 2, 6],
    [{ rowsPerGroup: 3, lanes: 8, unroll: 1, rowsPerThread: 1 }, 3, 7],
    [{ rowsPerGroup: 6, lanes: 4, unroll: 2, rowsPerThread: 6 }, 1, 8],
  ])('aligned GEMV with shape %o (M = %i, %i bits)', async (gemv, M, bits) => {
    if (!(backend instanceof WebGPUBackend)) return;
    const N = 29;
    const K = packedChunk(bits).codes * 45;
    const q = randomQuantized(N, K, bits, N);
    const packed = await quantizedTo(q, backend, { layout: 'packed' });
    const x = randn([M, K], { seed: M });
    const bias = randn([N], { seed: 2 });
    const out = empty([M, N], { backend });
    const attrs = { M, N, K, bits, hasBias: true, outShape: [M, N] };
    await runPackedLinear(backend, [await x.to(backend), packed.codes, packed.scales, await bias.to(backend)], out, attrs, { gemv });
    const ref = await linear(x, await dequantize(q), bias);
    assertClose(await ref.data(), await out.data(), { rtol: 1e-5, name: `${bits}-bit ${JSON.stringify(gemv)}` });
  });

  // Each row count is another shader to compile, which takes seconds on lavapipe: one width, both GEMV paths.
  it.each([384, 100])('a GEMV of 3 rows without bias (K = %i)', async (K) => {
    await checkPacked(backend, randomQuantized(11, K, 6, K), randn([3, K], { seed: K }), null);
  });

  it('reads bf16 inputs, f32 scales and leading dims', async () => {
    for (const [K, lead] of [[128, [2, 1]], [100, [2, 1]], [128, [2, 9]], [33, [3, 3]]] as const) {
      const q = randomQuantized(5, K, 6, K);
      const scales = tensor(await q.scales.data(), [5], { name: 'w.scales' });
      const x = tensor(await randn([...lead, K], { seed: K }).data(), [...lead, K], { dtype: 'bf16' });
      await checkPacked(backend, { ...q, scales }, x, randn([5], { seed: 1 }));
    }
  });

  it('refuses codes, inputs, scales and bias that do not fit', async () => {
    const q = await quantizedTo(randomQuantized(5, 12, 4, 1), backend, { layout: 'packed' });
    const x = randn([2, 12], { seed: 1, backend });
    await expect(quantizedLinear(randn([2, 11], { seed: 1, backend }), q, null)).rejects.toThrow(ShapeError);
    await expect(quantizedLinear(x, { ...q, codes: tensor(new Uint8Array(31), [31], { backend }) }, null)).rejects.toThrow(ShapeError);
    await expect(quantizedLinear(x, { ...q, codes: randn([30], { seed: 1, backend }) }, null)).rejects.toThrow(DTypeError);
    await expect(quantizedLinear(x, { ...q, scales: randn([4], { seed: 1, backend }) }, null)).rejects.toThrow(/scales/);
    await expect(quantizedLinear(x, q, randn([6], { seed: 1, backend }))).rejects.toThrow(/bias/);
    await expect(quantizedLinear(tensor(Int32Array.from({ length: 24 }, () => 1), [2, 12], { backend }), q, null)).rejects.toThrow(DTypeError);
  });
});

describe('packed layout', () => {
  it('packQuantized and quantizedTo convert both ways without changing the codes', async () => {
    const q = randomQuantized(7, 13, 5, 3);
    const packed = await packQuantized(q);
    expect([packed.codes.dtype, packed.codes.shape]).toEqual(['u8', [Math.ceil((7 * 13 * 5) / 8)]]);
    expect(packed.scales).toBe(q.scales);
    expect(await packQuantized(packed)).toBe(packed);
    const back = await quantizedTo(packed, q.codes.backend, { layout: 'int8' });
    expect([back.codes.dtype, back.codes.shape]).toEqual(['i8', [7, 13]]);
    expect(await back.codes.data()).toEqual(await q.codes.data());
    expect(await (await dequantize(packed)).data()).toEqual(await (await dequantize(q)).data());
  });
});

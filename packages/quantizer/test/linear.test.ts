import { type Backend, DTypeError, InputError, Rng, ShapeError, type Tensor, assertClose, empty, randn, tensor } from '@phalanx/core';
import { linear } from '@phalanx/ops';
import { WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { type QuantizedTensor, codeLayout, dequantize, packQuantized, quantize, quantizedLinear, quantizedTo } from '../src/index.js';
import { type PackedGemvShape, defaultPackedGemv, packedChunk, packedGemvProgram, runPackedLinear } from '../src/webgpu.js';

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

/** runPackedLinear with GEMV shape `gemv` (as the benchmark's --packed-gemv passes it) against the float64 reference, 29 output rows. */
async function checkGemvShape(backend: WebGPUBackend, gemv: PackedGemvShape, M: number, bits: number, K: number) {
  const N = 29;
  const q = randomQuantized(N, K, bits, N);
  const packed = await quantizedTo(q, backend, { layout: 'packed' });
  const x = randn([M, K], { seed: M });
  const bias = randn([N], { seed: 2 });
  const out = empty([M, N], { backend });
  const attrs = { M, N, K, bits, hasBias: true, outShape: [M, N] };
  await runPackedLinear(backend, [await x.to(backend), packed.codes, packed.scales, await bias.to(backend)], out, attrs, { gemv });
  const ref = await linear(x, await dequantize(q), bias);
  assertClose(await ref.data(), await out.data(), { rtol: 1e-5, name: `${bits}-bit K = ${K} ${JSON.stringify(gemv)}` });
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
      const { words, codes } = packedChunk(bits);
      const unroll = words === 1 ? Math.max(1, 16 / codes) : 1; // the narrow shape's groups per lane and slice
      const K = codes * (64 * unroll * 2 + 5); // two full slices of 64 lanes, then 5 groups: rows not on 16-byte boundaries
      const shape = defaultPackedGemv(bits, K);
      expect([shape.lanes, shape.unroll, shape.rowsPerThread, shape.wide]).toEqual([64, unroll, 4, undefined]);
      await checkPacked(backend, randomQuantized(37, K, bits, bits), randn([1, K], { seed: bits }), randn([37], { seed: 1 }));
    });

    it('the default GEMV loads 16 bytes of codes per lane (2, 4 and 8 bits) where rows sit on 16-byte boundaries', async () => {
      const { words, codes } = packedChunk(bits);
      const K = 4 * codes * (32 * 2 + 3); // two full slices of 32 lanes, then 3 units of 4 words
      const shape = defaultPackedGemv(bits, K);
      expect(shape.wide).toBe(words === 1 ? true : undefined);
      if (words === 1) expect([shape.lanes, shape.unroll, shape.rowsPerThread]).toEqual([32, 1, 4]);
      await checkPacked(backend, randomQuantized(37, K, bits, bits), randn([1, K], { seed: bits }), randn([37], { seed: 2 }));
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
    await checkGemvShape(backend, gemv, M, bits, packedChunk(bits).codes * 45);
  });

  // wide loads (--packed-gemv ...w): two full slices of lanes * unroll units of 4 groups, then 3 units; 29
  // rows, so the last workgroup has rows past N. Shapes cheap to compile (a 2-bit unroll 2 took 14 s uncached on lavapipe).
  it.each([
    [{ rowsPerGroup: 32, lanes: 16, unroll: 1, rowsPerThread: 4, wide: true }, 1, 2],
    [{ rowsPerGroup: 16, lanes: 16, unroll: 1, rowsPerThread: 1, wide: true }, 2, 2],
    [{ rowsPerGroup: 16, lanes: 64, unroll: 1, rowsPerThread: 4, wide: true }, 1, 4],
    [{ rowsPerGroup: 8, lanes: 16, unroll: 2, rowsPerThread: 1, wide: true }, 2, 4],
    [{ rowsPerGroup: 8, lanes: 32, unroll: 2, rowsPerThread: 4, wide: true }, 1, 8],
    [{ rowsPerGroup: 6, lanes: 16, unroll: 1, rowsPerThread: 1, wide: true }, 3, 8],
  ])('aligned GEMV with wide shape %o (M = %i, %i bits)', async (gemv, M, bits) => {
    if (!(backend instanceof WebGPUBackend)) return;
    await checkGemvShape(backend, gemv, M, bits, 4 * packedChunk(bits).codes * (2 * gemv.lanes * gemv.unroll + 3));
  });

  // the same --packed-gemv serves every width: a wide shape runs without its wide loads where they cannot apply
  it.each([
    [{ rowsPerGroup: 8, lanes: 16, unroll: 3, rowsPerThread: 2, wide: true }, 2, 6, 16 * 45],
    [{ rowsPerGroup: 32, lanes: 32, unroll: 2, rowsPerThread: 8, wide: true }, 1, 4, 8 * 45],
  ])('a wide shape %o where it cannot apply runs narrow (M = %i, %i bits, K = %i)', async (gemv, M, bits, K) => {
    if (!(backend instanceof WebGPUBackend)) return;
    await checkGemvShape(backend, gemv, M, bits, K);
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

  // int8 activations: x quantized in blocks of 16 (s = max |x| / 127 in f32, q = round(x / s) ties to even), exact integer products per block
  const int8Expected = async (q: QuantizedTensor, x: Tensor, bias: Tensor | null) => {
    const [N, K] = q.shape as [number, number];
    const M = x.size / K;
    const xs = await x.data();
    const codes = await q.codes.data();
    const scales = await q.scales.data();
    const b = bias ? await bias.data() : undefined;
    const out = new Float64Array(M * N);
    for (let m = 0; m < M; m++) {
      const blocks = Array.from({ length: K / 16 }, (_, i) => {
        const block = Array.from(xs.subarray(m * K + 16 * i, m * K + 16 * i + 16));
        const max = Math.max(...block.map(Math.abs));
        const s = max > 0 ? Math.fround(max / 127) : 1;
        const inv = Math.fround(1 / s);
        const xq = block.map((v) => {
          const t = Math.fround(v * inv);
          const r = Math.round(t);
          return r - t === 0.5 && r % 2 !== 0 ? r - 1 : r; // ties to even
        });
        return { s, xq };
      });
      for (let n = 0; n < N; n++) {
        let acc = 0;
        blocks.forEach(({ s, xq }, i) => {
          let dot = 0;
          for (let k = 0; k < 16; k++) dot += xq[k]! * codes[n * K + 16 * i + k]!;
          acc += dot * s;
        });
        out[m * N + n] = acc * scales[n]! + (b ? b[n]! : 0);
      }
    }
    return out;
  };

  it.each([
    [4, 1, undefined],
    [4, 3, { rowsPerGroup: 8, lanes: 16, unroll: 2, rowsPerThread: 1, wide: true }],
    [8, 2, undefined],
    [8, 1, { rowsPerGroup: 6, lanes: 8, unroll: 1, rowsPerThread: 6, wide: true }],
  ] as const)('int8 activations, %i-bit codes, %i rows of x, GEMV shape %o: exact integer products of x quantized per row', async (bits, M, gemv) => {
    const N = 29;
    const lanes = gemv?.lanes ?? 32;
    const K = 4 * packedChunk(bits).codes * (2 * lanes * (gemv?.unroll ?? 1) + 3); // two full slices, then 3 units
    const q = randomQuantized(N, K, bits, 7 * bits + M);
    const values = Array.from(await randn([M, K], { seed: M + bits }).data());
    if (M === 3) values.fill(0, K, 2 * K); // a row of zeros (scale 1)
    values[5] = 4.5; // an outlier sets its block's scale
    const x = tensor(values, [M, K]);
    const bias = randn([N], { seed: 3 });
    const packed = await quantizedTo(q, backend, { layout: 'packed' });
    const [xb, bb] = [await x.to(backend), await bias.to(backend)];
    let y: Tensor;
    if (gemv && backend instanceof WebGPUBackend) {
      y = empty([M, N], { backend });
      await runPackedLinear(backend, [xb, packed.codes, packed.scales, bb], y, { M, N, K, bits, hasBias: true, int8Activations: true, outShape: [M, N] }, { gemv });
    } else {
      y = await quantizedLinear(xb, packed, bb, { int8Activations: true });
    }
    const out = await y.data();
    assertClose(await int8Expected(q, x, bias), out, { rtol: 1e-6, name: `int8 activations ${bits}-bit M = ${M}` });
    // and near the product with x itself: x's rounding is at most half its block's scale per element
    const exact = Array.from(await (await linear(x, await dequantize(q), bias)).data());
    const err = Math.sqrt(exact.reduce((a, v, i) => a + (v - out[i]!) ** 2, 0) / exact.reduce((a, v) => a + v * v, 0));
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThan(0.01);
  });

  it('int8 activations: refused where the integer GEMV does not apply, naming why', async () => {
    const x = randn([1, 64], { seed: 1, backend });
    const refused = async (q: QuantizedTensor, input: Tensor) => (await quantizedLinear(input, q, null, { int8Activations: true }).then(() => undefined, (e: unknown) => e)) as Error;
    const q6 = await quantizedTo(randomQuantized(5, 64, 6, 1), backend, { layout: 'packed' });
    expect(await refused(q6, x)).toEqual(new InputError('quantizedLinear w.codes: int8Activations cannot run here: int8 activations take 4- or 8-bit codes, not 6 bits'));
    const q4 = await quantizedTo(randomQuantized(5, 64, 4, 1), backend, { layout: 'packed' });
    expect((await refused(q4, randn([5, 64], { seed: 1, backend }))).message).toMatch(/5 rows of x \(the GEMV takes 1 to 4\)/);
    const q4odd = await quantizedTo(randomQuantized(5, 48, 4, 1), backend, { layout: 'packed' });
    expect((await refused(q4odd, randn([1, 48], { seed: 1, backend }))).message).toMatch(/K a multiple of 32 at 4 bits/);
    const bytes = await quantizedTo(randomQuantized(5, 64, 8, 1), backend, { layout: 'int8' });
    expect((await refused(bytes, x)).message).toMatch(/int8 layout/);
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

describe('aligned GEMV shapes', () => {
  const post = { scales: 'f16' } as const;
  const wide: PackedGemvShape = { rowsPerGroup: 16, lanes: 64, unroll: 1, rowsPerThread: 4, wide: true };
  const refuses = (f: () => unknown, message: RegExp) => {
    expect(f).toThrow(InputError);
    expect(f).toThrow(message);
  };

  it('refuses wide loads for groups of several words and for rows off 16-byte boundaries', () => {
    refuses(() => packedGemvProgram('f32', post, 6, 1, 16 * 64, wide), /one-word group \(2, 4 or 8 bits\), not 6 bits/);
    refuses(() => packedGemvProgram('f32', post, 3, 1, 32 * 64, wide), /not 3 bits/);
    refuses(() => packedGemvProgram('f32', post, 4, 1, 8 * 45, wide), /K a multiple of 32 at 4 bits .*got 360/);
    refuses(() => packedGemvProgram('f32', post, 8, 1, 100, wide), /K a multiple of 16 at 8 bits .*got 100/);
    refuses(() => packedGemvProgram('f32', post, 2, 1, 16 * 6, wide), /K a multiple of 64 at 2 bits .*got 96/);
  });

  it('refuses shapes that need more than 16 KiB of workgroup memory', () => {
    // 2-bit wide units are 16 vec4s of x, 17 slots with the padding: 64 lanes need 17 KiB
    refuses(() => packedGemvProgram('f32', post, 2, 1, 64 * 64, wide), /16x64x1x4w needs 17408 bytes of workgroup memory for 1 rows/);
    refuses(() => packedGemvProgram('f32', post, 8, 4, 16 * 64, { ...wide, lanes: 32, unroll: 2 }), /16x32x2x4w needs 20480 bytes of workgroup memory for 4 rows/);
    refuses(() => packedGemvProgram('f32', post, 4, 1, 8 * 1024, { rowsPerGroup: 16, lanes: 64, unroll: 8, rowsPerThread: 4 }), /16x64x8x4 needs 24576 bytes/);
    expect(packedGemvProgram('f32', post, 2, 1, 64 * 64, { ...wide, lanes: 32 }).code).toContain('var<workgroup> sh: array<vec4<f32>, 544>;');
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

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError, Rng, ShapeError, assertClose, randn, relativeRmse, tensor } from '@phalanx/core';
import { linear } from '@phalanx/ops';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import {
  accumulateHessian,
  createHessian,
  dequantize,
  dequantizeModel,
  foldHadamard,
  hadamardSigns,
  hadamardTransform,
  quantize,
  quantizeModel,
  quantizedLinear,
  quantizedTo,
  readArtifact,
  rotateHadamard,
  writeArtifact,
} from '../src/index.js';
import { type HadamardRotation, rotateRows } from '../src/hadamard.js';
import { activations, normals } from './helpers.js';

const { backends } = await testBackends();

/** The Sylvester Hadamard matrix of order n (a power of two): H_2n = [[H, H], [H, -H]]. */
function sylvester(n: number): number[][] {
  let h = [[1]];
  while (h.length < n) h = [...h.map((r) => [...r, ...r]), ...h.map((r) => [...r, ...r.map((v) => -v)])];
  return h;
}

const gaussian = (n: number, seed: number) => Float64Array.from(normals(n, seed));
const norm = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

/** Relative RMSE of rounding Gaussian weights to a grid of step k * std / R (no clipping): step / sqrt(12). */
const gridError = (bits: number, k: number) => k / ((2 ** (bits - 1) - 1) * Math.sqrt(12));

const hadamard = (block: number, seed: number | null = 0): HadamardRotation => ({ kind: 'hadamard', block, seed });
/** W [rows, cols] times R, row by row, in float64. */
const rotatedRows = (w: ArrayLike<number>, r: HadamardRotation) => rotateRows(Float64Array.from(w), r);

describe('hadamardTransform', () => {
  it.each([1, 2, 4, 8, 16, 32, 64])('equals the dense Sylvester product H v / sqrt(K) at K = %i', (K) => {
    const h = sylvester(K);
    const v = gaussian(K, K);
    const dense = h.map((row) => row.reduce((s, x, j) => s + x * v[j]!, 0) / Math.sqrt(K));
    expect(maxAbsDiff(hadamardTransform(Float64Array.from(v)), dense)).toBeLessThan(1e-13);
  });

  it('block-diagonal form: each run of `block` values transformed on its own', () => {
    const v = gaussian(288, 1); // 288 = 32 * 9
    const out = hadamardTransform(Float64Array.from(v), 32);
    for (let b = 0; b < 9; b++) expect(maxAbsDiff(out.subarray(32 * b, 32 * (b + 1)), hadamardTransform(v.slice(32 * b, 32 * (b + 1))))).toBe(0);
  });

  it.each([
    [1024, 1024],
    [4096, 256],
    [288, 32],
    [6, 2],
  ])('is orthonormal: preserves norms and is its own inverse (n = %i, block %i)', (n, block) => {
    for (let seed = 0; seed < 3; seed++) {
      const v = gaussian(n, 10 * n + seed);
      const once = hadamardTransform(Float64Array.from(v), block);
      expect(Math.abs(norm(once) / norm(v) - 1)).toBeLessThan(1e-14);
      expect(maxAbsDiff(hadamardTransform(once, block), v)).toBeLessThan(1e-13);
    }
  });

  it('refuses a block that is not a power of two or does not divide the length', () => {
    expect(() => hadamardTransform(new Float64Array(12), 12)).toThrow(InputError);
    expect(() => hadamardTransform(new Float64Array(12), 8)).toThrow(ShapeError);
  });
});

describe('the rotation R = I (x) D H / sqrt(block)', () => {
  it('signs: the documented xorshift32 stream, +-1, about half negative', () => {
    expect(Array.from(hadamardSigns(12, 0))).toEqual([1, -1, 1, 1, -1, -1, -1, -1, -1, -1, 1, -1]); // pins the artifact format (checked against a Python xorshift32)
    expect(Array.from(hadamardSigns(12, 0))).toEqual(Array.from(hadamardSigns(24, 0).subarray(0, 12)));
    const many = hadamardSigns(4096, 7);
    expect(many.every((v) => v === 1 || v === -1)).toBe(true);
    expect(Math.abs(many.reduce((a, b) => a + b, 0))).toBeLessThan(200);
    expect(Array.from(hadamardSigns(64, 1))).not.toEqual(Array.from(hadamardSigns(64, 2)));
  });

  it.each([null, 0, 5])('x R is the dense product x D H / sqrt(b) per block, and the inverse undoes it (seed %s)', (seed) => {
    const [block, blocks] = [16, 3];
    const h = sylvester(block);
    const d = seed === null ? new Array<number>(block).fill(1) : Array.from(hadamardSigns(block, seed));
    const x = gaussian(block * blocks, 3);
    const dense = Array.from(x, (_, i) => {
      const [b, j] = [Math.floor(i / block), i % block];
      let s = 0;
      for (let k = 0; k < block; k++) s += x[b * block + k]! * d[k]! * h[k]![j]!;
      return s / Math.sqrt(block);
    });
    const r = hadamard(block, seed);
    const once = rotateRows(Float64Array.from(x), r);
    expect(maxAbsDiff(once, dense)).toBeLessThan(1e-13);
    expect(maxAbsDiff(rotateRows(once, r, true), x)).toBeLessThan(1e-13);
  });

  it('the signs keep a row offset from becoming an outlier column: plain H piles it into the first column of each block', async () => {
    const [rows, cols] = [32, 256];
    const data = normals(rows * cols, 11, 0.02);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[r * cols + c]! += 0.03; // every row shares an offset
    const w = tensor(data, [rows, cols]);
    const error = async (rotate?: { seed: number | null }) => relativeRmse(data, await (await dequantize(await quantize(w, { bits: 4, clipSigmas: 2.5, rotate }))).data());
    const [plain, sylvesterOnly, signed] = [await error(), await error({ seed: null }), await error({ seed: 0 })];
    expect(sylvesterOnly).toBeGreaterThan(1.5 * plain);
    expect(signed).toBeLessThan(1.2 * plain);
  });
});

describe('quantize with rotate: hadamard', () => {
  it('quantizes W R: the codes and scales of quantize(W R), recorded as rotated; dequantize undoes R', async () => {
    const [rows, cols] = [24, 96]; // block 32 (96 = 32 * 3)
    const data = normals(rows * cols, 1, 0.02);
    const w = tensor(data, [rows, cols], { name: 'blocks.0.mlp.fc.weight' });
    const q = await quantize(w, { bits: 4, clipSigmas: 5, rotate: 'hadamard' });
    expect(q.rotation).toEqual(hadamard(32));
    const ref = await quantize(tensor(Float32Array.from(rotatedRows(data, hadamard(32))), [rows, cols]), { bits: 4, clipSigmas: 5 });
    expect(ref.rotation).toBeUndefined();
    expect(Array.from(await q.codes.data())).toEqual(Array.from(await ref.codes.data()));
    expect(Array.from(await q.scales.data())).toEqual(Array.from(await ref.scales.data()));

    const stored = await dequantize(q, { rotated: true });
    expect(Array.from(await stored.data())).toEqual(Array.from(await (await dequantize(ref)).data()));
    const back = await dequantize(q);
    expect(back.shape).toEqual([rows, cols]);
    assertClose(Float32Array.from(rotateRows(Float64Array.from(await stored.data()), hadamard(32), true)), await back.data(), { rtol: 1e-6 });
    // the weight error is the same in either basis (R is orthonormal), and is the 4-bit grid's
    const err = relativeRmse(data, await back.data());
    expect(Math.abs(err - relativeRmse(rotatedRows(data, hadamard(32)), await stored.data()))).toBeLessThan(1e-6);
    expect(Math.abs(err / gridError(4, 5) - 1)).toBeLessThan(0.1);
    expect((await dequantize(q, { dtype: 'bf16' })).dtype).toBe('bf16');
  });

  it('a power-of-two K is rotated whole; the options pick a smaller block and the seed', async () => {
    const w = randn([8, 64], { seed: 2 });
    expect((await quantize(w, { bits: 6, clipSigmas: 12, rotate: 'hadamard' })).rotation).toEqual(hadamard(64));
    expect((await quantize(w, { bits: 6, clipSigmas: 12, rotate: { block: 16, seed: null } })).rotation).toEqual(hadamard(16, null));
    expect((await quantize(w, { bits: 6, clipSigmas: 12, rotate: { seed: 9 } })).rotation).toEqual(hadamard(64, 9));
  });

  it('spreads outliers: at 4 bits a weight with outlier columns loses less to rounding when rotated', async () => {
    const [rows, cols] = [64, 256];
    const data = normals(rows * cols, 3, 0.02);
    for (const c of [7, 100, 201]) for (let r = 0; r < rows; r++) data[r * cols + c]! *= 30; // a few hot input channels
    const w = tensor(data, [rows, cols]);
    const plain = relativeRmse(data, await (await dequantize(await quantize(w, { bits: 4, clipSigmas: 6 }))).data());
    const rotated = relativeRmse(data, await (await dequantize(await quantize(w, { bits: 4, clipSigmas: 6, rotate: 'hadamard' }))).data());
    expect(rotated).toBeLessThan(plain / 2);
  });

  it('GPTQ rotates its Hessian: the codes of GPTQ on W R with R H R', async () => {
    const [rows, cols, n] = [16, 64, 256];
    const data = normals(rows * cols, 4, 0.02);
    const x = activations(n, cols, 5);
    const h = createHessian(cols);
    await accumulateHessian(h, tensor(x, [n, cols]));
    const xr = tensor(Float32Array.from(rotatedRows(x, hadamard(16))), [n, cols]); // the inputs the rotated layer sees
    const hr = createHessian(cols);
    await accumulateHessian(hr, xr);
    const options = { bits: 4, clipSigmas: 5, method: 'gptq' } as const;
    const q = await quantize(tensor(data, [rows, cols]), { ...options, hessian: h, rotate: { block: 16 } });
    const ref = await quantize(tensor(Float32Array.from(rotatedRows(data, hadamard(16))), [rows, cols]), { ...options, hessian: hr });
    // R^T H R in float64 against the Hessian of R x: equal up to rounding, which may flip a near-tie
    const codes = await q.codes.data();
    const refCodes = await ref.codes.data();
    expect(Array.from(codes).filter((c, i) => c !== refCodes[i]).length).toBeLessThanOrEqual(2);
  });

  it('refuses a K no power-of-two block divides, naming the tensor, and bad options', async () => {
    const w = (cols: number) => randn([4, cols], { seed: cols, name: 'blocks.2.attn.proj.weight' });
    await expect(quantize(w(33), { bits: 4, clipSigmas: 5, rotate: 'hadamard' })).rejects.toThrow(ShapeError);
    await expect(quantize(w(33), { bits: 4, clipSigmas: 5, rotate: 'hadamard' })).rejects.toThrow(/blocks\.2\.attn\.proj\.weight \[4, 33\] has 33 inputs/);
    await expect(quantize(w(48), { bits: 4, clipSigmas: 5, rotate: { block: 32 } })).rejects.toThrow(ShapeError);
    await expect(quantize(w(48), { bits: 4, clipSigmas: 5, rotate: { block: 12 } })).rejects.toThrow(InputError);
    await expect(quantize(w(48), { bits: 4, clipSigmas: 5, rotate: { seed: -1 } })).rejects.toThrow(InputError);
    await expect(quantize(w(48), { bits: 4, clipSigmas: 5, rotate: 'walsh' as never })).rejects.toThrow(InputError);
  });

  it('survives the artifact and quantizeModel; dequantizeModel returns the unrotated weights', async () => {
    const weights = { 'blocks.0.mlp.fc.weight': tensor(normals(300 * 256, 6, 0.02), [300, 256]), 'blocks.0.attn.q_gain': tensor(normals(8, 7), [8]) };
    const model = await quantizeModel(weights, { rules: [{ match: '.mlp.', bits: 6, clipSigmas: 12 }], fallback: null, passthroughMaxElements: 1024, method: 'rtn', rotate: 'hadamard' });
    const q = model.quantized['blocks.0.mlp.fc.weight']!;
    expect(q.rotation).toEqual(hadamard(256));
    const dir = await mkdtemp(join(tmpdir(), 'phalanx-hadamard-'));
    try {
      for (const codes of ['packed', 'int8'] as const) {
        const file = join(dir, `${codes}.safetensors`);
        await writeArtifact(file, model, { codes });
        const read = await readArtifact(file);
        expect(read.quantized['blocks.0.mlp.fc.weight']!.rotation).toEqual(q.rotation);
        const w = (await dequantizeModel(read))['blocks.0.mlp.fc.weight']!;
        expect(Array.from(await w.data())).toEqual(Array.from(await (await dequantize(q)).data()));
        expect(Math.abs(relativeRmse(await weights['blocks.0.mlp.fc.weight'].data(), await w.data()) / gridError(6, 12) - 1)).toBeLessThan(0.1);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.each(backends)('quantizedLinear with a rotated weight on $name', (backend) => {
  it.each([
    ['int8', 1],
    ['int8', 9],
    ['packed', 1],
    ['packed', 17],
  ] as const)('%s codes, M = %i: rotates x; the rotated pair dequantized, and the float layer up to the quantization error', async (layout, M) => {
    const [N, K] = [40, 192]; // block 64
    const w = randn([N, K], { seed: 8, std: 0.05 });
    const q = await quantize(w, { bits: 6, clipSigmas: 12, rotate: 'hadamard' });
    expect(q.rotation?.block).toBe(64);
    const x = randn([M, K], { seed: M });
    const bias = randn([N], { seed: 9 });
    const y = await quantizedLinear(await x.to(backend), await quantizedTo(q, backend, { layout }), await bias.to(backend));
    expect(y.backend).toBe(backend);
    expect(y.shape).toEqual([M, N]);
    const out = await y.data();
    // the rotated pair: (x R) . (W R)~ with the stored codes, on the CPU
    const rotatedPair = await linear(tensor(Float32Array.from(rotatedRows(await x.data(), hadamard(64))), [M, K]), await dequantize(q, { rotated: true }), bias);
    assertClose(await rotatedPair.data(), out, { rtol: 1e-5 });
    assertClose(await (await linear(x, await dequantize(q), bias)).data(), out, { rtol: 1e-5 }); // the unrotated weight
    const float = await (await linear(x, w, bias)).data();
    const plain = await (await linear(x, await dequantize(await quantize(w, { bits: 6, clipSigmas: 12 })), bias)).data();
    const error = relativeRmse(float, out);
    expect(error).toBeGreaterThan(1e-3); // 6-bit codes at k = 12: the step is 0.39 std
    expect(error).toBeLessThan(2 * relativeRmse(float, plain)); // Gaussian weights: no outliers to spread
  });

  it.each([0, null])('rotateHadamard: matches the float64 rotation, and its inverse undoes it (seed %s); refuses a last dim the block does not divide', async (seed) => {
    const x = randn([3, 5, 128], { seed: 10 });
    const r = hadamard(32, seed);
    const once = await rotateHadamard(await x.to(backend), r);
    expect(once.backend).toBe(backend);
    expect(once.shape).toEqual([3, 5, 128]);
    assertClose(Float32Array.from(rotatedRows(await x.data(), r)), await once.data(), { rtol: 1e-5 });
    assertClose(await x.data(), await (await rotateHadamard(once, r, { inverse: true })).data(), { rtol: 1e-5 });
    await expect(rotateHadamard(await randn([2, 48], { seed: 1 }).to(backend), r)).rejects.toThrow(ShapeError);
  });
});

describe('foldHadamard', () => {
  /** Integer weights and a block whose sqrt is a power of two: every product of the fold is exact in f32. */
  function integers(n: number, seed: number): Float32Array {
    const rng = new Rng(seed);
    return Float32Array.from({ length: n }, () => rng.int(17) - 8);
  }
  function product(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
    const out = new Float64Array(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) for (let l = 0; l < k; l++) out[i * n + j]! += a[i * k + l]! * b[l * n + j]!;
    return out;
  }

  it.each([16, 64])('W_next R times R^T W_prev is W_next W_prev exactly, bias included (block %i)', async (block) => {
    const [out, K, inputs] = [12, 64, 20];
    const prev = tensor(integers(K * inputs, 1), [K, inputs], { name: 'v_proj' });
    const next = tensor(integers(out * K, 2), [out, K], { name: 'o_proj' });
    const bias = tensor(integers(K, 3), [K]);
    const f = await foldHadamard(prev, next, { bias, block });
    expect(f.rotation).toEqual(hadamard(block));
    expect(f.prev.shape).toEqual([K, inputs]);
    expect(f.next.shape).toEqual([out, K]);
    expect(Array.from(product(await f.next.data(), await f.prev.data(), out, K, inputs))).toEqual(Array.from(product(await next.data(), await prev.data(), out, K, inputs)));
    expect(Array.from(product(await f.next.data(), await f.bias!.data(), out, K, 1))).toEqual(Array.from(product(await next.data(), await bias.data(), out, K, 1)));
    expect(Array.from(await f.prev.data())).not.toEqual(Array.from(await prev.data()));
  });

  it('on float weights the pair computes the same y to f32 rounding, and the next weight quantizes as is', async () => {
    const prev = randn([96, 40], { seed: 4 });
    const next = randn([30, 96], { seed: 5 });
    const x = randn([7, 40], { seed: 6 });
    const f = await foldHadamard(prev, next, { seed: 3 }); // block 32
    const y = await (await linear(await linear(x, prev), next)).data();
    assertClose(y, await (await linear(await linear(x, f.prev), f.next)).data(), { rtol: 1e-5 });
    expect(f.bias).toBeNull();
    const q = await quantize(f.next, { bits: 8, clipSigmas: 12 });
    expect(relativeRmse(y, await (await quantizedLinear(await linear(x, f.prev), q)).data())).toBeLessThan(1.2 * gridError(8, 12));
  });

  it('refuses mismatched shapes and a K no block divides, naming the tensors', async () => {
    await expect(foldHadamard(randn([64, 8], { seed: 1, name: 'a' }), randn([4, 32], { seed: 2, name: 'b' }))).rejects.toThrow(/b \[4, 32\] must read the 64 outputs of a/);
    await expect(foldHadamard(randn([63, 8], { seed: 1 }), randn([4, 63], { seed: 2, name: 'b' }))).rejects.toThrow(ShapeError);
    await expect(foldHadamard(randn([64, 8], { seed: 1 }), randn([4, 64], { seed: 2 }), { bias: randn([32], { seed: 3 }) })).rejects.toThrow(ShapeError);
  });
});

import { DTypeError, InputError, ShapeError, f16BitsToF32, f32ToF16Bits, tensor } from '@phalanx/core';
import { describe, expect, it } from 'vitest';
import { accumulateHessian, createHessian, dequantize, hessianMatrix, quantize, roundHalfEven } from '../src/index.js';
import { activations, matrix, normals, outputError } from './helpers.js';

/** SDClip RTN written out from the spec: unbiased row std, fp16 scale, fp32 quotient, round half to even, clamp. */
function rtnReference(w: ArrayLike<number>, rows: number, cols: number, bits: number, k: number) {
  const R = 2 ** (bits - 1) - 1;
  const codes: number[] = [];
  const scales: number[] = [];
  for (let r = 0; r < rows; r++) {
    const row = Array.from({ length: cols }, (_, c) => w[r * cols + c]!);
    const mean = row.reduce((a, b) => a + b, 0) / cols;
    const std = Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / (cols - 1));
    const s = f16BitsToF32(f32ToF16Bits(Math.max((k * std) / R, 1e-10)));
    scales.push(s);
    for (const v of row) {
      const x = Math.fround(v / s);
      const fl = Math.floor(x);
      const rounded = x - fl === 0.5 ? (fl % 2 === 0 ? fl : fl + 1) : Math.round(x);
      codes.push(Math.min(R, Math.max(-R, rounded)) + 0); // + 0: an int8 code has no -0
    }
  }
  return { codes, scales };
}

const count = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).filter((v, i) => v !== b[i]).length;

describe('RTN (SDClip)', () => {
  it.each([
    [2, 1.5],
    [4, 3],
    [6, 12],
    [6, 13],
    [7, 15],
    [8, 20],
  ])('matches the formula at %i bits, k=%f', async (bits, k) => {
    const [rows, cols] = [13, 37];
    const data = normals(rows * cols, bits * 100 + k, 0.02);
    data[5] = 1; // an outlier, clipped at 2 bits
    const q = await quantize(tensor(data, [rows, cols]), { bits, clipSigmas: k });
    const ref = rtnReference(data, rows, cols, bits, k);
    expect(q.codes.dtype).toBe('i8');
    expect(q.scales.dtype).toBe('f16');
    expect(q.codes.shape).toEqual([rows, cols]);
    expect(Array.from(await q.scales.data())).toEqual(ref.scales);
    expect(Array.from(await q.codes.data())).toEqual(ref.codes);
    const deq = await dequantize(q);
    expect(deq.dtype).toBe('f32');
    expect(Array.from(await deq.data())).toEqual(ref.codes.map((c, i) => Math.fround(c * ref.scales[Math.floor(i / cols)]!)));
  });

  it('rounds half to even, as torch.round', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6, 3].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, -3, 3]);
  });

  it('an all-zero row gets code 0 (its fp16 scale underflows to 0), not NaN', async () => {
    const data = normals(3 * 8, 1);
    data.fill(0, 8, 16);
    const q = await quantize(tensor(data, [3, 8]), { bits: 6, clipSigmas: 12 });
    expect((await q.scales.data())[1]).toBe(0);
    expect(Array.from((await q.codes.data()).subarray(8, 16))).toEqual(new Array(8).fill(0));
    const h = createHessian(8);
    await accumulateHessian(h, tensor(normals(64, 2), [8, 8]));
    const g = await quantize(tensor(data, [3, 8]), { bits: 6, clipSigmas: 12, method: 'gptq', hessian: h });
    expect(Array.from((await g.codes.data()).subarray(8, 16))).toEqual(new Array(8).fill(0));
  });
});

describe('Hessian accumulator', () => {
  it('is the mean over batches of X^T X', async () => {
    const [k, n] = [5, 7];
    const xs = [normals(n * k, 1), normals(2 * n * k, 2)];
    const h = createHessian(k);
    await accumulateHessian(h, tensor(xs[0]!, [n, k]));
    await accumulateHessian(h, tensor(xs[1]!, [2, n, k]));
    const expected = new Float64Array(k * k);
    for (const x of xs) for (let t = 0; t < x.length / k; t++) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) expected[i * k + j]! += (x[t * k + i]! * x[t * k + j]!) / 2;
    Array.from(hessianMatrix(h)).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 10));
  });
});

describe('GPTQ', () => {
  const [rows, cols, n] = [24, 48, 256];
  const x = activations(n, cols, 7);
  const hessian = async () => {
    const h = createHessian(cols);
    await accumulateHessian(h, tensor(x, [n, cols]));
    return h;
  };

  it('has a lower output error ||XW^T - XWq^T|| than RTN at the same bits', async () => {
    const w = matrix(rows, cols, 3);
    const wd = await w.data();
    for (const [bits, k] of [[3, 2.5], [4, 4], [6, 12]] as const) {
      const rtn = await dequantize(await quantize(w, { bits, clipSigmas: k }));
      const gptq = await dequantize(await quantize(w, { bits, clipSigmas: k, method: 'gptq', hessian: await hessian(), blockSize: 16 }));
      const eRtn = outputError(x, n, cols, wd, await rtn.data(), rows);
      const eGptq = outputError(x, n, cols, wd, await gptq.data(), rows);
      expect(eGptq).toBeLessThan(0.8 * eRtn);
    }
  });

  it('keeps the RTN scales and grid', async () => {
    const w = matrix(rows, cols, 4);
    const r = await quantize(w, { bits: 4, clipSigmas: 4 });
    const g = await quantize(w, { bits: 4, clipSigmas: 4, method: 'gptq', hessian: await hessian() });
    expect(Array.from(await g.scales.data())).toEqual(Array.from(await r.scales.data()));
    expect(Math.max(...Array.from(await g.codes.data(), Math.abs))).toBeLessThanOrEqual(7);
  });

  it('gives the same codes whatever the block size (lazy updates are exact)', async () => {
    const w = matrix(rows, cols, 5);
    const h = await hessian();
    const codes = await Promise.all([5, 16, 128].map(async (blockSize) => (await quantize(w, { bits: 4, clipSigmas: 4, method: 'gptq', hessian: h, blockSize })).codes.data()));
    expect(count(codes[0]!, codes[2]!)).toBe(0);
    expect(count(codes[1]!, codes[2]!)).toBe(0);
  });

  it('reduces to RTN with an identity Hessian', async () => {
    const w = matrix(rows, cols, 6);
    const eye = tensor(Array.from({ length: cols * cols }, (_, i) => (i % (cols + 1) === 0 ? 1 : 0)), [cols, cols]);
    const r = await quantize(w, { bits: 5, clipSigmas: 6 });
    const g = await quantize(w, { bits: 5, clipSigmas: 6, method: 'gptq', hessian: eye });
    expect(count(await g.codes.data(), await r.codes.data())).toBe(0);
  });

  it('zeroes dead columns (H_jj = 0) and stays finite', async () => {
    const xd = x.slice();
    for (let t = 0; t < n; t++) xd[t * cols + 3] = xd[t * cols + 10] = 0;
    const h = createHessian(cols);
    await accumulateHessian(h, tensor(xd, [n, cols]));
    const w = matrix(rows, cols, 8);
    const q = await quantize(w, { bits: 4, clipSigmas: 4, method: 'gptq', hessian: h });
    const codes = await q.codes.data();
    for (let r = 0; r < rows; r++) expect([codes[r * cols + 3], codes[r * cols + 10]]).toEqual([0, 0]);
    const wd = await w.data();
    const eRtn = outputError(xd, n, cols, wd, await (await dequantize(await quantize(w, { bits: 4, clipSigmas: 4 }))).data(), rows);
    expect(outputError(xd, n, cols, wd, await (await dequantize(q)).data(), rows)).toBeLessThan(eRtn);
  });

  it('applies the act-order permutation and undoes it', async () => {
    const w = matrix(rows, cols, 9);
    const wd = await w.data();
    const h = hessianMatrix(await hessian());
    const perm = Array.from({ length: cols }, (_, j) => j).sort((a, b) => h[b * cols + b]! - h[a * cols + a]! || a - b);
    expect(perm).not.toEqual([...perm].sort((a, b) => a - b)); // the order matters here
    // act-order on (W, H) == plain GPTQ on the permuted problem, un-permuted.
    const wp = tensor(Array.from({ length: rows * cols }, (_, i) => wd[Math.floor(i / cols) * cols + perm[i % cols]!]!), [rows, cols]);
    const hp = tensor(Array.from({ length: cols * cols }, (_, i) => h[perm[Math.floor(i / cols)]! * cols + perm[i % cols]!]!), [cols, cols]);
    const plain = await (await quantize(wp, { bits: 4, clipSigmas: 4, method: 'gptq', hessian: hp, actOrder: false })).codes.data();
    const unpermuted = new Int8Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) unpermuted[r * cols + perm[j]!] = plain[r * cols + j]!;
    const ordered = await (await quantize(w, { bits: 4, clipSigmas: 4, method: 'gptq', hessian: tensor(h, [cols, cols]) })).codes.data();
    expect(count(ordered, unpermuted)).toBe(0);
    const unordered = await (await quantize(w, { bits: 4, clipSigmas: 4, method: 'gptq', hessian: tensor(h, [cols, cols]), actOrder: false })).codes.data();
    expect(count(ordered, unordered)).toBeGreaterThan(0);
  });

  it('with a diagonal Hessian of shuffled energies is RTN, each code back in its column', async () => {
    const w = matrix(rows, cols, 10);
    const diag = tensor(Array.from({ length: cols * cols }, (_, i) => (i % (cols + 1) === 0 ? 1 + ((i * 7919) % 97) : 0)), [cols, cols]);
    const r = await quantize(w, { bits: 3, clipSigmas: 3 });
    const g = await quantize(w, { bits: 3, clipSigmas: 3, method: 'gptq', hessian: diag });
    expect(count(await g.codes.data(), await r.codes.data())).toBe(0);
  });
});

describe('typed errors', () => {
  const w = matrix(4, 6, 1, 'blocks.0.mlp.fc.weight');
  it.each([1, 9, 0, 6.5, NaN])('bits %f is an InputError', async (bits) => {
    await expect(quantize(w, { bits, clipSigmas: 12 })).rejects.toThrow(InputError);
  });
  it('refuses bad shapes, dtypes and options', async () => {
    await expect(quantize(tensor([1, 2, 3], [3]), { bits: 6, clipSigmas: 12 })).rejects.toThrow(ShapeError);
    await expect(quantize(tensor([1, 2, 3], [3, 1]), { bits: 6, clipSigmas: 12 })).rejects.toThrow(ShapeError);
    await expect(quantize(tensor(new Int32Array(4), [2, 2]), { bits: 6, clipSigmas: 12 })).rejects.toThrow(DTypeError);
    await expect(quantize(w, { bits: 6, clipSigmas: 0 })).rejects.toThrow(InputError);
    await expect(quantize(w, { bits: 6, clipSigmas: 12, method: 'gptq' })).rejects.toThrow(/needs a hessian for blocks.0.mlp.fc.weight/);
    await expect(quantize(w, { bits: 6, clipSigmas: 12, hessian: createHessian(6) })).rejects.toThrow(InputError);
    await expect(quantize(w, { bits: 6, clipSigmas: 12, method: 'gptq', hessian: createHessian(5) })).rejects.toThrow(ShapeError);
    await expect(quantize(w, { bits: 6, clipSigmas: 12, method: 'gptq', hessian: tensor(new Float32Array(30), [6, 5]) })).rejects.toThrow(ShapeError);
    await expect(quantize(w, { bits: 6, clipSigmas: 12, method: 'gptq', hessian: createHessian(6) })).rejects.toThrow(/no batch/);
    await expect(quantize(tensor([1, NaN, 3, 4], [2, 2]), { bits: 6, clipSigmas: 12 })).rejects.toThrow(InputError);
    await expect(accumulateHessian(createHessian(6), tensor(new Float32Array(10), [2, 5]))).rejects.toThrow(ShapeError);
  });
});

import { type DType, DTypeError, InputError, ShapeError, type Tensor, assertClose, getKernels, tensor } from '@phalanx/core';
import { type WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { GEMV_SHAPES, dispatches, rand, randInt8 } from './helpers.js';
import { type LinearWeight, type LinearsAttrs, fusesLinears, linear, linears } from '../src/index.js';
import { LINEARS_MAX_MATRICES, linearsProgram } from '../src/webgpu/linear.js';

const { backends, gpu } = await testBackends();

/** float64 reference: x [M, K] w^T [K, N] (+ bias). */
function ref(x: number[], w: number[], M: number, N: number, K: number, bias?: number[]): number[] {
  const out: number[] = [];
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[m * K + k]! * w[n * K + k]!;
      out.push(acc + (bias ? bias[n]! : 0));
    }
  return out;
}

/** The kernels `linears` dispatches on the GPU and how many times each (its results disposed). */
function dispatched(g: WebGPUBackend, x: Tensor, weights: LinearWeight[], biases?: (Tensor | null)[]) {
  return dispatches(g, async () => {
    const ys = await linears(x, weights, biases);
    for (const y of ys.slice(1)) y.dispose();
    return ys[0]!;
  });
}

/** Seeded weights [N, K] of `dtype` ('i8': int8 codes and row scales) and their values as stored. */
async function weight(N: number, K: number, seed: number, backend: Parameters<typeof rand>[2], dtype: DType | 'i8', name: string): Promise<{ w: LinearWeight; v: number[] }> {
  if (dtype === 'i8') return randInt8(N, K, seed, backend, name);
  const { t, v } = await rand([N, K], seed, backend, dtype, name);
  return { w: t, v };
}

let seed = 500;

describe.each(backends)('linears on $name', (backend) => {
  // (M, K, Ns): 1-4 rows of x (the fused case), 2-4 matrices of different N (1, odd, not a multiple of the 4
  // rows per workgroup, past the unrolled loop's K)
  const FUSED: [number, number, number[]][] = [
    [1, 64, [63, 1]],
    [1, 288, [64, 64, 64, 4]],
    [2, 100, [33, 7, 1]],
    [3, 4, [5, 2, 9, 1]],
    [4, 36, [257, 31]],
  ];
  const CASES = FUSED.flatMap(([M, K, Ns]) =>
    (['f32', 'f16', 'bf16', 'i8'] as const).flatMap((dtype) => [false, true].map((withBias) => [M, K, Ns, dtype, withBias] as const)),
  );
  it.each(CASES)('fused M=%i K=%i N=%j, %s weights, bias %s: each output is linear(x, W_i, b_i)', async (M, K, Ns, dtype, withBias) => {
    expect(fusesLinears(M, K)).toBe(true);
    const x = await rand([M, K], seed++, backend);
    const ws = await Promise.all(Ns.map((N, i) => weight(N, K, seed++, backend, dtype, `w${i}`)));
    // biases on every other matrix, one in bf16
    const bs = await Promise.all(Ns.map((N, i) => (withBias && i % 2 === 0 ? rand([N], seed++, backend, i === 2 ? 'bf16' : 'f32', `b${i}`) : undefined)));
    const ys = await linears(x.t, ws.map((w) => w.w), bs.map((b) => b?.t ?? null));
    expect(ys).toHaveLength(Ns.length);
    for (const [i, y] of ys.entries()) {
      const N = Ns[i]!;
      expect(y.shape).toEqual([M, N]);
      expect(y.dtype).toBe('f32');
      const out = await y.data();
      const alone = await (await linear(x.t, ws[i]!.w, bs[i]?.t)).data();
      // the CPU computes both with the same float64 sums; the GPU with the same loop, in another shader
      if (backend === gpu) assertClose(alone, out, { rtol: 1e-6, name: `fused vs linear, matrix ${i}` });
      else expect(Array.from(out)).toEqual(Array.from(alone));
      assertClose(ref(x.v, ws[i]!.v, M, N, K, bs[i]?.v), out, { rtol: 1e-5, name: `fused vs float64, matrix ${i}` });
    }
  });

  // K not a multiple of 4, more rows than the GEMV takes, mixed kinds (fused in decode), leading dims
  it.each([
    [[1], 30, ['f32', 'f32']],
    [[5], 64, ['bf16', 'bf16', 'bf16']],
    [[37], 36, ['f32', 'i8']],
    [[1, 1], 64, ['f32', 'bf16', 'f32', 'i8', 'i8']],
    [[2, 3], 8, ['f16', 'f32', 'f16']],
  ] as const)('lead %j, K=%i, weights %j', async (lead, K, dtypes) => {
    const M = lead.reduce((a: number, b: number) => a * b, 1);
    const x = await rand([...lead, K], seed++, backend);
    const ws = await Promise.all(dtypes.map((d, i) => weight(3 + 2 * i, K, seed++, backend, d, `w${i}`)));
    const bs = await Promise.all(dtypes.map((_, i) => (i === 1 ? rand([3 + 2 * i], seed++, backend) : undefined)));
    const ys = await linears(x.t, ws.map((w) => w.w), bs.map((b) => b?.t));
    for (const [i, y] of ys.entries()) {
      expect(y.shape).toEqual([...lead, 3 + 2 * i]);
      assertClose(ref(x.v, ws[i]!.v, M, 3 + 2 * i, K, bs[i]?.v), await y.data(), { rtol: 1e-5, name: `matrix ${i}` });
    }
  });

  it('an empty list gives none; a matrix of no rows an empty output, the others still fused', async () => {
    const x = await rand([1, 8], seed++, backend);
    expect(await linears(x.t, [])).toEqual([]);
    const ws = [await rand([3, 8], seed++, backend), await rand([0, 8], seed++, backend), await rand([2, 8], seed++, backend)];
    const ys = await linears(x.t, ws.map((w) => w.t));
    expect(ys.map((y) => y.shape)).toEqual([[1, 3], [1, 0], [1, 2]]);
    assertClose(ref(x.v, ws[2]!.v, 1, 2, 8), await ys[2]!.data(), { rtol: 1e-5 });
  });

  it('refuses bad shapes and dtypes with the errors of linear, naming the tensors', async () => {
    const x = tensor(new Float32Array(8), [2, 4], { backend, name: 'h' });
    const q = tensor(new Float32Array(12), [3, 4], { backend, name: 'q_proj.weight' });
    const k = tensor(new Float32Array(8), [2, 4], { backend, name: 'k_proj.weight' });
    const wide = tensor(new Float32Array(10), [2, 5], { backend, name: 'v_proj.weight' });
    await expect(linears(x, [q, wide])).rejects.toThrow(ShapeError);
    await expect(linears(x, [q, wide])).rejects.toThrow(/weight v_proj.weight \[2, 5\] must have the in dim 4 of weight q_proj.weight \[3, 4\]/);
    await expect(linears(tensor(new Float32Array(6), [2, 3], { backend, name: 'h' }), [q, k])).rejects.toThrow(/linears: input h \[2, 3\] must end in 4 \(weight q_proj.weight is \[3, 4\]\)/);
    const b = tensor(new Float32Array(3), [3], { backend, name: 'k_proj.bias' });
    await expect(linears(x, [q, k], [null, b])).rejects.toThrow(ShapeError);
    await expect(linears(x, [q, k], [null, b])).rejects.toThrow(/linears: bias k_proj.bias \[3\] must be \[2\] to match weight k_proj.weight/);
    await expect(linears(x, [q, k], [null, null, b])).rejects.toThrow(InputError);
    await expect(linears(x, [q, tensor(new Int32Array(8), [2, 4], { backend, name: 'k_proj.weight' })])).rejects.toThrow(DTypeError);
    await expect(linears(x, [q, { codes: k, scales: tensor([1, 1], [2], { backend }) }])).rejects.toThrow(/linears: codes k_proj.weight must be i8, got f32/);
    await expect(linears(x, [q, tensor(new Float32Array(12), [12], { backend, name: 'flat' })])).rejects.toThrow(/weight flat must be \[out, in\]/);
    await expect(linears(tensor(new Int32Array(8), [2, 4], { backend }), [q, k])).rejects.toThrow(DTypeError);
  });
});

describe.runIf(gpu)('linears on WebGPU: dispatches', () => {
  const g = gpu as WebGPUBackend;
  const K = 64;

  it('one dispatch for 1-4 rows and weights of one kind (int8 too), with and without biases', async () => {
    for (const dtype of ['f32', 'bf16', 'i8'] as const) {
      const ws = await Promise.all([63, 1, 130].map((N, i) => weight(N, K, seed++, g, dtype, `w${i}`)));
      const bias = await rand([1], seed++, g);
      for (const M of [1, 4]) {
        const x = await rand([M, K], seed++, g);
        expect(await dispatched(g, x.t, ws.map((w) => w.w))).toEqual([['linears', 1]]);
        expect(await dispatched(g, x.t, ws.map((w) => w.w), [null, bias.t])).toEqual([['linears', 1]]);
      }
    }
  });

  it('separate linears for K % 4 != 0 and 5+ rows; mixed kinds fused in one dispatch', async () => {
    const f = await Promise.all([5, 7, 9].map((N) => rand([N, K], seed++, g)));
    const h = await rand([6, K], seed++, g, 'bf16');
    const q = await randInt8(6, K, seed++, g);
    expect(await dispatched(g, (await rand([5, K], seed++, g)).t, f.map((w) => w.t))).toEqual([['matmul', 3]]);
    const x = await rand([1, K], seed++, g);
    expect(await dispatched(g, x.t, [f[0]!.t, h.t, q.w])).toEqual([['linears', 1]]);
    expect(await dispatched(g, x.t, [f[0]!.t, h.t, f[1]!.t])).toEqual([['linears', 1]]);
    // Spartacus int8: q, k, v as codes, the decay projection in f32 with its bias
    const bias = await rand([9], seed++, g);
    const ys = await linears(x.t, [q.w, f[0]!.t, h.t, f[2]!.t], [null, null, null, bias.t]);
    const refs = [ref(x.v, q.v, 1, 6, K), ref(x.v, f[0]!.v, 1, 5, K), ref(x.v, h.v, 1, 6, K), ref(x.v, f[2]!.v, 1, 9, K, bias.v)];
    for (const [i, y] of ys.entries()) assertClose(refs[i]!, await y.data(), { rtol: 1e-5, name: `mixed kinds, matrix ${i}` });
    const odd = await Promise.all([5, 7].map((N) => rand([N, 30], seed++, g)));
    expect(await dispatched(g, (await rand([1, 30], seed++, g)).t, odd.map((w) => w.t))).toEqual([['matmul', 2]]);
  });

  it("respects the device's storage buffers per shader stage: splits the weights into dispatches that fit, or falls back", async () => {
    const limits = g.limits as Record<string, number>;
    const saved = limits.maxStorageBuffersPerShaderStage!;
    const x = await rand([1, K], seed++, g);
    // Spartacus's q, k, v and decay (with its bias): x, 4 weights, 1 bias, 4 outputs
    const ws = await Promise.all([16, 16, 16, 4].map((N) => rand([N, K], seed++, g)));
    const b = await rand([4], seed++, g);
    const biases = [null, null, null, b.t];
    try {
      limits.maxStorageBuffersPerShaderStage = 10;
      expect(await dispatched(g, x.t, ws.map((w) => w.t), biases)).toEqual([['linears', 1]]);
      limits.maxStorageBuffersPerShaderStage = 8; // q, k, v fit (7 bindings)
      expect(await dispatched(g, x.t, ws.map((w) => w.t), biases)).toEqual([['linears', 1], ['matmul', 1]]);
      limits.maxStorageBuffersPerShaderStage = 4; // not even two
      expect(await dispatched(g, x.t, ws.map((w) => w.t), biases)).toEqual([['matmul', 4]]);
      const ys = await linears(x.t, ws.map((w) => w.t), biases);
      for (const [i, y] of ys.entries()) assertClose(ref(x.v, ws[i]!.v, 1, ws[i]!.t.shape[0]!, K, i === 3 ? b.v : undefined), await y.data(), { rtol: 1e-5 });
    } finally {
      limits.maxStorageBuffersPerShaderStage = saved;
    }
    // more matrices than one dispatch takes: runs of at most LINEARS_MAX_MATRICES
    const many = await Promise.all(Array.from({ length: LINEARS_MAX_MATRICES + 2 }, (_, i) => rand([3 + i, K], seed++, g)));
    const counts = await dispatched(g, x.t, many.map((w) => w.t));
    expect(counts.every(([name]) => name === 'linears')).toBe(true);
    expect(counts[0]![1]).toBeGreaterThanOrEqual(2);
    const ys = await linears(x.t, many.map((w) => w.t));
    for (const [i, y] of ys.entries()) assertClose(ref(x.v, many[i]!.v, 1, 3 + i, K), await y.data(), { rtol: 1e-5 });
  });

  it('the kernel declines what it cannot bind or compute', () => {
    const [kernel] = getKernels('linears', 'webgpu');
    const w = tensor(new Float32Array(8), [2, 4], { backend: g });
    const out = { N: 2, hasBias: false, hasRowScale: false, outShape: [1, 2] };
    const attrs = (n: number, M = 1, K = 4): LinearsAttrs => ({ M, K, outputs: Array.from({ length: n }, () => out) });
    const inputs = (n: number) => [w, ...Array.from({ length: n }, () => w)];
    const backend = (maxStorageBuffersPerShaderStage: number) => ({ limits: { ...g.limits, maxStorageBuffersPerShaderStage } });
    expect(kernel!.verify!(inputs(2), attrs(2), backend(5))).toBe(true);
    expect(kernel!.verify!(inputs(2), attrs(2), backend(4))).toMatch(/5 storage bindings, more than the device's 4/);
    expect(kernel!.verify!(inputs(2), attrs(2, 5), backend(16))).toMatch(/1 to 4 rows/);
    expect(kernel!.verify!(inputs(2), attrs(2, 1, 6), backend(16))).toMatch(/K a multiple of 4/);
    const codes = tensor(new Int8Array(8), [2, 4], { backend: g });
    expect(kernel!.verify!([w, w, codes], attrs(2), backend(16))).toMatch(/weight .* is i8 without row scales/);
    expect(kernel!.verify!(inputs(LINEARS_MAX_MATRICES + 1), attrs(LINEARS_MAX_MATRICES + 1), backend(64))).toMatch(/matrices/);
  });

  // other GEMV shapes into outputs poisoned with NaN (unwritten elements show), f16 x, grid rows past the last matrix
  it.each(GEMV_SHAPES)('program %j, rows 1 and 3, f16 x', async (shape) => {
    const Ns = [37, 1, 12];
    for (const [M, xd, wd] of [[1, 'f32', 'f16'], [3, 'f16', 'bf16']] as const) {
      const x = await rand([M, K], seed++, g, xd);
      const ws = await Promise.all(Ns.map((N) => rand([N, K], seed++, g, wd)));
      const bias = await rand([Ns[1]!], seed++, g);
      const outs = Ns.map((N) => tensor(new Float32Array(M * N).fill(NaN), [M, N], { backend: g }));
      const groups = Ns.map((N) => Math.ceil(N / shape.rowsPerGroup));
      const prog = linearsProgram(xd, M, [{ weight: wd }, { weight: wd, bias: 'f32' }, { weight: wd }], shape);
      const uniforms = { K, N0: Ns[0]!, N1: Ns[1]!, N2: Ns[2]!, G1: groups[0]!, G2: groups[0]! + groups[1]! };
      await g.run(prog, [x.t, ws[0]!.t, ws[1]!.t, bias.t, ws[2]!.t], outs, uniforms, [groups[0]! + groups[1]! + groups[2]! + 3, 1, 1]);
      for (const [i, out] of outs.entries()) assertClose(ref(x.v, ws[i]!.v, M, Ns[i]!, K, i === 1 ? bias.v : undefined), await out.data(), { rtol: 1e-5, name: `M=${M} matrix ${i}` });
    }
  });
});

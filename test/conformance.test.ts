/**
 * The op conformance suite: written once, run on every backend, each result compared with a plain float64
 * reference computed here from the inputs' values (not with another backend's kernel).
 */
import { type Backend, type DType, DTYPES, Rng, type Tensor, add, assertClose, cast, copy, f32ToBf16Bits, f32ToF16Bits, mul, scale, sum, tensor } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';

const { backends } = await testBackends();

/** Random values that fit `dtype` exactly (integers for integer dtypes, small enough for i32 -> f32 to be exact). */
function values(dtype: DType, n: number, seed: number): number[] {
  const rng = new Rng(seed);
  const ranges: Partial<Record<DType, [number, number]>> = { i32: [-1000, 1000], u32: [0, 2000], i8: [-128, 127], u8: [0, 255] };
  const r = ranges[dtype];
  return Array.from({ length: n }, () => (r ? r[0] + rng.int(r[1] - r[0] + 1) : rng.normal() * 3));
}

async function input(dtype: DType, shape: number[], seed: number, backend: Backend): Promise<{ t: Tensor; v: number[] }> {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = tensor(values(dtype, n, seed), shape, { dtype, backend });
  return { t, v: Array.from(await t.data()) }; // the values as stored (f16/bf16 rounded)
}

/** Reference broadcasting: out[i] = f(a[ia], b[ib]). */
function broadcastRef(aShape: number[], bShape: number[], a: number[], b: number[], f: (x: number, y: number) => number) {
  const rank = Math.max(aShape.length, bShape.length);
  const pad = (s: number[]) => [...Array(rank - s.length).fill(1), ...s];
  const as = pad(aShape);
  const bs = pad(bShape);
  const os = as.map((d, i) => (d === 1 ? bs[i]! : d));
  const n = os.reduce((p, d) => p * d, 1);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let rem = i;
    let ia = 0;
    let ib = 0;
    let sa = 1;
    let sb = 1;
    for (let d = rank - 1; d >= 0; d--) {
      const c = rem % os[d]!;
      rem = Math.floor(rem / os[d]!);
      ia += (as[d] === 1 ? 0 : c) * sa;
      ib += (bs[d] === 1 ? 0 : c) * sb;
      sa *= as[d]!;
      sb *= bs[d]!;
    }
    out.push(f(a[ia]!, b[ib]!) + 0); // + 0 turns -0 into 0, as integer storage does
  }
  return { out, shape: os };
}

const SIZES = [1, 63, 257, 1000];
const BROADCASTS: [number[], number[]][] = [
  [[7, 5], [5]],
  [[4, 1, 3], [1, 6, 1]],
  [[1], [2, 3, 65]],
  [[2, 1, 3, 1, 2], [3, 4, 1]],
  [[0, 3], [3]],
];
const FLOAT_DTYPES: DType[] = ['f32', 'f16', 'bf16'];

describe.each(backends)('ops on $name', (backend) => {
  describe.each(['add', 'mul'] as const)('%s', (op) => {
    const fn = op === 'add' ? add : mul;
    const f = op === 'add' ? (x: number, y: number) => x + y : (x: number, y: number) => x * y;

    it.each(SIZES)('same shape, n = %i', async (n) => {
      const a = await input('f32', [n], 1, backend);
      const b = await input('f32', [n], 2, backend);
      const out = await fn(a.t, b.t);
      expect(out.backend).toBe(backend);
      expect(out.shape).toEqual([n]);
      assertClose(a.v.map((x, i) => f(x, b.v[i]!)), await out.data(), { rtol: 1e-6, name: `${op} ${n}` });
    });

    it.each(BROADCASTS)('broadcast %j with %j', async (sa, sb) => {
      const a = await input('f32', sa, 3, backend);
      const b = await input('f32', sb, 4, backend);
      const ref = broadcastRef(sa, sb, a.v, b.v, f);
      const out = await fn(a.t, b.t);
      expect(out.shape).toEqual(ref.shape);
      assertClose(ref.out, await out.data(), { rtol: 1e-6 });
      const swapped = await fn(b.t, a.t);
      assertClose(broadcastRef(sb, sa, b.v, a.v, f).out, await swapped.data(), { rtol: 1e-6 });
    });

    it.each(DTYPES.flatMap((da) => DTYPES.map((db) => [da, db] as const)))('inputs %s and %s', async (da, db) => {
      const a = await input(da, [3, 67], 5, backend);
      const b = await input(db, [67], 6, backend);
      const out = await fn(a.t, b.t);
      const integer = da === db && (da === 'i32' || da === 'u32');
      expect(out.dtype).toBe(integer ? da : 'f32');
      const ref = broadcastRef([3, 67], [67], a.v, b.v, f).out;
      if (integer) expect(Array.from(await out.data())).toEqual(ref);
      else assertClose(ref, await out.data(), { rtol: 1e-6 });
    });
  });

  it('integer add/mul wrap like 32-bit machine arithmetic', async () => {
    const a = tensor(new Int32Array([2 ** 31 - 1, -(2 ** 31), 65536]), [3], { backend });
    const b = tensor(new Int32Array([1, -1, 65536]), [3], { backend });
    expect(Array.from(await (await add(a, b)).data())).toEqual([-(2 ** 31), 2 ** 31 - 1, 131072]);
    expect(Array.from(await (await mul(a, b)).data())).toEqual([2 ** 31 - 1, -(2 ** 31), 0]);
  });

  it.each(FLOAT_DTYPES)('scale %s', async (dtype) => {
    const x = await input(dtype, [257], 7, backend);
    const out = await scale(x.t, -0.375, 1.5);
    expect(out.dtype).toBe('f32');
    assertClose(x.v.map((v) => v * -0.375 + 1.5), await out.data(), { rtol: 1e-6 });
  });

  it.each(DTYPES)('copy %s keeps raw bits', async (dtype) => {
    for (const n of [1, 3, 257]) {
      const x = await input(dtype, [n], 8, backend);
      const out = await copy(x.t);
      expect(out.dtype).toBe(dtype);
      expect(Array.from(await out.rawData())).toEqual(Array.from(await x.t.rawData()));
      x.t.dispose();
      expect(Array.from(await out.data())).toEqual(x.v); // the copy outlives its source
    }
  });

  const CASTS = DTYPES.flatMap((from) => (['f32', 'f16', 'bf16', 'i32', 'u32'] as DType[]).filter((to) => to !== from).map((to) => [from, to] as const));
  it.each(CASTS)('cast %s -> %s', async (from, to) => {
    for (const n of [1, 2, 63, 258]) {
      const x = await input(from, [n], 9, backend);
      const out = await cast(x.t, to);
      expect(out.dtype).toBe(to);
      const expected = x.v.map((v) => {
        if (to === 'f16') return f32ToF16Bits(v);
        if (to === 'bf16') return f32ToBf16Bits(v);
        if (to === 'i32') return Math.trunc(v) + 0;
        if (to === 'u32') return Math.max(0, Math.trunc(v));
        return Math.fround(v);
      });
      expect(Array.from(await out.rawData())).toEqual(expected);
    }
  });

  it('cast rounds f32 to f16 and bf16 to nearest even at the edge cases', async () => {
    const xs = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 65519.99, 2 ** -25, 3 * 2 ** -25, 2 ** -24, -0, Infinity, -Infinity, 1e10, 1 + 2 ** -8, 1 + 3 * 2 ** -8];
    const x = tensor(xs, [xs.length], { backend });
    expect(Array.from(await (await cast(x, 'f16')).rawData())).toEqual(xs.map(f32ToF16Bits));
    expect(Array.from(await (await cast(x, 'bf16')).rawData())).toEqual(xs.map(f32ToBf16Bits));
    const nan = await (await cast(tensor([NaN], [1], { backend }), 'f16')).data();
    expect(nan[0]).toBeNaN();
  });

  it('cast from f32 saturates to the integer range', async () => {
    const x = tensor([1e10, -1e10, -2.7, 2.7], [4], { backend });
    expect(Array.from(await (await cast(x, 'i32')).data())).toEqual([2 ** 31 - 128, -(2 ** 31), -2, 2]);
    expect(Array.from(await (await cast(x, 'u32')).data())).toEqual([2 ** 32 - 256, 0, 0, 2]);
  });

  describe('sum', () => {
    const CASES: [number[], number | undefined][] = [
      [[1], undefined],
      [[257], undefined],
      [[100_003], undefined], // one output, many workgroups and a second pass
      [[5, 7], 1],
      [[5, 7], 0],
      [[3, 4097, 2], 1], // strided axis, split into parts
      [[6000, 3], 1], // many short rows: one invocation per output
      [[2, 3, 5, 7], -2],
      [[300, 300], 1], // 300 outputs of 300: one workgroup per output
    ];
    it.each(CASES)('%j over axis %s', async (shape, axis) => {
      const x = await input('f32', shape, 10, backend);
      const ax = axis === undefined ? undefined : axis < 0 ? axis + shape.length : axis;
      const outer = ax === undefined ? 1 : shape.slice(0, ax).reduce((a, b) => a * b, 1);
      const n = ax === undefined ? x.v.length : shape[ax]!;
      const inner = ax === undefined ? 1 : shape.slice(ax + 1).reduce((a, b) => a * b, 1);
      const ref: number[] = [];
      for (let o = 0; o < outer; o++) for (let c = 0; c < inner; c++) {
        let acc = 0;
        for (let j = 0; j < n; j++) acc += x.v[(o * n + j) * inner + c]!;
        ref.push(acc);
      }
      const out = await sum(x.t, axis === undefined ? {} : { axis });
      expect(out.shape).toEqual(ax === undefined ? [] : shape.filter((_, i) => i !== ax));
      assertClose(ref, await out.data(), { rtol: 1e-5 });
    });

    it.each(['f16', 'bf16', 'i8', 'u8', 'i32'] as DType[])('of %s input, keepDims', async (dtype) => {
      const x = await input(dtype, [4, 129], 11, backend);
      const out = await sum(x.t, { axis: 1, keepDims: true });
      expect(out.shape).toEqual([4, 1]);
      const ref = [0, 1, 2, 3].map((r) => x.v.slice(r * 129, (r + 1) * 129).reduce((a, b) => a + b, 0));
      assertClose(ref, await out.data(), { rtol: 1e-6 });
    });

    it('refuses an axis out of range', async () => {
      await expect(sum(tensor([1, 2], [2], { backend }), { axis: 1 })).rejects.toThrow(/axis 1 is out of range for rank 1/);
    });
  });
});

import { describe, expect, it } from 'vitest';
import { DTypeError, InputError, Rng, Scratch, ShapeError, Tensor, cpu, full, rand, randn, tensor, zeros } from '../src/index.js';

describe('tensor()', () => {
  it('holds shape, dtype, backend and data', async () => {
    const t = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    expect(t).toBeInstanceOf(Tensor);
    expect(t.shape).toEqual([2, 3]);
    expect(t.dtype).toBe('f32');
    expect(t.backend).toBe(cpu);
    expect(t.backend.name).toBe('cpu');
    expect(Array.from(await t.data())).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await t.array()).toEqual([
      [1, 2, 3],
      [4, 5, 6],
    ]);
  });

  it('infers integer dtypes from typed arrays', () => {
    expect(tensor(new Int32Array(2), [2]).dtype).toBe('i32');
    expect(tensor(new Uint32Array(2), [2]).dtype).toBe('u32');
    expect(tensor(new Int8Array(2), [2]).dtype).toBe('i8');
    expect(tensor(new Uint8Array(2), [2]).dtype).toBe('u8');
  });

  it('rounds numbers to f16/bf16 and returns them widened to f32', async () => {
    const h = tensor([0.1, 65520], [2], { dtype: 'f16' });
    expect(Array.from(await h.data())).toEqual([0.0999755859375, Infinity]);
    expect(Array.from(await h.rawData())).toEqual([0x2e66, 0x7c00]);
    const b = tensor(new Uint16Array([0x3f80, 0xc000]), [2], { dtype: 'bf16' });
    expect(await b.data()).toBeInstanceOf(Float32Array);
    expect(Array.from(await b.data())).toEqual([1, -2]);
  });

  it('copies its input: later changes to the source array do not leak in', async () => {
    const src = new Float32Array([1, 2]);
    const t = tensor(src, [2]);
    src[0] = 99;
    expect((await t.data())[0]).toBe(1);
    (await t.data())[1] = 42;
    expect((await t.data())[1]).toBe(2);
  });

  it('names the tensor in shape and dtype errors', () => {
    expect(() => tensor([1, 2, 3], [2, 2], { name: 'w' })).toThrow(ShapeError);
    expect(() => tensor([1, 2, 3], [2, 2], { name: 'w' })).toThrow(/w: shape \[2, 2\] needs 4 elements, data has 3/);
    expect(() => tensor([1], [-1])).toThrow(ShapeError);
    expect(() => tensor([1], [1], { dtype: 'f64' as never, name: 'x' })).toThrow(/x: dtype: unknown dtype "f64"/);
    expect(() => tensor([0.5], [1], { dtype: 'i32' })).toThrow(DTypeError);
  });

  it('zeros, full, and scalars of shape []', async () => {
    expect(Array.from(await zeros([2, 2], { dtype: 'bf16' }).data())).toEqual([0, 0, 0, 0]);
    expect(Array.from(await full([3], 2.5).data())).toEqual([2.5, 2.5, 2.5]);
    const s = tensor([7], []);
    expect(s.size).toBe(1);
    expect(await s.array()).toBe(7);
  });
});

describe('random tensors', () => {
  it('randn is reproducible per seed and differs across seeds', async () => {
    const a = await randn([1000], { seed: 7 }).data();
    const b = await randn([1000], { seed: 7 }).data();
    const c = await randn([1000], { seed: 8 }).data();
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
  });

  it('randn has mean ~0 and std ~1; rand is uniform in [low, high)', async () => {
    const x = Array.from(await randn([100_000], { seed: 1 }).data());
    const mean = x.reduce((s, v) => s + v, 0) / x.length;
    const std = Math.sqrt(x.reduce((s, v) => s + (v - mean) ** 2, 0) / x.length);
    expect(Math.abs(mean)).toBeLessThan(0.02);
    expect(Math.abs(std - 1)).toBeLessThan(0.02);
    const u = Array.from(await rand([10_000], { seed: 2, low: -3, high: 5 }).data());
    expect(Math.min(...u)).toBeGreaterThanOrEqual(-3);
    expect(Math.max(...u)).toBeLessThan(5);
    expect(Math.abs(u.reduce((s, v) => s + v, 0) / u.length - 1)).toBeLessThan(0.1);
  });

  it('Rng streams are fixed across platforms (pinned first values)', () => {
    const r = new Rng(42);
    const first = [r.nextU32(), r.nextU32(), r.nextU32()];
    const again = new Rng(42);
    expect([again.nextU32(), again.nextU32(), again.nextU32()]).toEqual(first);
    expect(new Set(first).size).toBe(3);
    const n = new Rng(3);
    for (let i = 0; i < 1000; i++) expect(n.int(10)).toBeLessThan(10);
  });
});

describe('views, moves and disposal', () => {
  it('reshape shares storage and resolves -1', async () => {
    const t = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    const v = t.reshape([3, -1]);
    expect(v.shape).toEqual([3, 2]);
    t.dispose();
    expect(Array.from(await v.data())).toEqual([1, 2, 3, 4, 5, 6]); // the view keeps the storage alive
    expect(() => v.reshape([4, 2])).toThrow(ShapeError);
  });

  it('a disposed tensor refuses use with an error naming it; dispose is idempotent', async () => {
    const t = tensor([1], [1], { name: 'h0' });
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    await expect(t.data()).rejects.toThrow(InputError);
    await expect(t.data()).rejects.toThrow(/h0 \[1\] was disposed/);
  });

  it('shapes are frozen; a frozen shape is shared, any other copied', () => {
    const dims = [2, 3];
    const t = tensor([1, 2, 3, 4, 5, 6], dims);
    dims[0] = 3; // the caller's array is not the tensor's
    expect(t.shape).toEqual([2, 3]);
    expect(Object.isFrozen(t.shape)).toBe(true);
    const same = new Tensor(cpu, t.storage, t.shape, 'f32');
    expect(same.shape).toBe(t.shape); // nobody can change it, so no copy is needed
    expect(Object.isFrozen(t.reshape([3, 2]).shape)).toBe(true);
    expect(() => new Tensor(cpu, t.storage, Object.freeze([2, 1.5]), 'f32')).toThrow(ShapeError);
  });

  it('reshape refuses two -1s and counts that differ', () => {
    const t = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    expect(t.reshape([-1]).shape).toEqual([6]);
    expect(tensor([], [0, 3]).reshape([0, -1]).shape).toEqual([0, 0]);
    expect(() => t.reshape([-1, -1])).toThrow(/at most one -1/);
    expect(() => t.reshape([4, -1])).toThrow(/element counts differ/);
    expect(() => t.reshape([-2, -3])).toThrow(/element counts differ/);
  });

  it('Scratch keeps tensors and resolved tensors for disposal, and passes a rejection on', async () => {
    const s = new Scratch();
    const a = await s.keep(tensor([1], [1]));
    const b = await s.keep(Promise.resolve(tensor([2], [1])));
    await expect(s.keep(Promise.reject(new InputError('no tensor')))).rejects.toThrow('no tensor');
    expect(a.disposed || b.disposed).toBe(false);
    s.dispose();
    expect(a.disposed && b.disposed).toBe(true);
  });

  it('to(cpu) from cpu gives an independent view', async () => {
    const t = tensor([1, 2], [2]);
    const u = await t.to(cpu);
    t.dispose();
    expect(Array.from(await u.data())).toEqual([1, 2]);
  });
});

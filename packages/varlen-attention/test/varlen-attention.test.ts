import { type Backend, type DType, DTypeError, InputError, Rng, ShapeError, type Tensor, assertClose, cpu, empty, getKernels, tensor } from '@phalanx/core';
import type { Program } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it, vi } from 'vitest';
import { type ScoreOptions, type VarlenAttentionAttrs, appendKv, attendStep, createKvCache, keyBounds, varlenAttention } from '../src/index.js';
import { BLOCK_Q, type PrefillTile, prefillProgram, rowPrefillProgram, subgroupPrefillProgram, subgroupPrefillUsable } from '../src/webgpu/prefill.js';

const { backends, gpu } = await testBackends();

/** Seeded normal values, rounded to `dtype` as the tensor holds them. */
async function rand(shape: number[], seed: number, backend: Backend, dtype: DType = 'f32'): Promise<{ t: Tensor; v: number[] }> {
  const rng = new Rng(seed);
  const t = tensor(Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()), shape, { dtype, backend });
  return { t, v: Array.from(await t.data()) };
}

interface Naive {
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  cu: number[];
  causal?: boolean;
  window?: number;
  scale?: number;
  softcap?: number;
  gain?: number[];
  state?: { k: number[]; v: number[] };
}

/** float64 attention with the mask written out: same document, j <= i when causal, |i - j| <= window. */
function naive(q: number[], k: number[], v: number[], p: Naive): number[] {
  const { T, Hq, Hkv, D, cu, causal = true, window = Infinity, softcap = 0 } = p;
  const scale = p.scale ?? 1 / Math.sqrt(D);
  const doc = (i: number) => cu.findLastIndex((c) => c <= i);
  const out: number[] = [];
  for (let i = 0; i < T; i++) {
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / (Hq / Hkv));
      const rows: [number[], number[], number][] = [];
      if (p.state) rows.push([p.state.k, p.state.v, (i * Hkv + g) * D]);
      for (let j = 0; j < T; j++) {
        if (doc(j) === doc(i) && (!causal || j <= i) && Math.abs(i - j) <= window) rows.push([k, v, (j * Hkv + g) * D]);
      }
      const logits = rows.map(([kk, , at]) => {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[(i * Hq + h) * D + d]! * kk[at + d]!;
        s *= scale * (p.gain?.[h] ?? 1);
        return softcap > 0 ? softcap * Math.tanh(s / softcap) : s;
      });
      const mx = Math.max(...logits);
      const e = logits.map((x) => Math.exp(x - mx));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) out.push(rows.reduce((acc, [, vv, at], j) => acc + e[j]! * vv[at + d]!, 0) / sum);
    }
  }
  return out;
}

const offsets = (lengths: number[]) => lengths.reduce((cu, n) => [...cu, cu[cu.length - 1]! + n], [0]);

const kind = (x: number) => (Number.isNaN(x) ? 'NaN' : x === Infinity ? '+Infinity' : x === -Infinity ? '-Infinity' : 'finite');

/**
 * `out` is NaN, +Infinity or -Infinity exactly where `ref` is (reported as [row, head, dim] of an output of
 * `heads` heads of `D` dims), and close to it elsewhere.
 */
function assertSameNonFinite(ref: number[], out: ArrayLike<number>, heads: number, D: number, name: string) {
  const at = ref.findIndex((r, i) => kind(r) !== kind(out[i]!));
  if (at >= 0) {
    const where = [Math.floor(at / (heads * D)), Math.floor(at / D) % heads, at % D];
    throw new Error(`${name}: output [${where.join(', ')}] is ${out[at]}, expected ${ref[at]}`);
  }
  const finite = ref.flatMap((r, i) => (Number.isFinite(r) ? [i] : []));
  assertClose(
    finite.map((i) => ref[i]!),
    finite.map((i) => out[i]!),
    { rtol: 2e-6, name },
  );
}

/** One non-finite element written into an input: row `row`, head `head`, dim `dim` of k, v or the state k or v. */
interface Poison {
  input: 'k' | 'v' | 'ks' | 'vs';
  row: number;
  head: number;
  dim: number;
  value: number;
}

/** A copy of x ([rows, heads, D] values) with the poisoned element, when `poison` is aimed at `input`. */
const poisoned = (x: number[], input: Poison['input'], heads: number, D: number, poison?: Poison) => {
  if (poison?.input !== input) return x;
  const y = [...x];
  y[(poison.row * heads + poison.head) * D + poison.dim] = poison.value;
  return y;
};

/**
 * Which outputs [T, Hq, D] the poisoned element must reach, from `keyBounds` (independently of the float64
 * reference's own mask): the queries that attend to it (a state row: only its own query), on the query heads
 * of its kv head; all dims for a key, only its own dim for a value.
 */
function reached(a: VarlenAttentionAttrs, p: Poison): boolean[] {
  const { T, Hq, Hkv, D } = a;
  const bounds = keyBounds(a);
  const out: boolean[] = [];
  for (let i = 0; i < T; i++) {
    const sees = p.input === 'k' || p.input === 'v' ? bounds[2 * i]! <= p.row && p.row <= bounds[2 * i + 1]! : i === p.row;
    for (let h = 0; h < Hq; h++) {
      for (let d = 0; d < D; d++) out.push(sees && Math.floor(h / (Hq / Hkv)) === p.head && (p.input === 'k' || p.input === 'ks' || d === p.dim));
    }
  }
  return out;
}

describe.each(backends)('varlenAttention on $name', (backend) => {
  async function check(lengths: number[], Hq: number, Hkv: number, D: number, options: Omit<Naive, 'T' | 'Hq' | 'Hkv' | 'D' | 'cu' | 'state'> & { stateKv?: boolean; dtype?: DType } = {}) {
    const cu = offsets(lengths);
    const T = cu[cu.length - 1]!;
    const q = await rand([T, Hq, D], 1, backend, options.dtype);
    const k = await rand([T, Hkv, D], 2, backend, options.dtype);
    const v = await rand([T, Hkv, D], 3, backend, options.dtype);
    const ks = options.stateKv ? await rand([T, Hkv, D], 4, backend) : undefined;
    const vs = options.stateKv ? await rand([T, Hkv, D], 5, backend) : undefined;
    const y = await varlenAttention(
      { q: q.t, k: k.t, v: v.t },
      { cuSeqlens: cu, causal: options.causal, window: options.window, scale: options.scale, softcap: options.softcap, qGain: options.gain, stateKv: ks && vs && { k: ks.t, v: vs.t } },
    );
    expect(y.shape).toEqual([T, Hq, D]);
    const ref = naive(q.v, k.v, v.v, { T, Hq, Hkv, D, cu, ...options, state: ks && vs && { k: ks.v, v: vs.v } });
    assertClose(ref, await y.data(), { rtol: 2e-6, name: `lengths ${lengths} ${JSON.stringify(options)}` });
  }

  it('packed documents of uneven length (1, 2, 63, 64, 65, 300)', () => check([1, 2, 63, 64, 65, 300], 2, 1, 16));

  it.each([0, 1, 15, 16, 512])('sliding window %i (inclusive: window + 1 keys)', (window) => check([70, 1, 129], 2, 2, 8, { window }));

  it.each([1, 2, 4])('GQA ratio %i', (ratio) => check([33, 66], 2 * ratio, 2, 16));

  it('softcap, scale and qGain (numbers)', () => check([40, 90], 4, 2, 16, { softcap: 1.5, scale: 0.7, gain: [2.3, 0.5, 1, 2.9] }));

  it('state tokens (stateKv): one extra key per query', () => check([1, 50, 77], 4, 2, 8, { stateKv: true, window: 9 }));

  it('non-causal, with and without a window', async () => {
    await check([20, 45], 2, 1, 8, { causal: false });
    await check([20, 45], 2, 1, 8, { causal: false, window: 3 });
  });

  it.each([
    [6, 'f32'],
    [32, 'bf16'],
    [64, 'f16'],
  ] as const)('head dim %i, %s inputs', (D, dtype) => check([5, 70], 2, 1, D, { dtype }));

  // The tiled kernel takes 64 queries and 32 keys at a time; these cross its block and tile edges.
  it('documents shorter than a tile, and a token count not a multiple of the query block', () => check([5, 31, 32, 33, 7, 100], 2, 1, 32));

  it('window edges inside key tiles and on their boundaries, with whole tiles between them', async () => {
    for (const window of [30, 31, 94, 100]) await check([300], 2, 1, 64, { window });
    await check([150, 90], 4, 2, 64, { causal: false, window: 40 });
  });

  it('a long document with GQA, softcap, qGain and state tokens', () => check([260], 4, 2, 64, { softcap: 3, gain: [1.2, 0.4, 2, 1], stateKv: true }));

  it('head dims above 64 (the one-query-per-thread kernel)', () => check([70, 3], 2, 1, 72, { window: 20 }));

  interface PoisonCase {
    name: string;
    lengths: number[];
    Hq: number;
    Hkv: number;
    D: number;
    poison: Poison;
    causal?: boolean;
    window?: number;
    softcap?: number;
  }

  /**
   * One non-finite element in a key, value or state row: the output is non-finite exactly where the float64
   * reference's is (the queries that attend to it), and unchanged elsewhere: a masked key's 0 * NaN must not
   * leak into other queries or documents, and an attended NaN key must not be dropped.
   */
  async function checkPoisoned(c: PoisonCase) {
    const { lengths, Hq, Hkv, D, poison, causal = true, window = Infinity, softcap = 0 } = c;
    const cu = offsets(lengths);
    const T = cu[cu.length - 1]!;
    const q = await rand([T, Hq, D], 1, backend);
    const [k, v, ks, vs] = await Promise.all(
      (['k', 'v', 'ks', 'vs'] as const).map(async (input, i) => {
        const x = poisoned((await rand([T, Hkv, D], 2 + i, backend)).v, input, Hkv, D, poison);
        return { t: tensor(x, [T, Hkv, D], { backend }), v: x };
      }),
    );
    const stateKv = poison.input === 'ks' || poison.input === 'vs';
    const y = await varlenAttention({ q: q.t, k: k!.t, v: v!.t }, { cuSeqlens: cu, causal, window: c.window, softcap, stateKv: stateKv ? { k: ks!.t, v: vs!.t } : undefined });
    const ref = naive(q.v, k!.v, v!.v, { T, Hq, Hkv, D, cu, causal, window, softcap, state: stateKv ? { k: ks!.v, v: vs!.v } : undefined });
    assertSameNonFinite(ref, await y.data(), Hq, D, c.name);
    // a non-finite value, or a NaN key, reaches every query that attends to it (an infinite key's logit may be
    // -Infinity, a weight of 0); the reference agrees with keyBounds on which those are
    if (poison.input.startsWith('v') || Number.isNaN(poison.value)) {
      const want = reached({ T, Hq, Hkv, D, scale: 1, softcap, hasGain: false, hasState: stateKv, cuSeqlens: cu, causal, window }, poison);
      expect(ref.findIndex((r, i) => Number.isFinite(r) === want[i])).toBe(-1);
      expect(want.some((w) => w)).toBe(true);
    }
  }

  // documents of 40 and 50 tokens share the first query block and key tiles; the poisoned token 45 is in the second
  const packed = { lengths: [40, 50, 3, 200], Hq: 4, Hkv: 2, D: 16 };
  const at45 = (input: Poison['input'], value = NaN): Poison => ({ input, row: 45, head: 1, dim: 5, value });
  it.each<PoisonCase>([
    { name: 'NaN value, causal', ...packed, poison: at45('v') },
    { name: 'NaN value, causal, window 8', ...packed, poison: at45('v'), window: 8 },
    { name: 'NaN value, non-causal, window 20', ...packed, poison: at45('v'), causal: false, window: 20 },
    { name: 'NaN key, causal', ...packed, poison: at45('k') },
    { name: 'NaN key, causal, window 8', ...packed, poison: at45('k'), window: 8 },
    { name: 'NaN key, non-causal, window 20', ...packed, poison: at45('k'), causal: false, window: 20 },
    { name: 'NaN key, softcap', ...packed, poison: at45('k'), softcap: 2 },
    { name: '+Infinity value, window 30', ...packed, poison: at45('v', Infinity), window: 30 },
    { name: '-Infinity value', ...packed, poison: at45('v', -Infinity) },
    { name: 'infinite key (+Infinity or -Infinity logits)', ...packed, poison: at45('k', Infinity), window: 30 },
    { name: 'NaN state key', ...packed, poison: at45('ks'), window: 8 },
    { name: 'NaN state value', ...packed, poison: at45('vs') },
    // whole tiles (every query of the block sees every key) after the diagonal ones, GQA 4:1
    { name: 'NaN value in a long document, head dim 64', lengths: [10, 300], Hq: 8, Hkv: 2, D: 64, poison: { input: 'v', row: 20, head: 0, dim: 63, value: NaN } },
    { name: 'NaN key in a long document, head dim 64', lengths: [10, 300], Hq: 8, Hkv: 2, D: 64, poison: { input: 'k', row: 20, head: 1, dim: 0, value: NaN }, window: 100 },
    // the one-query-per-thread kernel
    { name: 'NaN value, head dim 72', lengths: [70, 3, 40], Hq: 2, Hkv: 1, D: 72, poison: { input: 'v', row: 75, head: 0, dim: 71, value: NaN }, window: 20 },
    { name: 'NaN key, head dim 72', lengths: [70, 3, 40], Hq: 2, Hkv: 1, D: 72, poison: { input: 'k', row: 75, head: 0, dim: 3, value: NaN } },
  ])('$name reaches exactly the queries that attend to it', (c) => checkPoisoned(c));

  it('empty documents (cuSeqlens padded with the total) and a qGain tensor', async () => {
    const cu = [0, 0, 3, 3, 10, 10, 10];
    const q = await rand([10, 2, 8], 6, backend);
    const k = await rand([10, 1, 8], 7, backend);
    const gain = tensor([1.5, -0.5], [2], { backend });
    const y = await varlenAttention({ q: q.t, k: k.t, v: k.t }, { cuSeqlens: cu, qGain: gain });
    assertClose(naive(q.v, k.v, k.v, { T: 10, Hq: 2, Hkv: 1, D: 8, cu, gain: [1.5, -0.5] }), await y.data(), { rtol: 2e-6 });
  });

  it('refuses bad shapes, dtypes and cuSeqlens with typed errors', async () => {
    const q = tensor(new Float32Array(4 * 4 * 8), [4, 4, 8], { backend, name: 'q' });
    const k = tensor(new Float32Array(4 * 2 * 8), [4, 2, 8], { backend, name: 'k' });
    const k3 = tensor(new Float32Array(4 * 3 * 8), [4, 3, 8], { backend });
    const cuSeqlens = [0, 4];
    await expect(varlenAttention({ q, k: q.reshape([4, 4, 2, 4]), v: k }, { cuSeqlens })).rejects.toThrow(ShapeError);
    await expect(varlenAttention({ q, k, v: q }, { cuSeqlens })).rejects.toThrow(/v \(q\) is \[4, 4, 8\]; expected \[4, 2, 8\]/);
    await expect(varlenAttention({ q, k: k3, v: k3 }, { cuSeqlens })).rejects.toThrow(/not a multiple of 3 kv heads/);
    await expect(varlenAttention({ q, k: tensor(new Int32Array(64), [4, 2, 8], { backend }), v: k }, { cuSeqlens })).rejects.toThrow(DTypeError);
    for (const bad of [[0, 3], [1, 4], [0, 3, 2, 4], [0, 1.5, 4], [4]]) {
      await expect(varlenAttention({ q, k, v: k }, { cuSeqlens: bad })).rejects.toThrow(InputError);
    }
    await expect(varlenAttention({ q, k, v: k }, { cuSeqlens, window: -1 })).rejects.toThrow(/window must be a non-negative integer/);
    await expect(varlenAttention({ q, k, v: k }, { cuSeqlens, qGain: [1, 2] })).rejects.toThrow(/qGain has 2 values/);
    await expect(varlenAttention({ q, k, v: k }, { cuSeqlens, softcap: -1 })).rejects.toThrow(InputError);
    await expect(varlenAttention({ q, k, v: k }, { cuSeqlens, stateKv: { k, v: q } })).rejects.toThrow(ShapeError);
  });
});

describe.skipIf(!gpu)('WebGPU prefill kernels', () => {
  it('the tiled kernel takes head dims up to 64; larger ones go to the one-query-per-thread kernel', () => {
    const [, tiled, row] = getKernels('varlenAttention', 'webgpu');
    const attrs = (D: number): VarlenAttentionAttrs => ({ T: 8, Hq: 2, Hkv: 1, D, scale: 1, softcap: 0, hasGain: false, hasState: false, cuSeqlens: [0, 8], causal: true, window: Infinity });
    expect(tiled!.verify!([], attrs(64), gpu)).toBe(true);
    expect(tiled!.verify!([], attrs(6), gpu)).toBe(true);
    expect(tiled!.verify!([], attrs(72), gpu)).toBe('head dim 72 > 64');
    expect(row!.verify!([], attrs(72), gpu)).toBe(true);
    // a device with WebGPU's minimum of 16 KiB workgroup memory gets the row kernel
    const small = { limits: { ...gpu!.limits, maxComputeWorkgroupStorageSize: 16384 } } as unknown as typeof gpu;
    expect(tiled!.verify!([], attrs(64), small)).toBe('needs 32768 bytes of workgroup memory; the device has 16384');
    expect(row!.verify!([], attrs(64), small)).toBe(true);
  });

  it('the 8-row thread tile (64 threads) matches the float64 reference', async () => {
    const [Hq, Hkv, D, window] = [4, 2, 64, 94];
    const cu = offsets([5, 120, 175]);
    const T = cu[cu.length - 1]!;
    const [q, k, v] = await Promise.all([Hq, Hkv, Hkv].map((H, i) => rand([T, H, D], 20 + i, gpu!)));
    const attrs: VarlenAttentionAttrs = { T, Hq, Hkv, D, scale: 0.2, softcap: 2, hasGain: false, hasState: false, cuSeqlens: cu, causal: true, window };
    const bounds = tensor(keyBounds(attrs), [2 * T], { dtype: 'u32', backend: gpu });
    const out = empty([T, Hq, D], { backend: gpu });
    const uniforms = { T, Hq, Hkv, scale: attrs.scale, softcap: attrs.softcap };
    await gpu!.run(prefillProgram(attrs, [q!.t, k!.t, v!.t], { rows: 8 }), [q!.t, k!.t, v!.t, bounds], [out], uniforms, [Math.ceil(T / BLOCK_Q), Hq, 1]);
    assertClose(naive(q!.v, k!.v, v!.v, { T, Hq, Hkv, D, cu, window, scale: 0.2, softcap: 2 }), await out.data(), { rtol: 2e-6 });
  });
});

describe.skipIf(!gpu)('WebGPU prefill: subgroup-max and split variants of the tiled kernel', () => {
  const sgOk = gpu ? subgroupPrefillUsable(gpu) === true : false;
  const attrs = (D: number): VarlenAttentionAttrs => ({ T: 8, Hq: 2, Hkv: 1, D, scale: 1, softcap: 0, hasGain: false, hasState: false, cuSeqlens: [0, 8], causal: true, window: Infinity });

  it('is registered first, and declines without subgroups or a known subgroup size of at least 8', () => {
    const [sg, tiled] = getKernels('varlenAttention', 'webgpu');
    expect(sg!.priority).toBe(2);
    expect(tiled!.priority).toBe(1);
    const fake = (features: string[], adapterInfo?: object) => ({ ...gpu!, limits: gpu!.limits, features: new Set(features), device: { adapterInfo } }) as unknown as typeof gpu;
    expect(sg!.verify!([], attrs(64), fake([]))).toBe("no 'subgroups' feature");
    expect(sg!.verify!([], attrs(64), fake(['subgroups']))).toBe('subgroup size unknown');
    expect(sg!.verify!([], attrs(64), fake(['subgroups'], {}))).toBe('subgroup size unknown');
    expect(sg!.verify!([], attrs(64), fake(['subgroups'], { subgroupMinSize: 4, subgroupMaxSize: 64 }))).toBe('subgroups of 4 < 8 invocations');
    expect(sg!.verify!([], attrs(64), fake(['subgroups'], { subgroupMinSize: 8, subgroupMaxSize: 8 }))).toBe(true);
    expect(sg!.verify!([], attrs(64), fake(['subgroups'], { subgroupMinSize: 32, subgroupMaxSize: 32 }))).toBe(true);
    // the tiled kernel's own limits still apply
    expect(sg!.verify!([], attrs(72), fake(['subgroups'], { subgroupMinSize: 32 }))).toBe('head dim 72 > 64');
    // the fallback takes what the variant declines
    expect(tiled!.verify!([], attrs(64), fake([]))).toBe(true);
  });

  it.runIf(sgOk)('routing picks it on this adapter for head dims up to 64 (the tiled kernel otherwise)', async () => {
    const spy = vi.spyOn(gpu!, 'run');
    try {
      const cu = [0, 40, 100];
      const q = await rand([100, 2, 16], 30, gpu!);
      const y = await varlenAttention({ q: q.t, k: q.t, v: q.t }, { cuSeqlens: cu });
      expect(spy.mock.calls.some(([p]) => p.code.includes('subgroupShuffleXor') && p.code.startsWith('enable subgroups;'))).toBe(true);
      assertClose(naive(q.v, q.v, q.v, { T: 100, Hq: 2, Hkv: 2, D: 16, cu }), await y.data(), { rtol: 2e-6 });
    } finally {
      spy.mockRestore();
    }
  });

  interface Case {
    lengths: number[];
    Hq: number;
    Hkv: number;
    D: number;
    causal?: boolean;
    window?: number;
    scale?: number;
    softcap?: number;
    gain?: number[];
    stateKv?: boolean;
    dtype?: DType;
    tile?: PrefillTile;
  }

  /** Runs `build` (subgroupPrefillProgram unless given) directly, no routing, and compares with the float64 reference. */
  async function checkVariant(c: Case, build = subgroupPrefillProgram) {
    const { lengths, Hq, Hkv, D, causal = true, window = Infinity, softcap = 0, gain, stateKv = false, dtype } = c;
    const cu = offsets(lengths);
    const T = cu[cu.length - 1]!;
    const scale = c.scale ?? 1 / Math.sqrt(D);
    const [q, k, v] = await Promise.all([Hq, Hkv, Hkv].map((H, i) => rand([T, H, D], 40 + i, gpu!, dtype)));
    const state = stateKv ? await Promise.all([4, 5].map((seed) => rand([T, Hkv, D], 50 + seed, gpu!))) : undefined;
    const extra = [...(gain ? [tensor(gain, [Hq], { backend: gpu })] : []), ...(state ? state.map((s) => s.t) : [])];
    const a: VarlenAttentionAttrs = { T, Hq, Hkv, D, scale, softcap, hasGain: !!gain, hasState: stateKv, cuSeqlens: cu, causal, window };
    const inputs = [q!.t, k!.t, v!.t, ...extra];
    const bounds = tensor(keyBounds(a), [2 * T], { dtype: 'u32', backend: gpu });
    const out = empty([T, Hq, D], { backend: gpu });
    const program = build(a, inputs, c.tile);
    expect(program.code.startsWith('enable subgroups;')).toBe(build === subgroupPrefillProgram);
    await gpu!.run(program, [...inputs, bounds], [out], { T, Hq, Hkv, scale, softcap }, [Math.ceil(T / BLOCK_Q), Hq, 1]);
    const ref = naive(q!.v, k!.v, v!.v, { T, Hq, Hkv, D, cu, causal, window, scale, softcap, gain, state: state && { k: state[0]!.v, v: state[1]!.v } });
    assertClose(ref, await out.data(), { rtol: 2e-6, name: JSON.stringify({ ...c, gain: !!gain }) });
    return program;
  }

  it.runIf(sgOk).each([{ rows: 4 }, { rows: 8 }] as PrefillTile[])('rows $rows: packed documents, windows on and off tile edges, GQA, softcap', async (tile) => {
    await checkVariant({ lengths: [1, 2, 63, 64, 65, 300], Hq: 2, Hkv: 1, D: 16, tile });
    await checkVariant({ lengths: [5, 31, 32, 33, 7, 100], Hq: 4, Hkv: 2, D: 32, window: 31, softcap: 2, scale: 0.2, tile });
    for (const window of [0, 30, 94]) await checkVariant({ lengths: [300], Hq: 2, Hkv: 1, D: 64, window, tile });
  });

  it.runIf(sgOk)('non-causal with and without a window, qGain, state tokens, odd head dims', async () => {
    await checkVariant({ lengths: [20, 45, 130], Hq: 2, Hkv: 1, D: 8, causal: false });
    await checkVariant({ lengths: [150, 90], Hq: 4, Hkv: 2, D: 64, causal: false, window: 40 });
    await checkVariant({ lengths: [260], Hq: 4, Hkv: 2, D: 64, softcap: 3, gain: [1.2, 0.4, 2, 1], stateKv: true });
    await checkVariant({ lengths: [1, 50, 77], Hq: 4, Hkv: 2, D: 6, stateKv: true, window: 9, tile: { rows: 8 } });
  });

  it.runIf(sgOk).each([
    [6, 'f32'],
    [32, 'bf16'],
    [64, 'f16'],
  ] as const)('head dim %i, %s inputs', async (D, dtype) => {
    await checkVariant({ lengths: [5, 70, 66], Hq: 2, Hkv: 1, D, dtype });
  });

  // head dims up to 32 fit the split layout in lavapipe's 32 KiB (64 needs 42.5 KiB)
  const builds = [['tiled', prefillProgram] as const, ...(sgOk ? [['subgroup-max', subgroupPrefillProgram] as const] : [])];
  it.each(builds.flatMap(([name, build]) => ([4, 8] as const).map((rows) => [name, rows, build] as const)))(
    'split layout (%s, rows %i): packed documents, windows, GQA, softcap, qGain, state tokens, non-causal',
    async (_name, rows, build) => {
      const tile: PrefillTile = { rows, split: true };
      expect((await checkVariant({ lengths: [1, 2, 63, 64, 65, 300], Hq: 2, Hkv: 1, D: 16, tile }, build)).code).toContain('var<workgroup> Vs');
      await checkVariant({ lengths: [5, 31, 32, 33, 7, 100], Hq: 4, Hkv: 2, D: 32, window: 31, softcap: 2, scale: 0.2, tile }, build);
      await checkVariant({ lengths: [200], Hq: 2, Hkv: 1, D: 32, window: 0, tile }, build);
      await checkVariant({ lengths: [20, 45, 130], Hq: 2, Hkv: 1, D: 8, causal: false, window: 40, tile }, build);
      await checkVariant({ lengths: [1, 50, 77], Hq: 4, Hkv: 2, D: 6, gain: [1.2, 0.4, 2, 1], stateKv: true, window: 9, dtype: 'bf16', tile }, build);
    },
  );
});

describe.skipIf(!gpu)('WebGPU prefill programs: NaN and infinities in keys and values', () => {
  const sgOk = gpu ? subgroupPrefillUsable(gpu) === true : false;
  type Build = (a: VarlenAttentionAttrs, inputs: Tensor[]) => Program;
  // [name, program, head dim]: the split layout at 32 (what fits lavapipe's 32 KiB), the others at 64
  const programs: [string, Build, number][] = [
    ['tiled, rows 4', (a, inputs) => prefillProgram(a, inputs, { rows: 4 }), 64],
    ['tiled, rows 8', (a, inputs) => prefillProgram(a, inputs, { rows: 8 }), 64],
    ['tiled split, rows 4', (a, inputs) => prefillProgram(a, inputs, { rows: 4, split: true }), 32],
    ...(sgOk
      ? ([
          ['subgroup-max, rows 4', (a, inputs) => subgroupPrefillProgram(a, inputs, { rows: 4 }), 64],
          ['subgroup-max, rows 8', (a, inputs) => subgroupPrefillProgram(a, inputs, { rows: 8 }), 64],
          ['subgroup-max split, rows 4', (a, inputs) => subgroupPrefillProgram(a, inputs, { rows: 4, split: true }), 32],
          ['subgroup-max split, rows 8', (a, inputs) => subgroupPrefillProgram(a, inputs, { rows: 8, split: true }), 32],
        ] as [string, Build, number][])
      : []),
    ['one query per thread', rowPrefillProgram, 64],
  ];

  // Each program run directly (no routing) against the CPU kernel on the same inputs: NaN and infinities in the
  // same output elements, the rest close. Documents of 40 and 50 tokens share the first query block and key tiles.
  it.each(programs)('%s: non-finite outputs where the CPU kernel has them, and only there', async (_name, build, D) => {
    const [Hq, Hkv] = [4, 2];
    const cu = offsets([40, 50, 3, 100]);
    const T = cu[cu.length - 1]!;
    const cases: { poison: Poison; causal: boolean; window: number }[] = [
      { poison: { input: 'v', row: 45, head: 1, dim: 5, value: NaN }, causal: true, window: Infinity },
      { poison: { input: 'v', row: 45, head: 0, dim: D - 1, value: Infinity }, causal: true, window: 8 },
      { poison: { input: 'k', row: 45, head: 1, dim: 0, value: NaN }, causal: false, window: 20 },
      { poison: { input: 'k', row: 100, head: 0, dim: 7, value: NaN }, causal: true, window: Infinity },
    ];
    for (const { poison, causal, window } of cases) {
      const name = JSON.stringify({ ...poison, value: String(poison.value), causal, window });
      const [q, k, v] = await Promise.all(
        (['q', 'k', 'v'] as const).map(async (input, i) => {
          const H = input === 'q' ? Hq : Hkv;
          return poisoned((await rand([T, H, D], 60 + i, cpu)).v, input as Poison['input'], H, D, poison);
        }),
      );
      const onCpu = await varlenAttention({ q: tensor(q!, [T, Hq, D]), k: tensor(k!, [T, Hkv, D]), v: tensor(v!, [T, Hkv, D]) }, { cuSeqlens: cu, causal, window: Number.isFinite(window) ? window : undefined });
      const want = Array.from(await onCpu.data());
      expect(want.some((x) => !Number.isFinite(x)) && want.some(Number.isFinite)).toBe(true);
      const a: VarlenAttentionAttrs = { T, Hq, Hkv, D, scale: 1 / Math.sqrt(D), softcap: 0, hasGain: false, hasState: false, cuSeqlens: cu, causal, window };
      const inputs = [tensor(q!, [T, Hq, D], { backend: gpu }), tensor(k!, [T, Hkv, D], { backend: gpu }), tensor(v!, [T, Hkv, D], { backend: gpu })];
      const bounds = tensor(keyBounds(a), [2 * T], { dtype: 'u32', backend: gpu });
      const out = empty([T, Hq, D], { backend: gpu });
      await gpu!.run(build(a, inputs), [...inputs, bounds], [out], { T, Hq, Hkv, scale: a.scale, softcap: 0 }, [Math.ceil(T / BLOCK_Q), Hq, 1]);
      assertSameNonFinite(want, await out.data(), Hq, D, name);
    }
  });
});

describe.each(backends)('KV-cache decode on $name', (backend) => {
  const [Hq, Hkv, D] = [4, 2, 8];

  /**
   * Prompts of `prompts` tokens per sequence go through appendKv, then `steps` tokens through attendStep; each
   * step's output must equal one prefill of the whole packed sequences at that position.
   */
  async function decodeMatchesPrefill(prompts: number[], steps: number, options: { window?: number; capacity?: number; stateKv?: boolean } & Omit<ScoreOptions, 'stateKv'> = {}) {
    const B = prompts.length;
    const lengths = prompts.map((n) => n + steps);
    const cu = offsets(lengths);
    const T = cu[B]!;
    const [q, k, v, ks, vs] = await Promise.all([Hq, Hkv, Hkv, Hkv, Hkv].map((H, i) => rand([T, H, D], 10 + i, backend)));
    const gather = async (x: { t: Tensor; v: number[] }, rows: number[]) => {
      const w = x.t.size / T;
      return tensor(rows.flatMap((r) => x.v.slice(r * w, (r + 1) * w)), [rows.length, ...x.t.shape.slice(1)], { backend });
    };
    const stateOf = async (rows: number[]) => (options.stateKv ? { k: await gather(ks!, rows), v: await gather(vs!, rows) } : undefined);
    const score = { softcap: options.softcap, qGain: options.qGain, scale: options.scale };
    const full = await varlenAttention({ q: q!.t, k: k!.t, v: v!.t }, { cuSeqlens: cu, window: options.window, ...score, stateKv: options.stateKv ? { k: ks!.t, v: vs!.t } : undefined });
    const ref = Array.from(await full.data());

    const cache = createKvCache({ batch: B, heads: Hkv, dim: D, capacity: options.capacity, window: options.window, backend });
    const promptRows = prompts.flatMap((n, b) => Array.from({ length: n }, (_, i) => cu[b]! + i));
    await appendKv(cache, { k: await gather(k!, promptRows), v: await gather(v!, promptRows) }, offsets(prompts));
    for (let s = 0; s < steps; s++) {
      const rows = prompts.map((n, b) => cu[b]! + n + s);
      const y = await attendStep(cache, await gather(q!, rows), await gather(k!, rows), await gather(v!, rows), { ...score, stateKv: await stateOf(rows) });
      const want = rows.flatMap((r) => ref.slice(r * Hq * D, (r + 1) * Hq * D));
      assertClose(want, await y.data(), { rtol: 2e-6, name: `step ${s}` });
    }
    expect(cache.lengths).toEqual(lengths);
    return cache;
  }

  it('prefill then attendStep equals one prefill (global layer, GQA, softcap, qGain)', () => decodeMatchesPrefill([3, 7], 4, { capacity: 16, softcap: 2, qGain: [1.2, 0.4, 2, 1] }));

  it('a long context is split over keys and combined', () => decodeMatchesPrefill([300, 520], 2, { capacity: 600 }));

  it('windowed cache: a ring of window + 1 entries that wraps around', async () => {
    const cache = await decodeMatchesPrefill([2, 9, 0], 12, { window: 4 });
    expect(cache.slots).toBe(5);
    expect(cache.k.shape).toEqual([3, 5, Hkv, D]);
  });

  it('windowed cache past one split, and window 0', async () => {
    await decodeMatchesPrefill([280], 2, { window: 300 });
    await decodeMatchesPrefill([4], 2, { window: 0 });
  });

  it('state tokens in decode', () => decodeMatchesPrefill([5, 1], 3, { capacity: 8, stateKv: true }));

  /**
   * Packed sequences of `prompts` + `steps` tokens with one poisoned key or value element (a row of the packed
   * k or v): the prompts go through appendKv, the rest through attendStep, and every step must be non-finite
   * exactly where the float64 prefill reference is. Returns the reference's rows of the steps, per sequence.
   */
  async function decodePoisoned(prompts: number[], steps: number, poison: Poison, options: { window?: number; capacity?: number }) {
    const B = prompts.length;
    const cu = offsets(prompts.map((n) => n + steps));
    const T = cu[B]!;
    const q = (await rand([T, Hq, D], 30, backend)).v;
    const [k, v] = await Promise.all((['k', 'v'] as const).map(async (input, i) => poisoned((await rand([T, Hkv, D], 31 + i, backend)).v, input, Hkv, D, poison)));
    const ref = naive(q, k!, v!, { T, Hq, Hkv, D, cu, window: options.window });
    const gather = (x: number[], heads: number, rows: number[]) => tensor(rows.flatMap((r) => x.slice(r * heads * D, (r + 1) * heads * D)), [rows.length, heads, D], { backend });
    const cache = createKvCache({ batch: B, heads: Hkv, dim: D, ...options, backend });
    const promptRows = prompts.flatMap((n, b) => Array.from({ length: n }, (_, i) => cu[b]! + i));
    await appendKv(cache, { k: gather(k!, Hkv, promptRows), v: gather(v!, Hkv, promptRows) }, offsets(prompts));
    const stepRefs: number[][][] = prompts.map(() => []);
    for (let s = 0; s < steps; s++) {
      const rows = prompts.map((n, b) => cu[b]! + n + s);
      const y = await attendStep(cache, gather(q, Hq, rows), gather(k!, Hkv, rows), gather(v!, Hkv, rows));
      const want = rows.flatMap((r) => ref.slice(r * Hq * D, (r + 1) * Hq * D));
      assertSameNonFinite(want, await y.data(), Hq, D, `${JSON.stringify(poison)} step ${s}`);
      rows.forEach((r, b) => stepRefs[b]!.push(ref.slice(r * Hq * D, (r + 1) * Hq * D)));
    }
    cache.dispose();
    return stepRefs;
  }

  it.each<Poison>([
    { input: 'v', row: 1, head: 1, dim: 3, value: NaN },
    { input: 'k', row: 1, head: 0, dim: 2, value: NaN },
  ])('a NaN in one cached $input reaches only the steps that attend to it, in its own sequence', async (poison) => {
    const finite = (rows: number[][]) => rows.map((r) => r.every(Number.isFinite));
    // window 4: token 1 of sequence 0 is seen up to its position 5, i.e. by steps 0 .. 2 after a prompt of 3
    const windowed = await decodePoisoned([3, 6], 6, poison, { window: 4 });
    expect(finite(windowed[0]!)).toEqual([false, false, false, true, true, true]);
    expect(finite(windowed[1]!)).toEqual(Array(6).fill(true));
    // a global layer sees it at every step of sequence 0, never in sequence 1
    const global = await decodePoisoned([3, 6], 3, poison, { capacity: 9 });
    expect(finite(global[0]!)).toEqual([false, false, false]);
    expect(finite(global[1]!)).toEqual([true, true, true]);
  });

  it('refuses bad caches, shapes and overflow with typed errors', async () => {
    expect(() => createKvCache({ batch: 1, heads: 2, dim: 8, backend })).toThrow(/capacity must be a positive integer/);
    expect(() => createKvCache({ batch: 0, heads: 2, dim: 8, capacity: 4, backend })).toThrow(InputError);
    const cache = createKvCache({ batch: 2, heads: Hkv, dim: D, capacity: 2, backend });
    const kv = tensor(new Float32Array(2 * Hkv * D), [2, Hkv, D], { backend });
    const q = tensor(new Float32Array(2 * Hq * D), [2, Hq, D], { backend });
    await expect(attendStep(cache, q, q, kv)).rejects.toThrow(ShapeError);
    await expect(attendStep(cache, kv.reshape([1, 4, D]), kv, kv)).rejects.toThrow(/expected \[2, Hq, 8\]/);
    await expect(appendKv(cache, { k: kv, v: kv })).rejects.toThrow(/needs cuSeqlens/);
    await expect(appendKv(cache, { k: kv, v: kv }, [0, 2])).rejects.toThrow(/1 sequences; the cache holds 2/);
    await appendKv(cache, { k: kv, v: kv }, [0, 1, 2]);
    await attendStep(cache, q, kv, kv);
    await expect(attendStep(cache, q, kv, kv)).rejects.toThrow(/sequence 0 would hold 3 tokens; the cache's capacity is 2/);
    cache.dispose();
  });
});

import { type Backend, type DType, InputError, Rng, ShapeError, assertClose, tensor } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { type RopePairing, rope, ropeFrequencies, ropeTable } from '../src/rope.js';

const { backends } = await testBackends();

const LLAMA31 = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } as const;

/** Plain float64 RoPE of x [B, T, H, D]: pair (p, q) of head dims turns by pos(b, t) * inv[i]. */
function ropeRef(x: ArrayLike<number>, shape: number[], pos: (b: number, t: number) => number, inv: ArrayLike<number>, rot: number, pairing: RopePairing): number[] {
  const [B, T, H, D] = shape as [number, number, number, number];
  const out = Array.from(x);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
    const base = ((b * T + t) * H + h) * D;
    for (let i = 0; i < rot / 2; i++) {
      const [p, q] = pairing === 'half' ? [base + i, base + i + rot / 2] : [base + 2 * i, base + 2 * i + 1];
      const angle = pos(b, t) * inv[i]!;
      out[p] = x[p]! * Math.cos(angle) - x[q]! * Math.sin(angle);
      out[q] = x[q]! * Math.cos(angle) + x[p]! * Math.sin(angle);
    }
  }
  return out;
}

function randomValues(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.normal());
}

describe('ropeFrequencies', () => {
  it('is theta^(-2i/dim)', () => {
    expect(Array.from(ropeFrequencies({ dim: 4 }))).toEqual([1, 0.01]);
    assertClose([1, 1 / 4, 1 / 16], ropeFrequencies({ dim: 6, theta: 64, scaling: { type: 'default' } }), { rtol: 1e-15, atol: 0 });
  });

  it('applies llama3 scaling (Llama 3.1 constants) in each band', () => {
    const f = ropeFrequencies({ dim: 128, theta: 500000, scaling: LLAMA31 });
    // computed by hand: wavelen = 2 pi / inv; < 2048 kept, > 8192 divided by 8, between blended
    expect(f[0]).toBe(1); // wavelen 6.28: kept
    expect(f[28]).toBeCloseTo(0.003211445994752591, 15); // wavelen 1956.5: kept
    expect(f[29]).toBeCloseTo(0.002166570763503359, 15); // wavelen 2401.7: smooth 0.80362
    expect(f[32]).toBeCloseTo(0.0005248461609929547, 15); // inv 1/sqrt(5e5), wavelen 4442.9: smooth 0.28128
    expect(f[34]).toBeCloseTo(0.0001785078127679964, 15); // wavelen 6695.1: smooth 0.07453
    expect(f[35]).toBeCloseTo(0.0007644969883171747 / 8, 15); // wavelen 8218.7: divided
    expect(f[63]).toBeCloseTo(500000 ** (-126 / 128) / 8, 18);
  });

  it('matches the transformers formula at every frequency', () => {
    const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: orig } = LLAMA31;
    const expected = Array.from(ropeFrequencies({ dim: 128, theta: 500000 }), (inv) => {
      const wavelen = (2 * Math.PI) / inv;
      const scaled = wavelen > orig / low ? inv / factor : inv;
      const smooth = (orig / wavelen - low) / (high - low);
      const medium = !(wavelen < orig / high) && !(wavelen > orig / low);
      return medium ? ((1 - smooth) * scaled) / factor + smooth * scaled : scaled;
    });
    assertClose(expected, ropeFrequencies({ dim: 128, theta: 500000, scaling: LLAMA31 }), { rtol: 1e-15, atol: 0 });
  });

  it('refuses bad arguments', () => {
    expect(() => ropeFrequencies({ dim: 5 })).toThrow(InputError);
    expect(() => ropeFrequencies({ dim: 4, scaling: { ...LLAMA31, highFreqFactor: 1 } })).toThrow(/lowFreqFactor < highFreqFactor/);
  });
});

describe.each(backends)('rope on $name', (backend: Backend) => {
  async function run(values: number[], shape: number[], options: Parameters<typeof rope>[1], dtype: DType = 'f32') {
    const x = tensor(values, shape, { backend, dtype });
    const out = await rope(x, options);
    expect(out.backend).toBe(backend);
    expect(out.dtype).toBe('f32');
    expect(out.shape).toEqual(shape);
    return { stored: Array.from(await x.data()), out: Array.from(await out.data()) };
  }

  it('rotates D = 4 at position 3 by hand (half pairing)', async () => {
    const { out } = await run([1, 2, 3, 4], [1, 1, 4], { offset: 3 });
    // inv = [1, 0.01]; pairs (0, 2) at angle 3 and (1, 3) at angle 0.03
    const expected = [1 * Math.cos(3) - 3 * Math.sin(3), 2 * Math.cos(0.03) - 4 * Math.sin(0.03), 3 * Math.cos(3) + 1 * Math.sin(3), 4 * Math.cos(0.03) + 2 * Math.sin(0.03)];
    assertClose(expected, out, { rtol: 1e-6, atol: 0 });
  });

  it('rotates D = 4 at position 3 by hand (interleaved pairing)', async () => {
    const { out } = await run([1, 2, 3, 4], [1, 1, 4], { offset: 3, pairing: 'interleaved' });
    // pairs (0, 1) at angle 3 and (2, 3) at angle 0.03
    const expected = [1 * Math.cos(3) - 2 * Math.sin(3), 2 * Math.cos(3) + 1 * Math.sin(3), 3 * Math.cos(0.03) - 4 * Math.sin(0.03), 4 * Math.cos(0.03) + 3 * Math.sin(0.03)];
    assertClose(expected, out, { rtol: 1e-6, atol: 0 });
  });

  const CASES: [RopePairing, number][] = [
    ['half', 10],
    ['interleaved', 10],
    ['half', 6],
    ['interleaved', 4],
  ];
  it.each(CASES)('matches the float64 reference (%s pairing, rotaryDim %i of 10)', async (pairing, rotaryDim) => {
    const shape = [2, 5, 3, 10];
    const values = randomValues(300, 1);
    const { out } = await run(values, shape, { pairing, rotaryDim, offset: 7, theta: 100 });
    const inv = ropeFrequencies({ dim: rotaryDim, theta: 100 });
    assertClose(ropeRef(values.map(Math.fround), shape, (_, t) => 7 + t, inv, rotaryDim, pairing), out, { rtol: 1e-5 });
    // the dims past rotaryDim come back unchanged
    for (let k = 0; k < 300; k++) if (k % 10 >= rotaryDim) expect(out[k]).toBe(Math.fround(values[k]!));
  });

  it('applies llama3 scaling, the same as passing the scaled invFreq', async () => {
    const shape = [1, 4, 2, 16];
    const values = randomValues(128, 2);
    const inv = ropeFrequencies({ dim: 16, theta: 500000, scaling: LLAMA31 });
    const positions = [0, 5000, 20000, 131071];
    const scaled = await run(values, shape, { positions, theta: 500000, scaling: LLAMA31 });
    const given = await run(values, shape, { positions, invFreq: inv });
    const ref = ropeRef(values.map(Math.fround), shape, (_, t) => positions[t]!, inv, 16, 'half');
    assertClose(ref, scaled.out, { rtol: 1e-5 });
    assertClose(ref, given.out, { rtol: 1e-5 });
  });

  it('preserves the norm of every pair', async () => {
    const values = randomValues(3 * 2 * 8, 3);
    const { out } = await run(values, [3, 2, 8], { pairing: 'interleaved', offset: 11 });
    for (let k = 0; k < values.length; k += 2) {
      expect(Math.hypot(out[k]!, out[k + 1]!)).toBeCloseTo(Math.hypot(Math.fround(values[k]!), Math.fround(values[k + 1]!)), 5);
    }
  });

  it('is undone by rotating at the negated positions', async () => {
    const shape = [2, 3, 2, 8];
    const values = randomValues(96, 4);
    const positions = [3, 1000, 77, 0, 12345, 9];
    const x = tensor(values, shape, { backend });
    const back = await rope(await rope(x, { positions }), { positions: positions.map((p) => -p) });
    assertClose(values.map(Math.fround), await back.data(), { rtol: 1e-5 });
  });

  it('takes positions per batch entry, shared, as a tensor, or as an offset', async () => {
    const shape = [2, 3, 1, 6];
    const values = randomValues(36, 5);
    const inv = ropeFrequencies({ dim: 6 });
    const x = values.map(Math.fround);
    const perRow = [4, 9, 2, 0, 1, 50];
    assertClose(ropeRef(x, shape, (b, t) => perRow[b * 3 + t]!, inv, 6, 'half'), (await run(values, shape, { positions: perRow })).out, { rtol: 1e-5 });
    const shared = [8, 3, 5];
    assertClose(ropeRef(x, shape, (_, t) => shared[t]!, inv, 6, 'half'), (await run(values, shape, { positions: shared })).out, { rtol: 1e-5 });
    const asTensor = tensor(new Int32Array(perRow), [2, 3], { backend });
    assertClose(ropeRef(x, shape, (b, t) => perRow[b * 3 + t]!, inv, 6, 'half'), (await run(values, shape, { positions: asTensor })).out, { rtol: 1e-5 });
    const offset = await run(values, shape, { offset: 40 });
    expect(offset.out).toEqual((await run(values, shape, { positions: [40, 41, 42] })).out);
  });

  it('stays accurate at large positions', async () => {
    const shape = [1, 3, 2, 64];
    const values = randomValues(384, 6);
    const positions = [100000, 100001, 123457];
    const { out } = await run(values, shape, { positions });
    assertClose(ropeRef(values.map(Math.fround), shape, (_, t) => positions[t]!, ropeFrequencies({ dim: 64 }), 64, 'half'), out, { rtol: 1e-5 });
  });

  it.each(['f16', 'bf16'] as DType[])('takes %s input', async (dtype) => {
    const shape = [2, 3, 5, 6];
    const { stored, out } = await run(randomValues(180, 7), shape, { offset: 2, rotaryDim: 4 }, dtype);
    assertClose(ropeRef(stored, shape, (_, t) => 2 + t, ropeFrequencies({ dim: 4 }), 4, 'half'), out, { rtol: 1e-5 });
  });

  it('a table (ropeTable) serves several calls: the same rotation as positions, one upload per backend, refused with positions', async () => {
    const shape = [2, 3, 2, 8];
    const rng = new Rng(41);
    const xs = [0, 1].map(() => tensor(Array.from({ length: 96 }, () => rng.normal()), shape, { backend, name: 'q' }));
    const options = { theta: 500000, scaling: LLAMA31 };
    const table = ropeTable([7, 8, 9], { rotaryDim: 8, ...options });
    for (const x of xs) {
      const viaTable = await rope(x, { table });
      assertClose(await (await rope(x, { offset: 7, ...options })).data(), await viaTable.data(), { rtol: 1e-7, name: 'table vs offset' });
    }
    // the WebGPU kernel keeps one upload of cos / sin on the table; the CPU reads its float64 arrays
    expect(table.uploads.size).toBe(backend.name === 'cpu' ? 0 : 1);
    table.dispose();
    expect(table.uploads.size).toBe(0);
    const x = xs[0]!;
    await expect(rope(x, { table: ropeTable([1, 2, 3], { rotaryDim: 8 }), offset: 3 })).rejects.toThrow(new InputError('rope q: a table brings its positions and frequencies; drop offset'));
    await expect(rope(x, { table: ropeTable([1, 2, 3], { rotaryDim: 4 }) })).rejects.toThrow(/the table rotates 4 dims, rotaryDim is 8/);
    await expect(rope(x, { table: ropeTable([1, 2], { rotaryDim: 8 }) })).rejects.toThrow(ShapeError);
    expect(() => ropeTable([1.5], { rotaryDim: 8 })).toThrow(/ropeTable: positions\[0\] = 1.5 is not an integer/);
  });

  it('refuses bad shapes and options with typed errors naming the tensor', async () => {
    const x = tensor(randomValues(24, 8), [2, 3, 4], { backend, name: 'q' });
    await expect(rope(tensor([1, 2], [1, 2], { backend, name: 'k' }))).rejects.toThrow(ShapeError);
    await expect(rope(tensor([1, 2], [1, 2], { backend, name: 'k' }))).rejects.toThrow(/rope k: expected \[B, T, H, D\] or \[T, H, D\], got \[1, 2\]/);
    await expect(rope(x, { rotaryDim: 3 })).rejects.toThrow(/rope q: rotaryDim must be a positive even integer <= D = 4, got 3/);
    await expect(rope(x, { rotaryDim: 6 })).rejects.toThrow(InputError);
    await expect(rope(x, { positions: [0, 1, 2] })).rejects.toThrow(/rope q: positions has 3 values, expected T = 2/);
    await expect(rope(x.reshape([2, 1, 3, 4]), { positions: [0, 1, 2] })).rejects.toThrow(ShapeError);
    await expect(rope(x, { positions: [0, 1.5] })).rejects.toThrow(/rope q: positions\[1\] = 1.5 is not an integer/);
    await expect(rope(x, { positions: [0, 1], offset: 1 })).rejects.toThrow(InputError);
    await expect(rope(x, { invFreq: [1] })).rejects.toThrow(/invFreq has 1 values, expected rotaryDim\/2 = 2/);
  });
});

import { DTypeError, InputError, Rng, ShapeError, type Tensor, assertClose, cpu, relativeRmse, tensor } from '@phalanx/core';
import { rope } from '@phalanx/ops';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { type HolographicMode, type HolographicNormalize, type RotationOptions, holographicIntegral, holographicStep, ropeOptions, rotate, unrotate } from '../src/index.js';

const { backends } = await testBackends();
const MODES: HolographicMode[] = ['recurrent', 'chunk', 'direct', 'auto'];
const RTOL = 1e-6;
const GPU_RTOL = 2e-5;

function values(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from(Float32Array.from({ length: n }, () => rng.normal()));
}

interface Setup extends RotationOptions {
  offset?: number[];
  normalize?: HolographicNormalize;
}

/**
 * The test's own float64 rotate -> prefix-sum -> unrotate, per sequence b from the entering state h0[b]
 * (the state after position offset - 1): c_t = Rot^-1(Rot(h0, o - 1) + sum_{s <= t} Rot(z_s, s), t).
 */
function reference(z: number[], h0: number[] | undefined, B: number, T: number, D: number, s: Setup = {}) {
  const { pairing = 'interleaved', width = D, base = 10000, normalize = 'none' } = s;
  const out = new Array<number>(B * T * D).fill(0);
  const fin = new Array<number>(B * D).fill(0);
  const half = width / 2;
  for (let b = 0; b < B; b++) {
    const o = s.offset?.[b] ?? 0;
    for (let p = 0; p < D / 2; p++) {
      const blk = Math.floor(p / half) * width;
      const k = p % half;
      const [re, im] = pairing === 'half' ? [blk + k, blk + k + half] : [blk + 2 * k, blk + 2 * k + 1];
      const w = base ** (-(2 * k) / width);
      const rot = (x: number, y: number, a: number): [number, number] => [x * Math.cos(a) - y * Math.sin(a), y * Math.cos(a) + x * Math.sin(a)];
      let [ir, ii] = h0 ? rot(h0[b * D + re]!, h0[b * D + im]!, (o - 1) * w) : [0, 0];
      let c: [number, number] = [h0?.[b * D + re] ?? 0, h0?.[b * D + im] ?? 0];
      for (let t = 0; t < T; t++) {
        const [zr, zi] = rot(z[(b * T + t) * D + re]!, z[(b * T + t) * D + im]!, (o + t) * w);
        [ir, ii] = [ir + zr, ii + zi];
        c = rot(ir, ii, -(o + t) * w);
        const scale = normalize === 'mean' ? 1 / (o + t + 1) : normalize === 'sqrt' ? 1 / Math.sqrt(o + t + 1) : 1;
        out[(b * T + t) * D + re] = c[0] * scale;
        out[(b * T + t) * D + im] = c[1] * scale;
      }
      [fin[b * D + re], fin[b * D + im]] = c;
    }
  }
  return { out, fin };
}

async function check(r: { output: Tensor; finalState: Tensor }, ref: { out: number[]; fin: number[] }, name: string, rtol = RTOL) {
  assertClose(ref.out, await r.output.data(), { rtol, name: `${name} output` });
  assertClose(ref.fin, await r.finalState.data(), { rtol, name: `${name} finalState` });
}

describe.each(backends)('holographicIntegral on $name', (backend) => {
  const gpu = backend !== cpu;
  const rtol = gpu ? GPU_RTOL : RTOL;
  const dispose = (...ts: (Tensor | undefined)[]) => ts.forEach((t) => t?.dispose());

  // T, D, setup: chunk sizes that do not divide T, both pairings, rotation blocks narrower than D, offsets
  const CASES: [number, number, Setup & { chunkSize?: number }][] = [
    [1, 8, {}],
    [7, 12, { pairing: 'half', chunkSize: 3 }],
    [37, 16, { width: 8, chunkSize: 5, normalize: 'mean', offset: [3, 0] }],
    [70, 32, { pairing: 'half', width: 16, base: 500000, normalize: 'sqrt', offset: [10, 20] }],
  ];
  it.each(CASES)('T=%i D=%i %j: every mode equals float64 rotate/cumsum/unrotate', async (T, D, setup) => {
    const B = 2;
    const z = values(B * T * D, T);
    const h0 = values(B * D, T + 1);
    const ref = reference(z, h0, B, T, D, setup);
    const zt = tensor(z, [B, T, D], { backend, name: 'z' });
    const initialState = tensor(h0, [B, D], { backend, name: 'h0' });
    for (const mode of MODES) {
      const r = await holographicIntegral(zt, { ...setup, mode, initialState });
      expect(r.output.shape).toEqual([B, T, D]);
      expect(r.finalState.shape).toEqual([B, D]);
      await check(r, ref, mode, rtol);
      dispose(r.output, r.finalState);
    }
    dispose(zt, initialState);
  });

  it('no initial state starts from zeros; f16 and bf16 inputs', async () => {
    const [B, T, D] = [1, 20, 8];
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const zt = tensor(values(B * T * D, 5), [B, T, D], { backend, dtype });
      const ref = reference(Array.from(await zt.data()), undefined, B, T, D);
      for (const mode of MODES) {
        const r = await holographicIntegral(zt, { mode, chunkSize: 6 });
        await check(r, ref, `${dtype} ${mode}`, rtol);
        dispose(r.output, r.finalState);
      }
      zt.dispose();
    }
  });

  it('prefill + holographicStep decode equals the full forward, and the state size stays constant', async () => {
    const [B, T, D, prefill] = [2, 24, 16, 9];
    const setup: Setup = { width: 8, normalize: 'mean', offset: [0, 5] };
    const z = values(B * T * D, 7);
    const whole = reference(z, undefined, B, T, D, setup);
    const rows = (from: number, to: number) => Array.from({ length: B }, (_, b) => z.slice((b * T + from) * D, (b * T + to) * D)).flat();
    const first = tensor(rows(0, prefill), [B, prefill, D], { backend });
    const pre = await holographicIntegral(first, { ...setup, mode: 'chunk', chunkSize: 4 });
    let state = pre.finalState;
    for (let t = prefill; t < T; t++) {
      const zt = tensor(rows(t, t + 1), [B, D], { backend });
      const step = await holographicStep(state, zt, { width: 8, normalize: 'mean', position: setup.offset!.map((o) => o + t) });
      expect(step.state.shape).toEqual([B, D]);
      const expected = Array.from({ length: B }, (_, b) => whole.out.slice((b * T + t) * D, (b * T + t + 1) * D)).flat();
      assertClose(expected, await step.output.data(), { rtol, name: `step ${t}` });
      dispose(state, zt, step.output);
      state = step.state;
    }
    assertClose(whole.fin, await state.data(), { rtol, name: 'state after decode' });
    dispose(first, pre.output, state);
  });

  /*
   * Near position 131072 the angle (offset + t) * omega of rotate -> cumsum -> unrotate is large. Formed in
   * float64 ('exact') or by the recurrence and chunked forms (which only ever turn by omega k, k <= C), the
   * result is right to rounding; formed in f32 as a framework does (pos_fp32 * inv_freq_fp32), each angle
   * is off by up to ~1e-2 rad, and so is every c_t (relative error ~1e-3 to 1e-2).
   */
  it('positions near 131072: recurrence and chunks are exact, f32 angles are not', async () => {
    const [B, T, D] = [1, gpu ? 40 : 300, 64];
    const setup: Setup = { offset: [131072 - T / 2] };
    const z = values(B * T * D, 8);
    const h0 = values(B * D, 9);
    const ref = reference(z, h0, B, T, D, setup);
    const zt = tensor(z, [B, T, D], { backend });
    const initialState = tensor(h0, [B, D], { backend });
    for (const mode of ['recurrent', 'chunk', 'direct'] as const) {
      const r = await holographicIntegral(zt, { ...setup, mode, chunkSize: 16, initialState });
      await check(r, ref, mode, rtol);
      dispose(r.output, r.finalState);
    }
    const f32 = await holographicIntegral(zt, { ...setup, mode: 'direct', angles: 'f32', initialState });
    const err = relativeRmse(ref.out, await f32.output.data());
    expect(err).toBeGreaterThan(1e-4);
    expect(err).toBeLessThan(3e-2);
    dispose(zt, initialState, f32.output, f32.finalState);
  });

  it('rotate and unrotate are inverse; rotate equals @phalanx/ops rope with ropeOptions', async () => {
    const [B, T, H, Dh] = [2, 5, 3, 8];
    const x = tensor(values(B * T * H * Dh, 10), [B, T, H, Dh], { backend, name: 'q' });
    const positions = [0, 7, 131070, 3, 1];
    for (const pairing of ['interleaved', 'half'] as const) {
      const options = { pairing, width: Dh, base: 500000 };
      const y = await rotate(x, positions, options);
      expect(y.shape).toEqual([B, T, H, Dh]);
      const back = await unrotate(y, positions, options);
      assertClose(await x.data(), await back.data(), { rtol, name: `${pairing} round trip` });
      const viaOps = await rope(x, { ...ropeOptions(options), positions });
      assertClose(await viaOps.data(), await y.data(), { rtol: 1e-7, name: `${pairing} vs rope` });
      dispose(y, back, viaOps);
    }
    x.dispose();
  });

  it('rotate of [B, T, D] in blocks: pair k of each block turns by position * base^(-2k/width)', async () => {
    const [B, T, D, width] = [1, 3, 12, 4];
    const v = values(B * T * D, 11);
    const x = tensor(v, [T, D], { backend });
    const y = await rotate(x, [2, 5, 9], { width });
    const expected = v.slice();
    for (let t = 0; t < T; t++)
      for (let j = 0; j < D; j += 2) {
        const a = [2, 5, 9][t]! * 10000 ** (-((j % width) / width));
        const [re, im] = [v[t * D + j]!, v[t * D + j + 1]!];
        expected[t * D + j] = re * Math.cos(a) - im * Math.sin(a);
        expected[t * D + j + 1] = im * Math.cos(a) + re * Math.sin(a);
      }
    assertClose(expected, await y.data(), { rtol, name: 'blocks' });
    dispose(x, y);
  });
});

describe('holographicIntegral on cpu at length', () => {
  it('T = 4096, D = 512: recurrence, chunks and direct equal float64 rotate/cumsum/unrotate', async () => {
    const [B, T, D] = [1, 4096, 512];
    const z = values(B * T * D, 12);
    const ref = reference(z, undefined, B, T, D, { normalize: 'sqrt' });
    const zt = tensor(z, [B, T, D]);
    for (const mode of ['recurrent', 'chunk', 'direct'] as const) {
      const r = await holographicIntegral(zt, { mode, normalize: 'sqrt' });
      await check(r, ref, mode);
      expect(r.finalState.size).toBe(D);
    }
  });
});

describe('typed errors', () => {
  const z = tensor(values(2 * 3 * 8, 13), [2, 3, 8], { name: 'zz' });
  it('refuses bad shapes, dtypes and options', async () => {
    await expect(holographicIntegral(tensor(values(8, 1), [8]))).rejects.toThrow(ShapeError);
    await expect(holographicIntegral(z, { initialState: tensor(values(8, 1), [1, 8], { name: 'c0' }) })).rejects.toThrow(/initialState \(c0\) is \[1, 8\]; expected \[2, 8\]/);
    await expect(holographicIntegral(tensor(new Int32Array(8), [1, 1, 8]))).rejects.toThrow(DTypeError);
    await expect(holographicIntegral(z, { width: 6 })).rejects.toThrow(/width must be a positive even integer dividing the last dim 8, got 6/);
    await expect(holographicIntegral(tensor(values(6, 1), [1, 2, 3]))).rejects.toThrow(InputError);
    await expect(holographicIntegral(z, { mode: 'fast' as HolographicMode })).rejects.toThrow(/unknown mode 'fast'/);
    await expect(holographicIntegral(z, { normalize: 'l2' as HolographicNormalize })).rejects.toThrow(/unknown normalize 'l2'/);
    await expect(holographicIntegral(z, { chunkSize: 0 })).rejects.toThrow(/chunkSize must be an integer >= 1/);
    await expect(holographicIntegral(z, { offset: [1, 2, 3] })).rejects.toThrow(/offset has 3 values, expected one or B = 2/);
    await expect(holographicIntegral(z, { offset: -1 })).rejects.toThrow(InputError);
    await expect(holographicIntegral(z, { pairing: 'adjacent' as 'half' })).rejects.toThrow(/pairing must be 'interleaved' or 'half'/);
    await expect(holographicIntegral(z, { base: 0 })).rejects.toThrow(/base must be positive/);
    const state = tensor(values(16, 2), [2, 8], { name: 'S' });
    await expect(holographicStep(state, tensor(values(8, 1), [1, 8], { name: 'z1' }))).rejects.toThrow(/holographicStep: z \(z1\) is \[1, 8\]; expected \[2, 8\]/);
    await expect(holographicStep(state, state, { normalize: 'mean' })).rejects.toThrow(/needs the token's position/);
    await expect(rotate(z, [0, 1])).rejects.toThrow(/positions has 2 values, expected T = 3 or B\*T = 6/);
    await expect(rotate(z, [0, 1, 0.5])).rejects.toThrow(/positions\[2\] = 0.5 is not an integer/);
    await expect(unrotate(tensor(values(8, 1), [8]), [0])).rejects.toThrow(ShapeError);
    expect(() => ropeOptions({ width: 3 })).toThrow(InputError);
  });
});

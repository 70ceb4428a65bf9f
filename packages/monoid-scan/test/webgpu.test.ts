/**
 * The WebGPU kernels against the CPU recurrence (the float64 reference, itself checked against the spec's
 * formula in monoid-scan.test.ts), on fresh seeded inputs with vector and scalar decay (the three decay
 * variants of spec 1.3.1 all reach the scan as a log-decay of one of these two shapes).
 */
import { type Backend, Rng, type Tensor, assertClose, cpu, fallbackCounts, tensor } from '@phalanx/core';
import { type WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { type MonoidScanMode, monoidScan, monoidStep } from '../src/index.js';

const { gpu } = await testBackends();

type Variant = 'vector-logsigmoid' | 'scalar';
const softplus = (z: number) => Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z)));

/** Inputs on the CPU, with the decay of each variant; `bias` shifts the decay logits (+ weak decay, - strong). */
function inputs(B: number, T: number, H: number, Dk: number, Dv: number, variant: Variant, seed: number, bias = 2) {
  const rng = new Rng(seed);
  const r = (n: number, s = 1) => Array.from({ length: n }, () => rng.normal() * s);
  const z = r(B * T * H * (variant === 'scalar' ? 1 : Dk)).map((x) => x + bias);
  // logsigmoid(z) = -softplus(-z); the -softplus variant takes -z so both see decays near exp(-exp(-bias))
  const ld = z.map((x) => -softplus(-x));
  return {
    q: tensor(r(B * T * H * Dk, 0.3), [B, T, H, Dk]),
    k: tensor(r(B * T * H * Dk), [B, T, H, Dk]),
    v: tensor(r(B * T * H * Dv), [B, T, H, Dv]),
    logDecay: tensor(ld, variant === 'scalar' ? [B, T, H] : [B, T, H, Dk]),
    initialState: tensor(r(B * H * Dk * Dv, 0.5), [B, H, Dk, Dv]),
  };
}

async function onGpu<T extends Record<string, Tensor>>(x: T, g: Backend): Promise<T> {
  const out: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(x)) out[k] = await t.to(g);
  return out as T;
}

/** Results agree, and the WebGPU kernels served them: no fallback to the CPU was counted. */
async function expectSame(ref: { output: Tensor; finalState: Tensor }, got: { output: Tensor; finalState: Tensor }, name: string, rtol = 1e-5) {
  expect(got.output.backend.name).toBe('webgpu');
  expect(fallbackCounts.get('monoidScan:webgpu->cpu') ?? 0).toBe(0);
  assertClose(await ref.output.data(), await got.output.data(), { rtol, name: `${name} output` });
  assertClose(await ref.finalState.data(), await got.finalState.data(), { rtol, name: `${name} final state` });
}

describe.runIf(gpu)('monoid scan on WebGPU == the CPU recurrence', () => {
  const g = gpu as WebGPUBackend;
  const VARIANTS: Variant[] = ['vector-logsigmoid', 'scalar'];
  const MODES: MonoidScanMode[] = ['recurrent', 'chunk', 'auto'];

  it.each(VARIANTS.flatMap((v) => [1, 63, 65, 257].map((T) => [v, T] as const)))('%s, T = %i, every mode', async (variant, T) => {
    const x = inputs(2, T, 2, 5, 7, variant, T);
    const ref = await monoidScan(x, { mode: 'recurrent' });
    const gx = await onGpu(x, g);
    for (const mode of MODES) await expectSame(ref, await monoidScan(gx, { mode }), `${variant} T=${T} ${mode}`);
  });

  it('strong and weak decay: no NaN over T = 4096, and Dk = Dv = 64 at the chunk kernel limit', async () => {
    for (const bias of [8, -6]) {
      const x = inputs(1, 4096, 1, 4, 3, 'vector-logsigmoid', 11, bias);
      const ref = await monoidScan(x, { mode: 'recurrent' });
      await expectSame(ref, await monoidScan(await onGpu(x, g), { mode: 'chunk' }), `bias ${bias}`, 1e-4);
    }
    const wide = inputs(1, 130, 1, 64, 64, 'vector-logsigmoid', 12);
    await expectSame(await monoidScan(wide, { mode: 'recurrent' }), await monoidScan(await onGpu(wide, g), { mode: 'chunk' }), 'Dk=Dv=64');
  });

  // the output kernel takes the key dims 16 at a time (4 vec4s; fewer when Dk <= 12), padding the last pass,
  // and splits the diagonal blocks' dims over two thread groups: odd and uneven passes, both decay shapes
  it.each([
    [37, 19, 'vector-logsigmoid', 2],
    [10, 64, 'vector-logsigmoid', -4],
    [20, 3, 'scalar', 2],
    [64, 33, 'scalar', -4],
  ] as const)('chunk kernel, Dk = %i, Dv = %i, %s decay, bias %i, partial last chunk', async (Dk, Dv, variant, bias) => {
    const x = inputs(1, 150, 2, Dk, Dv, variant, Dk + Dv, bias);
    const ref = await monoidScan(x, { mode: 'recurrent' });
    await expectSame(ref, await monoidScan(await onGpu(x, g), { mode: 'chunk' }), `Dk=${Dk} Dv=${Dv} ${variant}`);
  });

  it('packed sequences (cuSeqlens) with an empty one, from their own initial states', async () => {
    const cuSeqlens = [0, 3, 3, 70, 200];
    const x = inputs(1, 200, 2, 6, 4, 'vector-logsigmoid', 13);
    const init = tensor(Array.from({ length: 4 * 2 * 6 * 4 }, (_, i) => Math.sin(i)), [4, 2, 6, 4]);
    const ref = await monoidScan({ ...x, initialState: init }, { mode: 'recurrent', cuSeqlens });
    const gx = await onGpu({ ...x, initialState: init }, g);
    for (const mode of MODES) await expectSame(ref, await monoidScan(gx, { mode, cuSeqlens }), `packed ${mode}`);
  });

  it('prefill + token-by-token monoidStep == one scan, with the state kept on the GPU', async () => {
    const [B, T, H, Dk, Dv] = [2, 80, 2, 5, 6];
    const x = inputs(B, T, H, Dk, Dv, 'vector-logsigmoid', 14);
    const full = await monoidScan(x, { mode: 'recurrent' });
    const gx = await onGpu(x, g);
    const split = 70;
    const slice = async (t: Tensor, from: number, to: number) => {
      const d = t.shape[3] ?? 1;
      const all = await t.data();
      const rows: number[] = [];
      for (let b = 0; b < B; b++) rows.push(...all.slice((b * T + from) * H * d, (b * T + to) * H * d));
      return tensor(rows, t.rank === 4 ? [B, to - from, H, d] : [B, to - from, H], { backend: g });
    };
    const prefill = await monoidScan({ q: await slice(gx.q, 0, split), k: await slice(gx.k, 0, split), v: await slice(gx.v, 0, split), logDecay: await slice(gx.logDecay, 0, split), initialState: gx.initialState }, { mode: 'chunk' });
    let state = prefill.finalState;
    const outs: number[][] = [];
    for (let t = split; t < T; t++) {
      const one = async (u: Tensor) => (await slice(u, t, t + 1)).reshape(u.rank === 4 ? [B, H, u.shape[3]!] : [B, H]);
      const step = await monoidStep(state, { q: await one(gx.q), k: await one(gx.k), v: await one(gx.v), logDecay: await one(gx.logDecay) });
      expect(step.state.backend).toBe(g);
      state.dispose();
      state = step.state;
      outs.push(Array.from(await step.output.data()));
    }
    assertClose(await full.finalState.data(), await state.data(), { rtol: 1e-5, name: 'state after decode' });
    const ref = await full.output.data();
    outs.forEach((o, s) => {
      const t = split + s;
      const want: number[] = [];
      for (let b = 0; b < B; b++) want.push(...ref.slice((b * T + t) * H * Dv, (b * T + t + 1) * H * Dv));
      assertClose(want, o, { rtol: 1e-5, name: `decode token ${t}` });
    });
  });

  it('f16 inputs are upcast; mode scan is served by the CPU form and comes back on the GPU', async () => {
    const x = inputs(1, 40, 1, 4, 4, 'scalar', 15);
    const half = { ...x, q: await cpuCast(x.q), k: await cpuCast(x.k), v: await cpuCast(x.v), logDecay: await cpuCast(x.logDecay) };
    const ref = await monoidScan(half, { mode: 'recurrent' });
    await expectSame(ref, await monoidScan(await onGpu(half, g), { mode: 'chunk' }), 'f16');
    const scan = await monoidScan(await onGpu(half, g), { mode: 'scan' });
    expect(fallbackCounts.get('monoidScan:webgpu->cpu')).toBe(1); // the registry's documented fallback
    expect(scan.output.backend).toBe(g);
    assertClose(await ref.output.data(), await scan.output.data(), { rtol: 1e-5, name: 'scan mode' });
  });
});

async function cpuCast(t: Tensor): Promise<Tensor> {
  return tensor(await t.data(), t.shape, { dtype: 'f16', backend: cpu });
}

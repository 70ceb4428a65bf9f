import { type Backend, ConfigError, DTypeError, InputError, Rng, ShapeError, type Tensor, assertClose, cpu, mul, tensor } from '@phalanx/core';
import type { WebGPUBackend } from '@phalanx/webgpu';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it, vi } from 'vitest';
import { rmsNorm, silu } from '@phalanx/ops';
import { DECAY_VARIANTS, type DecayVariant, MonoidAttention, type MonoidAttentionWeights, detectDecayVariant, logDecay, monoidStep } from '../src/index.js';

const { backends, gpu } = await testBackends();

// Odd sizes, with H * D != HIDDEN so a swapped dim shows.
const [HIDDEN, H, D] = [7, 3, 5];
const HD = H * D;
const EPS = 1e-5;

const logsigmoid = (z: number) => Math.min(z, 0) - Math.log1p(Math.exp(-Math.abs(z)));
const softplus = (z: number) => Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z)));

/** Seeded normal values, rounded to f32 as the tensors hold them. */
function values(n: number, seed: number, std = 1, mean = 0): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => Math.fround(mean + std * rng.normal()));
}

type Host = Record<keyof MonoidAttentionWeights, number[]>;
type NormShape = 'shared' | 'per-head';

/** Tiny random weights of a variant: decay bias around +2 for logsigmoid and -2 for -softplus (the sign the detection rule reads). */
function hostWeights(decay: DecayVariant, norm: NormShape, seed: number, hidden = HIDDEN): Host {
  const decayOut = decay === 'scalar-logsigmoid' ? H : HD;
  const normSize = norm === 'shared' ? D : HD;
  return {
    qProj: values(HD * hidden, seed, 0.5),
    kProj: values(HD * hidden, seed + 1, 0.5),
    vProj: values(HD * hidden, seed + 2, 0.5),
    oProj: values(hidden * HD, seed + 3, 0.5),
    decayProj: values(decayOut * hidden, seed + 4, 0.5),
    decayBias: values(decayOut, seed + 5, 1.5, decay === 'vector-neg-softplus' ? -2 : 2),
    qNorm: values(normSize, seed + 6, 0.3, 1),
    kNorm: values(normSize, seed + 7, 0.3, 1),
    h0: values(H * D * D, seed + 8),
  };
}

function weightTensors(decay: DecayVariant, w: Host, backend: Backend, hidden = HIDDEN): MonoidAttentionWeights {
  const decayOut = decay === 'scalar-logsigmoid' ? H : HD;
  const shapes: Record<keyof Host, number[]> = {
    qProj: [HD, hidden],
    kProj: [HD, hidden],
    vProj: [HD, hidden],
    oProj: [hidden, HD],
    decayProj: [decayOut, hidden],
    decayBias: [decayOut],
    qNorm: [w.qNorm.length],
    kNorm: [w.kNorm.length],
    h0: [1, H, D, D],
  };
  const entries = Object.entries(w).map(([role, data]) => [role, tensor(data, shapes[role as keyof Host], { backend, name: role })]);
  return Object.fromEntries(entries) as MonoidAttentionWeights;
}

// ---- the float64 reference: spec 1.3, token by token ----

/** W [rows, cols] @ x (+ bias). */
function matvec(W: number[], rows: number, x: number[], bias?: number[]): number[] {
  const cols = x.length;
  return Array.from({ length: rows }, (_, r) => {
    let acc = bias?.[r] ?? 0;
    for (let c = 0; c < cols; c++) acc += W[r * cols + c]! * x[c]!;
    return acc;
  });
}

/** RMSNorm of each head's D values; the weight is [D] (shared) or [H*D] (one row per head). */
function headNorm(p: number[], weight: number[]): number[] {
  const out = new Array<number>(HD);
  for (let h = 0; h < H; h++) {
    let ss = 0;
    for (let i = 0; i < D; i++) ss += p[h * D + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / D + EPS);
    for (let i = 0; i < D; i++) out[h * D + i] = p[h * D + i]! * inv * weight[weight.length === D ? i : h * D + i]!;
  }
  return out;
}

/** One token: updates the state S [H, D, D] of its sequence in place and returns the layer's output [HIDDEN]. */
function referenceToken(w: Host, decay: DecayVariant, x: number[], S: number[], clamp = false): number[] {
  const q = headNorm(matvec(w.qProj, HD, x), w.qNorm).map((a) => a / Math.sqrt(D));
  const k = headNorm(matvec(w.kProj, HD, x), w.kNorm).map((a) => a / (1 + Math.exp(-a)));
  const v = matvec(w.vProj, HD, x);
  const z = matvec(w.decayProj, decay === 'scalar-logsigmoid' ? H : HD, x, w.decayBias);
  const logA = z.map((a) => (decay === 'vector-neg-softplus' ? -softplus(a) : logsigmoid(a))).map((a) => (clamp ? Math.max(a, -30) : a));
  const o = new Array<number>(HD).fill(0);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < D; i++) {
      const a = Math.exp(decay === 'scalar-logsigmoid' ? logA[h]! : logA[h * D + i]!);
      for (let j = 0; j < D; j++) S[(h * D + i) * D + j] = a * S[(h * D + i) * D + j]! + k[h * D + i]! * v[h * D + j]!;
    }
    for (let j = 0; j < D; j++) for (let i = 0; i < D; i++) o[h * D + j]! += q[h * D + i]! * S[(h * D + i) * D + j]!;
  }
  return matvec(w.oProj, HIDDEN, o);
}

/** x [B, T, HIDDEN] from the states S0 [B, H, D, D] (h0 of each row when absent): outputs [B, T, HIDDEN] and the last states. */
function reference(w: Host, decay: DecayVariant, x: number[], B: number, S0?: number[], clamp = false) {
  const T = x.length / (B * HIDDEN);
  const out: number[] = [];
  const state: number[] = [];
  for (let b = 0; b < B; b++) {
    const S = S0 ? S0.slice(b * H * D * D, (b + 1) * H * D * D) : [...w.h0];
    for (let t = 0; t < T; t++) out.push(...referenceToken(w, decay, x.slice((b * T + t) * HIDDEN, (b * T + t + 1) * HIDDEN), S, clamp));
    state.push(...S);
  }
  return { out, state };
}

/** Rows [from, to) of x [B, T, HIDDEN] as [B, to - from, HIDDEN]. */
function tokens(x: number[], B: number, T: number, from: number, to: number): number[] {
  return Array.from({ length: B }, (_, b) => x.slice((b * T + from) * HIDDEN, (b * T + to) * HIDDEN)).flat();
}

async function close(ref: number[], out: Tensor, name: string) {
  assertClose(ref, await out.data(), { name });
}

// ---- the decay op: it has its own CPU and WebGPU kernels, so it runs on every backend ----

describe.each(backends.map((b) => [b.name, b] as const))('logDecay on %s', (_name, backend) => {
  // extremes in both directions: ±100 saturate; z in [17, 30] is where log(1 + e) rounds to 0 in f32 without log1p
  const Z = [-100, -30, -20, -5, -1, -1e-3, 0, 1e-3, 1, 5, 10, 17, 20, 30, 100, ...values(37, 1, 4)].map(Math.fround);

  it.each([
    ['logsigmoid', logsigmoid],
    ['neg-softplus', (z: number) => -softplus(z)],
  ] as const)('%s equals the float64 formula, elementwise', async (gate, f) => {
    const out = await (await logDecay(tensor(Z, [Z.length], { backend }), { gate })).data();
    Z.forEach((z, i) => expect(Math.abs(out[i]! - f(z)), `z = ${z}`).toBeLessThanOrEqual(1e-30 + 2e-6 * Math.abs(f(z))));
  });

  it('clamps to the floor when asked', async () => {
    const out = await (await logDecay(tensor(Z, [4, Z.length / 4], { backend }), { gate: 'logsigmoid', floor: -30 })).data();
    expect(Math.min(...out)).toBe(-30);
    assertClose(Z.map((z) => Math.max(logsigmoid(z), -30)), out, { rtol: 2e-6 });
  });

  it('refuses an unknown gate and a positive floor', async () => {
    const z = tensor([1], [1], { backend });
    await expect(logDecay(z, { gate: 'sigmoid' as 'logsigmoid' })).rejects.toThrow(InputError);
    await expect(logDecay(z, { gate: 'logsigmoid', floor: 1 })).rejects.toThrow(InputError);
  });

  it('detectDecayVariant follows the spec rule (1.3.1)', async () => {
    const cfg = { heads: H, headDim: D };
    const t = (data: number[], shape: number[], name: string) => tensor(data, shape, { backend, name });
    const weight = (out: number) => t(values(out * HIDDEN, 3), [out, HIDDEN], 'decay_proj.weight');
    const bias = (out: number, mean: number) => t(values(out, 4, 1, mean), [out], 'decay_proj.bias');
    expect(await detectDecayVariant(weight(H), bias(H, -3), cfg)).toBe('scalar-logsigmoid');
    expect(await detectDecayVariant(weight(HD), bias(HD, 3), cfg)).toBe('vector-logsigmoid');
    expect(await detectDecayVariant(weight(HD), bias(HD, -3), cfg)).toBe('vector-neg-softplus');
    await expect(detectDecayVariant(weight(HD), t(new Array(HD).fill(0.2), [HD], 'decay_proj.bias'), cfg)).rejects.toThrow(/decay_proj\.bias.*too close to 0/);
    await expect(detectDecayVariant(weight(HD + 1), bias(HD + 1, 3), cfg)).rejects.toThrow(ShapeError);
    await expect(detectDecayVariant(weight(HD), bias(H, 3), cfg)).rejects.toThrow(/decayBias \(decay_proj\.bias\)/);
  });
});

// ---- the layer ----

// A decode step's dispatches: the q/k norms (shared or per-head weights), q's scale, k's SiLU and the decay gate
// run in the step's own dispatch (monoidStep's prologue). With hidden a multiple of 4 the four projections of x
// are one ops `linears` dispatch (HIDDEN = 7 takes separate GEMVs); W_o is the last matmul.
describe.runIf(gpu)('MonoidAttention.step on WebGPU: dispatches', () => {
  const base = { matmul: 5, 'monoid-recurrent': 1 };
  it.each([
    ['shared', HIDDEN, base],
    ['per-head', HIDDEN, base],
    ['shared', 8, { linears: 1, matmul: 1, 'monoid-recurrent': 1 }],
  ] as const)('%s norm weight, hidden %i', async (norm, hidden, expected) => {
    const g = gpu as WebGPUBackend;
    const decay = 'vector-logsigmoid';
    const attn = new MonoidAttention(weightTensors(decay, hostWeights(decay, norm, 7, hidden), g, hidden), { heads: H, headDim: D, decay });
    const state = await attn.initialState(2);
    const x = tensor(values(2 * hidden, 8), [2, hidden], { backend: g });
    const p = g.profile();
    const next = await attn.step(state, x);
    const kernels = Object.fromEntries((await p.stop()).kernels.map((k) => [k.name, k.count]));
    for (const t of [state, x, next.output, next.state]) t.dispose();
    expect(kernels).toEqual(expected);
  });
});

// monoidStep's prologue against the separate ops it replaces (rmsNorm per head, mul, silu, logDecay), on
// decay projections from -60 to +10 so the floor and both gates are exercised
const PROLOGUE_CASES = backends.flatMap((backend) =>
  ([
    { norm: 'shared', scalar: false, gate: 'logsigmoid', floor: -30, silu: true },
    { norm: 'per-head', scalar: false, gate: 'neg-softplus', floor: undefined, silu: true },
    { norm: 'per-head', scalar: true, gate: 'logsigmoid', floor: -30, silu: false },
  ] as const).map((c) => [backend.name, c.norm, c.scalar, c.gate, c.floor, c.silu, backend] as const),
);

describe.each(PROLOGUE_CASES)('monoidStep prologue on %s: %s norm, scalar decay %s, %s, floor %s, k SiLU %s', (_name, norm, scalar, gate, floor, kSilu, backend) => {
  it('equals the norms, gate and step as separate ops', async () => {
    const B = 2;
    const t = (data: number[], shape: number[]) => tensor(data, shape, { backend });
    const rng = new Rng(norm.length + (scalar ? 10 : 0));
    const q = t(values(B * HD, 1, 2), [B, H, D]);
    const k = t(values(B * HD, 2, 2), [B, H, D]);
    const v = t(values(B * HD, 3), [B, H, D]);
    const zShape = scalar ? [B, H] : [B, H, D];
    const z = t(Array.from({ length: B * (scalar ? H : HD) }, () => Math.fround(-60 + 70 * rng.uniform())), zShape);
    const normShape = norm === 'shared' ? [D] : [HD];
    const qNorm = t(values(normShape[0]!, 4, 0.1, 1), normShape);
    const kNorm = t(values(normShape[0]!, 5, 0.1, 1), normShape);
    const state = t(values(B * H * D * D, 6, 0.5), [B, H, D, D]);
    const qScale = D ** -0.5;
    const fused = await monoidStep(state, { q, k, v, logDecay: z }, { prologue: { qNorm, kNorm, eps: EPS, qScale, kActivation: kSilu ? 'silu' : undefined, gate, floor } });

    const headNorm = async (x: Tensor, w: Tensor, scale: number, act: boolean) => {
      const normed = await rmsNorm(x, null, { eps: EPS, scale });
      const weighted = await mul(normed, w.reshape(norm === 'shared' ? [D] : [H, D]));
      return act ? silu(weighted) : weighted;
    };
    const separate = await monoidStep(state, {
      q: await headNorm(q, qNorm, qScale, false),
      k: await headNorm(k, kNorm, 1, kSilu),
      v,
      logDecay: await logDecay(z, { gate, floor }),
    });
    assertClose(await separate.output.data(), await fused.output.data(), { rtol: 1e-5, name: 'output' });
    assertClose(await separate.state.data(), await fused.state.data(), { rtol: 1e-5, name: 'state' });
    if (floor !== undefined) {
      // the floor applies: on a state of ~1e15, a decay of e^-30 instead of e^-60..e^-30 shows
      const big = t(values(B * H * D * D, 7, 1e15), [B, H, D, D]);
      const p = { qNorm, kNorm, eps: EPS, qScale, kActivation: kSilu ? ('silu' as const) : undefined, gate };
      const clamped = await monoidStep(big, { q, k, v, logDecay: z }, { prologue: { ...p, floor } });
      const unclamped = await monoidStep(big, { q, k, v, logDecay: z }, { prologue: p });
      expect(Array.from(await unclamped.state.data())).not.toEqual(Array.from(await clamped.state.data()));
    }
  });
});

describe('monoidStep prologue: bad options', () => {
  it('names the field', async () => {
    const t = (shape: number[]) => tensor(values(shape.reduce((a, b) => a * b, 1), 1), shape);
    const [state, q, k, v, z] = [t([1, H, D, D]), t([1, H, D]), t([1, H, D]), t([1, H, D]), t([1, H, D])];
    const prologue = { qNorm: t([D]), kNorm: t([D]), eps: EPS, gate: 'logsigmoid' as const };
    const step = (p: object) => monoidStep(state, { q, k, v, logDecay: z }, { prologue: { ...prologue, ...p } });
    await expect(step({ qNorm: t([D + 1]) })).rejects.toThrow(/monoidStep: prologue.qNorm \(tensor\) is \[6\]; expected \[5\] or \[15\]/);
    await expect(step({ kNorm: t([HD]) })).rejects.toThrow(/prologue.kNorm .* expected \[5\]/);
    await expect(step({ eps: 0 })).rejects.toThrow(new InputError('monoidStep: prologue.eps must be a finite number > 0, got 0'));
    await expect(step({ gate: 'sigmoid' })).rejects.toThrow(/prologue.gate must be 'logsigmoid' or 'neg-softplus'/);
    await expect(step({ floor: 1 })).rejects.toThrow(/prologue.floor must be a finite number <= 0/);
    await expect(step({ kActivation: 'gelu' })).rejects.toThrow(/prologue.kActivation must be 'silu' or absent/);
  });
});

const LAYER_CASES = backends.flatMap((backend) => DECAY_VARIANTS.flatMap((decay) => (['shared', 'per-head'] as const).map((norm) => [backend.name, decay, norm, backend] as const)));

describe.each(LAYER_CASES)('MonoidAttention on %s, %s decay, %s norm weight', (_name, decay, norm, backend) => {
  const seed = DECAY_VARIANTS.indexOf(decay) * 10 + (norm === 'shared' ? 0 : 100);
  const w = hostWeights(decay, norm, seed);
  const layer = (options: { clampLogDecay?: boolean } = {}) => new MonoidAttention(weightTensors(decay, w, backend), { heads: H, headDim: D, decay, ...options });
  const t = (data: number[], shape: number[]) => tensor(data, shape, { backend, name: 'x' });
  const [B, T] = [2, 9];
  const x = values(B * T * HIDDEN, seed + 50);

  it('forward equals the float64 reference, from h0', async () => {
    const { output, state } = await layer().forward(t(x, [B, T, HIDDEN]));
    expect(output.shape).toEqual([B, T, HIDDEN]);
    expect(state.shape).toEqual([B, H, D, D]);
    expect([output.backend, state.backend]).toEqual([backend, backend]);
    const ref = reference(w, decay, x, B);
    await close(ref.out, output, 'output');
    await close(ref.state, state, 'state');
  });

  it('every scan mode gives the same layer output', async () => {
    const ref = reference(w, decay, x, B);
    for (const mode of ['recurrent', 'chunk', 'scan'] as const) await close(ref.out, (await layer().forward(t(x, [B, T, HIDDEN]), { mode, chunkSize: 4, subChunkSize: 3 })).output, mode);
  });

  it('detectDecayVariant reads the variant back from the weights', async () => {
    const { decayProj, decayBias } = weightTensors(decay, w, backend);
    expect(await detectDecayVariant(decayProj, decayBias, { heads: H, headDim: D })).toBe(decay);
  });

  it('prefill then one step per token equals the full forward', async () => {
    const attn = layer();
    const full = await attn.forward(t(x, [B, T, HIDDEN]));
    const fullOut = await full.output.data();
    const prefill = await attn.forward(t(tokens(x, B, T, 0, 4), [B, 4, HIDDEN]));
    let state = prefill.state;
    for (let i = 4; i < T; i++) {
      const next = await attn.step(state, t(tokens(x, B, T, i, i + 1), [B, HIDDEN]));
      state.dispose();
      state = next.state;
      expect(next.output.shape).toEqual([B, HIDDEN]);
      await close(tokens(Array.from(fullOut), B, T, i, i + 1), next.output, `token ${i}`);
    }
    await close(Array.from(await full.state.data()), state, 'state');
  });

  it('a residual is added to the output of forward and of step', async () => {
    const attn = layer();
    const r = values(B * T * HIDDEN, seed + 60);
    const plain = await attn.forward(t(x, [B, T, HIDDEN]));
    const withResidual = await attn.forward(t(x, [B, T, HIDDEN]), { residual: t(r, [B, T, HIDDEN]) });
    await close(Array.from(await plain.output.data(), (v, i) => v + r[i]!), withResidual.output, 'forward + residual');
    const rStep = values(B * HIDDEN, seed + 61);
    const xStep = t(tokens(x, B, T, 0, 1), [B, HIDDEN]);
    const step = await attn.step(plain.state, xStep);
    const stepWithResidual = await attn.step(plain.state, xStep, { residual: t(rStep, [B, HIDDEN]) });
    await close(Array.from(await step.output.data(), (v, i) => v + rStep[i]!), stepWithResidual.output, 'step + residual');
    await expect(attn.step(plain.state, xStep, { residual: t(rStep.slice(0, HIDDEN), [1, HIDDEN]) })).rejects.toThrow(/residual/);
  });

  it('an input norm (the layer norm before the projections) equals running on rmsNorm(x), in forward and step', async () => {
    const attn = layer();
    const norm = { weight: t(values(HIDDEN, seed + 7, 0.1, 1), [HIDDEN]), eps: EPS };
    const normed = (v: number[], shape: number[]) => rmsNorm(t(v, shape), norm.weight, { eps: EPS });
    const whole = await attn.forward(t(x, [B, T, HIDDEN]), { norm });
    const plain = await attn.forward(await normed(x, [B, T, HIDDEN]));
    await close(Array.from(await plain.output.data()), whole.output, 'forward with norm');
    const token = tokens(x, B, T, 0, 1);
    const stepped = await attn.step(whole.state, t(token, [B, HIDDEN]), { norm });
    const expected = await attn.step(whole.state, await normed(token, [B, HIDDEN]));
    await close(Array.from(await expected.output.data()), stepped.output, 'step with norm');
  });

  it('decoding from initialState() with no prompt starts at h0', async () => {
    const attn = layer();
    let state = await attn.initialState(B);
    await close([...w.h0, ...w.h0], state, 'h0 broadcast');
    const ref = reference(w, decay, x, B);
    for (let i = 0; i < T; i++) {
      const next = await attn.step(state, t(tokens(x, B, T, i, i + 1), [B, HIDDEN]));
      await close(tokens(ref.out, B, T, i, i + 1), next.output, `token ${i}`);
      state.dispose();
      state = next.state;
    }
  });

  it('initialState replaces h0', async () => {
    const S0 = values(B * H * D * D, seed + 60);
    const { output, state } = await layer().forward(t(x, [B, T, HIDDEN]), { initialState: t(S0, [B, H, D, D]) });
    const ref = reference(w, decay, x, B, S0);
    await close(ref.out, output, 'output');
    await close(ref.state, state, 'state');
  });

  it('cuSeqlens: packed sequences each start from h0', async () => {
    const [T1, T2] = [4, 5];
    const packed = x.slice(0, (T1 + T2) * HIDDEN);
    const { output, state } = await layer().forward(t(packed, [1, T1 + T2, HIDDEN]), { cuSeqlens: [0, T1, T1 + T2] });
    const a = reference(w, decay, packed.slice(0, T1 * HIDDEN), 1);
    const b = reference(w, decay, packed.slice(T1 * HIDDEN), 1);
    expect(state.shape).toEqual([2, H, D, D]);
    await close([...a.out, ...b.out], output, 'output');
    await close([...a.state, ...b.state], state, 'state');
  });

  it('clampLogDecay clamps log a at -30, in forward and in step', async () => {
    const attn = layer({ clampLogDecay: true });
    const { output, state } = await attn.forward(t(x, [B, T, HIDDEN]));
    const ref = reference(w, decay, x, B, undefined, true);
    await close(ref.out, output, 'output');
    await close(ref.state, state, 'state');
    const prefill = await attn.forward(t(tokens(x, B, T, 0, T - 1), [B, T - 1, HIDDEN]));
    const last = await attn.step(prefill.state, t(tokens(x, B, T, T - 1, T), [B, HIDDEN]));
    await close(tokens(ref.out, B, T, T - 1, T), last.output, 'step output');
    await close(ref.state, last.state, 'step state');
  });
});

describe('MonoidAttention on cpu: hygiene and errors', () => {
  const decay = 'vector-logsigmoid';
  const w = hostWeights(decay, 'shared', 1);
  const weights = () => weightTensors(decay, w, cpu);
  const config = { heads: H, headDim: D, decay } as const;

  it('forward and step leave only their results allocated', async () => {
    const attn = new MonoidAttention(weights(), config);
    const x = tensor(values(2 * 3 * HIDDEN, 2), [2, 3, HIDDEN]);
    const x1 = tensor(values(2 * HIDDEN, 3), [2, HIDDEN]);
    // storage is created by allocate and upload and given back by release
    const allocate = vi.spyOn(cpu, 'allocate');
    const upload = vi.spyOn(cpu, 'upload');
    const release = vi.spyOn(cpu, 'release');
    const live = () => allocate.mock.calls.length + upload.mock.calls.length - release.mock.calls.length;
    try {
      const { output, state } = await attn.forward(x);
      expect(live(), 'after forward: output and state').toBe(2);
      const next = await attn.step(state, x1);
      expect(live(), 'after step: and its output and state').toBe(4);
      for (const t of [output, state, next.output, next.state]) t.dispose();
    } finally {
      vi.restoreAllMocks();
    }
  });

  it('a weight of the wrong shape is a ShapeError naming it', () => {
    const bad = (role: keyof MonoidAttentionWeights, shape: number[], extra: Partial<typeof config> = {}) => () =>
      new MonoidAttention({ ...weights(), [role]: tensor(new Array(shape.reduce((a, b) => a * b, 1)).fill(0), shape, { name: `self_attn.${role}` }) }, { ...config, ...extra });
    expect(bad('kProj', [HD, HIDDEN + 1])).toThrow(new RegExp(`kProj \\(self_attn\\.kProj\\) is \\[${HD}, ${HIDDEN + 1}\\]; expected \\[${HD}, ${HIDDEN}\\]`));
    expect(bad('oProj', [HD, HIDDEN])).toThrow(ShapeError);
    expect(bad('qNorm', [D + 1])).toThrow(new RegExp(`qNorm .* expected \\[${D}\\] or \\[${HD}\\]`));
    expect(bad('h0', [H, D, D])).toThrow(/h0 \(self_attn\.h0\)/);
    expect(bad('decayBias', [H])).toThrow(/decayBias .*vector-logsigmoid/);
    // scalar-decay weights under a vector variant, and the other way round
    expect(bad('decayProj', [H, HIDDEN])).toThrow(/decayProj .*for decay 'vector-logsigmoid'/);
    expect(() => new MonoidAttention(weights(), { ...config, decay: 'scalar-logsigmoid' })).toThrow(/decayProj .*scalar-logsigmoid/);
  });

  it('missing weights, integer weights and bad config are typed errors', () => {
    const { vProj: _, ...missing } = weights();
    expect(() => new MonoidAttention(missing as MonoidAttentionWeights, config)).toThrow(new InputError('MonoidAttention: weight vProj is missing'));
    const ints = { ...weights(), oProj: tensor(new Array(HIDDEN * HD).fill(0), [HIDDEN, HD], { dtype: 'i32' }) };
    expect(() => new MonoidAttention(ints, config)).toThrow(DTypeError);
    expect(() => new MonoidAttention(weights(), { ...config, heads: 0 })).toThrow(ConfigError);
    expect(() => new MonoidAttention(weights(), { ...config, decay: 'sigmoid' as DecayVariant })).toThrow(ConfigError);
    expect(() => new MonoidAttention(weights(), { ...config, rmsNormEps: -1 })).toThrow(ConfigError);
  });

  it('bad inputs are ShapeErrors', async () => {
    const attn = new MonoidAttention(weights(), config);
    await expect(attn.forward(tensor(new Array(2 * HIDDEN + 2).fill(0), [1, 2, HIDDEN + 1], { name: 'hidden_states' }))).rejects.toThrow(/x \(hidden_states\) is \[1, 2, 8\]/);
    await expect(attn.forward(tensor(new Array(HIDDEN).fill(0), [1, HIDDEN]))).rejects.toThrow(ShapeError);
    const state = await attn.initialState(2);
    await expect(attn.step(state, tensor(new Array(HIDDEN).fill(0), [1, HIDDEN]))).rejects.toThrow(/state .* expected \[1, 3, 5, 5\]/);
  });
});

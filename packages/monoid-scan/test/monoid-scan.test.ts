import { type Backend, InputError, Rng, ShapeError, type Tensor, assertClose, cpu, tensor, zeros } from '@phalanx/core';
import { describe, expect, it } from 'vitest';
import { type MonoidScanMode, type MonoidScanOptions, monoidScan, monoidStep } from '../src/index.js';

const MODES: MonoidScanMode[] = ['recurrent', 'chunk', 'scan', 'auto'];
const RTOL = 1e-6;

type Decay = 'strong' | 'near0' | 'mixed';
const softplus = (x: number) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));

function values(n: number, seed: number, draw: (rng: Rng) => number = (r) => r.normal()): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => draw(rng));
}

/**
 * logDecay = -softplus(z): about -20 per step ('strong': in float64 too, a chunk of 64 then overflows unless
 * it is stabilised), about -0.002 ('near0'), or anywhere between.
 */
function decays(n: number, seed: number, kind: Decay): number[] {
  const shift = { strong: 20, near0: -6, mixed: 0 }[kind];
  return values(n, seed, (r) => -softplus(shift + 3 * r.normal()));
}

interface Problem {
  B: number;
  T: number;
  H: number;
  Dk: number;
  Dv: number;
  q: number[];
  k: number[];
  v: number[];
  g: number[];
  h0: number[];
  scalar: boolean;
}

/** Seeded inputs, rounded to f32 as the tensors hold them. */
function problem(B: number, T: number, H: number, Dk: number, Dv: number, seed: number, kind: Decay, scalar = false, N = B): Problem {
  const f32 = (a: number[]) => Array.from(Float32Array.from(a));
  const g = decays(B * T * H * (scalar ? 1 : Dk), seed + 3, kind);
  return {
    B, T, H, Dk, Dv, scalar,
    q: f32(values(B * T * H * Dk, seed)),
    k: f32(values(B * T * H * Dk, seed + 1)),
    v: f32(values(B * T * H * Dv, seed + 2)),
    g: f32(g),
    h0: f32(values(N * H * Dk * Dv, seed + 4)),
  };
}

function tensors(p: Problem, backend: Backend, withState = true) {
  const { B, T, H, Dk, Dv } = p;
  return {
    q: tensor(p.q, [B, T, H, Dk], { backend, name: 'q' }),
    k: tensor(p.k, [B, T, H, Dk], { backend, name: 'k' }),
    v: tensor(p.v, [B, T, H, Dv], { backend, name: 'v' }),
    logDecay: tensor(p.g, p.scalar ? [B, T, H] : [B, T, H, Dk], { backend, name: 'logDecay' }),
    initialState: withState ? tensor(p.h0, [p.h0.length / (H * Dk * Dv), H, Dk, Dv], { backend, name: 'h0' }) : undefined,
  };
}

/** The test's own float64 recurrence over sequences [start, end) of batch row b, state n. */
function reference(p: Problem, seqs: [b: number, start: number, end: number][] = Array.from({ length: p.B }, (_, b) => [b, 0, p.T])) {
  const { T, H, Dk, Dv } = p;
  const out: number[] = [];
  const fin: number[] = [];
  seqs.forEach(([b, start, end], n) => {
    for (let h = 0; h < H; h++) {
      const S = p.h0.slice((n * H + h) * Dk * Dv, (n * H + h + 1) * Dk * Dv);
      for (let t = start; t < end; t++) {
        const row = (b * T + t) * H + h;
        for (let i = 0; i < Dk; i++)
          for (let j = 0; j < Dv; j++) S[i * Dv + j] = Math.exp(p.g[p.scalar ? row : row * Dk + i]!) * S[i * Dv + j]! + p.k[row * Dk + i]! * p.v[row * Dv + j]!;
        for (let j = 0; j < Dv; j++) {
          let acc = 0;
          for (let i = 0; i < Dk; i++) acc += p.q[row * Dk + i]! * S[i * Dv + j]!;
          out[row * Dv + j] = acc;
        }
      }
      fin.push(...S);
    }
  });
  return { out, fin };
}

/** Tokens [from, to) of every batch row, starting from state h0. */
function tokens(p: Problem, from: number, to: number, h0: number[]): Problem {
  const rows = (a: number[], w: number) => Array.from({ length: p.B }, (_, b) => a.slice((b * p.T + from) * p.H * w, (b * p.T + to) * p.H * w)).flat();
  return { ...p, T: to - from, q: rows(p.q, p.Dk), k: rows(p.k, p.Dk), v: rows(p.v, p.Dv), g: rows(p.g, p.scalar ? 1 : p.Dk), h0 };
}

async function check(result: { output: Tensor; finalState: Tensor }, ref: { out: number[]; fin: number[] }, name: string) {
  assertClose(ref.out, await result.output.data(), { rtol: RTOL, name: `${name} output` });
  assertClose(ref.fin, await result.finalState.data(), { rtol: RTOL, name: `${name} finalState` });
}

describe('monoidScan on cpu: every mode equals the float64 recurrence', () => {
  const CASES: [T: number, kind: Decay, scalar: boolean][] = [
    [1, 'mixed', false],
    [7, 'strong', false],
    [63, 'near0', false],
    [130, 'mixed', false],
    [130, 'strong', false],
    [130, 'strong', true],
    [63, 'near0', true],
  ];
  // chunk sizes that do not divide T, sub-chunks that do not divide the chunk, and one sub-chunk per chunk
  const CHUNKS: MonoidScanOptions[] = [{}, { chunkSize: 16, subChunkSize: 5 }, { chunkSize: 9, subChunkSize: 2 }, { chunkSize: 5, subChunkSize: 8 }];
  it.each(CASES)('T=%i, %s decay, scalar=%s', async (T, kind, scalar) => {
    const p = problem(2, T, 3, 5, 3, T, kind, scalar);
    const ref = reference(p);
    const x = tensors(p, cpu);
    for (const mode of MODES) {
      for (const chunk of mode === 'chunk' ? CHUNKS : [{}]) {
        const r = await monoidScan(x, { mode, ...chunk });
        expect(r.output.shape).toEqual([2, T, 3, 3]);
        expect(r.finalState.shape).toEqual([2, 3, 5, 3]);
        await check(r, ref, `${mode} ${JSON.stringify(chunk)}`);
      }
    }
  });

  it('no initial state starts from zeros', async () => {
    const p = problem(1, 20, 2, 4, 6, 7, 'mixed');
    p.h0.fill(0);
    for (const mode of MODES) await check(await monoidScan(tensors(p, cpu, false), { mode, chunkSize: 8, subChunkSize: 3 }), reference(p), mode);
  });

  it('scalar decay equals the vector decay with every key dim equal', async () => {
    const p = problem(2, 33, 2, 4, 5, 8, 'mixed', true);
    const vec = { ...p, scalar: false, g: p.g.flatMap((g) => new Array<number>(p.Dk).fill(g)) };
    for (const mode of MODES) {
      const a = await monoidScan(tensors(p, cpu), { mode, chunkSize: 8 });
      const b = await monoidScan(tensors(vec, cpu), { mode, chunkSize: 8 });
      assertClose(await b.output.data(), await a.output.data(), { rtol: RTOL, name: `${mode} output` });
      assertClose(await b.finalState.data(), await a.finalState.data(), { rtol: RTOL, name: `${mode} state` });
    }
  });

  it('two halves chained through the state equal one call', async () => {
    const p = problem(2, 41, 2, 6, 4, 9, 'mixed');
    const whole = reference(p);
    const cut = 17;
    for (const mode of MODES) {
      const first = await monoidScan(tensors(tokens(p, 0, cut, p.h0), cpu), { mode, chunkSize: 8 });
      const second = await monoidScan({ ...tensors(tokens(p, cut, p.T, []), cpu, false), initialState: first.finalState }, { mode, chunkSize: 8 });
      const o1 = await first.output.data();
      const o2 = await second.output.data();
      const joined = Array.from({ length: p.B }, (_, b) => [...o1.slice(b * cut * p.H * p.Dv, (b + 1) * cut * p.H * p.Dv), ...o2.slice(b * (p.T - cut) * p.H * p.Dv, (b + 1) * (p.T - cut) * p.H * p.Dv)]).flat();
      assertClose(whole.out, joined, { rtol: RTOL, name: `${mode} output` });
      assertClose(whole.fin, await second.finalState.data(), { rtol: RTOL, name: `${mode} state` });
    }
  });

  it.each([false, true])('prefill + monoidStep decode equals the full forward (scalar=%s)', async (scalar) => {
    const p = problem(3, 12, 2, 5, 4, 10, 'mixed', scalar);
    const whole = reference(p);
    const prefill = 5;
    const { B, T, H, Dk, Dv } = p;
    let state = (await monoidScan(tensors(tokens(p, 0, prefill, p.h0), cpu), { mode: 'chunk', chunkSize: 4 })).finalState;
    for (let t = prefill; t < T; t++) {
      // token t as [B, 1, H, D], which is laid out as [B, H, D]
      const x = tensors(tokens(p, t, t + 1, []), cpu, false);
      const step = await monoidStep(state, {
        q: x.q.reshape([B, H, Dk]),
        k: x.k.reshape([B, H, Dk]),
        v: x.v.reshape([B, H, Dv]),
        logDecay: x.logDecay.reshape(scalar ? [B, H] : [B, H, Dk]),
      });
      expect(step.output.shape).toEqual([B, H, Dv]);
      const expected = Array.from({ length: B }, (_, b) => whole.out.slice((b * T + t) * H * Dv, (b * T + t + 1) * H * Dv)).flat();
      assertClose(expected, await step.output.data(), { rtol: RTOL, name: `step ${t}` });
      state = step.state;
    }
    assertClose(whole.fin, await state.data(), { rtol: RTOL, name: 'state after decode' });
  });

  it('cuSeqlens: packed sequences (one empty) equal separate calls', async () => {
    const cu = [0, 3, 3, 20, 27];
    const N = cu.length - 1;
    const p = problem(1, 27, 2, 3, 4, 11, 'mixed', false, N);
    const stateSize = p.H * p.Dk * p.Dv;
    for (const mode of MODES) {
      const options = { mode, chunkSize: 4, subChunkSize: 3 };
      const packed = await monoidScan(tensors(p, cpu), { ...options, cuSeqlens: cu });
      expect(packed.finalState.shape).toEqual([N, 2, 3, 4]);
      const out: number[] = [];
      const fin: number[] = [];
      for (let n = 0; n < N; n++) {
        const one = await monoidScan(tensors(tokens(p, cu[n]!, cu[n + 1]!, p.h0.slice(n * stateSize, (n + 1) * stateSize)), cpu), options);
        out.push(...(await one.output.data()));
        fin.push(...(await one.finalState.data()));
      }
      await check(packed, { out, fin }, mode);
    }
  });

  it('left padding with k = v = 0 and logDecay = 0 is the identity', async () => {
    const p = problem(1, 10, 2, 4, 3, 12, 'mixed');
    const pad = 6;
    const { H, Dk, Dv } = p;
    const padded = { ...p, T: p.T + pad, k: [...new Array<number>(pad * H * Dk).fill(0), ...p.k], v: [...new Array<number>(pad * H * Dv).fill(0), ...p.v], g: [...new Array<number>(pad * H * Dk).fill(0), ...p.g], q: [...p.q.slice(0, pad * H * Dk), ...p.q] };
    const ref = reference(p);
    for (const mode of MODES) {
      const r = await monoidScan(tensors(padded, cpu), { mode, chunkSize: 4, subChunkSize: 3 });
      assertClose(ref.out, (await r.output.data()).slice(pad * H * Dv), { rtol: RTOL, name: `${mode} output` });
      assertClose(ref.fin, await r.finalState.data(), { rtol: RTOL, name: `${mode} state` });
    }
  });

  it('refuses bad shapes and options with typed errors naming the tensor', async () => {
    const x = tensors(problem(2, 4, 2, 3, 5, 13, 'mixed'), cpu);
    const bad = (shape: number[], name: string) => tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, { name });
    await expect(monoidScan({ ...x, k: bad([2, 4, 2, 4], 'k_proj') })).rejects.toThrow(ShapeError);
    await expect(monoidScan({ ...x, k: bad([2, 4, 2, 4], 'k_proj') })).rejects.toThrow(/k \(k_proj\) is \[2, 4, 2, 4\]; expected \[2, 4, 2, 3\]/);
    await expect(monoidScan({ ...x, v: bad([2, 3, 2, 5], 'vv') })).rejects.toThrow(/v \(vv\)/);
    await expect(monoidScan({ ...x, logDecay: bad([2, 4, 3], 'gate') })).rejects.toThrow(/logDecay \(gate\) is \[2, 4, 3\]; expected \[2, 4, 2, 3\] or \[2, 4, 2\]/);
    await expect(monoidScan({ ...x, initialState: bad([1, 2, 3, 5], 'h0') })).rejects.toThrow(/initialState \(h0\)/);
    await expect(monoidScan({ ...x, q: bad([2, 4, 6], 'query') })).rejects.toThrow(/q \(query\) is \[2, 4, 6\]/);
    await expect(monoidScan(x, { cuSeqlens: [0, 4] })).rejects.toThrow(/must have B = 1/);
    const one = tensors(problem(1, 4, 2, 3, 5, 14, 'mixed'), cpu, false);
    await expect(monoidScan(one, { cuSeqlens: [0, 3, 2, 4] })).rejects.toThrow(InputError);
    await expect(monoidScan(one, { cuSeqlens: [0, 3] })).rejects.toThrow(/from 0 to T = 4/);
    await expect(monoidScan({ ...one, initialState: bad([1, 2, 3, 5], 'h0') }, { cuSeqlens: [0, 1, 4] })).rejects.toThrow(/h0\) is \[1, 2, 3, 5\]; expected \[2, 2, 3, 5\]/);
    await expect(monoidScan(one, { mode: 'chunk', chunkSize: 0 })).rejects.toThrow(/chunkSize must be a positive integer/);
    await expect(monoidScan(one, { mode: 'fast' as MonoidScanMode })).rejects.toThrow(/unknown mode 'fast'/);
    await expect(monoidScan({ ...one, q: tensor(new Int32Array(24), [1, 4, 2, 3]) })).rejects.toThrow(/monoidScan: q is i32, expected f32, f16 or bf16/);
    const state = zeros([2, 2, 3, 5], { name: 'S' });
    const step = { q: bad([2, 2, 3], 'q'), k: bad([2, 2, 3], 'k'), v: bad([2, 2, 5], 'v'), logDecay: bad([2, 2], 'g') };
    await expect(monoidStep(state, { ...step, v: bad([2, 2, 4], 'v1') })).rejects.toThrow(/monoidStep: v \(v1\) is \[2, 2, 4\]; expected \[2, 2, 5\]/);
    await expect(monoidStep(zeros([2, 2, 3]), step)).rejects.toThrow(ShapeError);
  });
});

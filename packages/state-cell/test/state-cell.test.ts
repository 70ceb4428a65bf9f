import { type Backend, CheckpointError, DTypeError, type DType, InputError, Rng, ShapeError, type Tensor, assertClose, cpu, tensor } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { CHECKPOINT_NAMES, type StateCellOptions, type StateCellParams, loadStateCellParams, stateCell } from '../src/index.js';

const { backends } = await testBackends();

function values(n: number, seed: number, scale = 1): number[] {
  const rng = new Rng(seed);
  return Array.from(Float32Array.from({ length: n }, () => rng.normal() * scale));
}

interface Case extends StateCellOptions {
  rows: number;
  d: number;
  hidden: number;
  perHead?: boolean;
  biases?: boolean;
}

/** Plain-number parameters of a case, rounded to `dtype` like the tensors made from them. */
function paramValues(c: Case, seed: number) {
  const { heads = 16, d, hidden, perHead = false, biases = true } = c;
  const D = heads * d;
  const lead = perHead ? heads : 1;
  const pre = c.preNormOver === 'state' ? D : d;
  const post = c.postNormOver === 'head' ? d : D;
  const withBias = biases && c.norm !== 'rms';
  return {
    stepSize: values(heads, seed, 0.3),
    fc1W: values(lead * hidden * d, seed + 1, 1 / Math.sqrt(d)),
    fc1B: biases ? values(lead * hidden, seed + 2, 0.1) : undefined,
    fc2W: values(lead * d * hidden, seed + 3, 1 / Math.sqrt(hidden)),
    fc2B: biases ? values(lead * d, seed + 4, 0.1) : undefined,
    preW: values(pre, seed + 5, 0.2).map((x) => 1 + x),
    preB: withBias ? values(pre, seed + 6, 0.1) : undefined,
    postW: values(post, seed + 7, 0.2).map((x) => 1 + x),
    postB: withBias ? values(post, seed + 8, 0.1) : undefined,
  };
}

type Values = ReturnType<typeof paramValues>;

function params(c: Case, v: Values, backend: Backend, dtype: DType = 'f32'): StateCellParams {
  const { heads = 16, d, hidden, perHead = false } = c;
  const lead = perHead ? [heads] : [];
  const t = (x: number[] | undefined, shape: number[], name: string) => (x ? tensor(x, shape, { backend, dtype, name }) : null);
  return {
    stepSize: t(v.stepSize, [heads], 'eta')!,
    fc1: { weight: t(v.fc1W, [...lead, hidden, d], 'fc1')!, bias: t(v.fc1B, [...lead, hidden], 'fc1b') },
    fc2: { weight: t(v.fc2W, [...lead, d, hidden], 'fc2')!, bias: t(v.fc2B, [...lead, d], 'fc2b') },
    preNorm: { weight: t(v.preW, [v.preW.length], 'pre'), bias: t(v.preB, [v.preW.length], 'preb') },
    postNorm: { weight: t(v.postW, [v.postW.length], 'post'), bias: t(v.postB, [v.postW.length], 'postb') },
  };
}

const erf = (x: number) => {
  // enough terms of the Maclaurin series for |x| < 4 (the test's pre-activations stay well inside)
  let sum = 0;
  let term = x;
  for (let n = 0; n < 80; n++) {
    sum += term / (2 * n + 1);
    term *= (-x * x) / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
};

/** The test's own float64 cell: per row, K times, S_h += eta_h fc2(act(fc1(Norm_pre(S)_h))), then Norm_post(S). */
function reference(S: number[], c: Case, v: Values): number[] {
  const { heads = 16, d, hidden, perHead = false, steps = 1, norm = 'layer', eps = 1e-5, activation = 'gelu' } = c;
  const D = heads * d;
  const act = activation === 'gelu' ? (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2)) : (x: number) => x / (1 + Math.exp(-x));
  const normed = (x: number[], size: number, w: number[], b?: number[]) =>
    x.map((_, i) => {
      const g = x.slice(Math.floor(i / size) * size, Math.floor(i / size) * size + size);
      const mean = norm === 'layer' ? g.reduce((p, q) => p + q, 0) / size : 0;
      const variance = g.reduce((p, q) => p + (q - mean) ** 2, 0) / size;
      return ((x[i]! - mean) / Math.sqrt(variance + eps)) * w[i % size]! + (b ? b[i % size]! : 0);
    });
  const out: number[] = [];
  for (let r = 0; r < S.length / D; r++) {
    let s = S.slice(r * D, (r + 1) * D);
    for (let k = 0; k < steps; k++) {
      const n = normed(s, c.preNormOver === 'state' ? D : d, v.preW, v.preB);
      s = s.map((x, i) => {
        const h = Math.floor(i / d);
        const j = i % d;
        const q = perHead ? h : 0;
        let y = v.fc2B ? v.fc2B[q * d + j]! : 0;
        for (let m = 0; m < hidden; m++) {
          let a = v.fc1B ? v.fc1B[q * hidden + m]! : 0;
          for (let jj = 0; jj < d; jj++) a += v.fc1W[(q * hidden + m) * d + jj]! * n[h * d + jj]!;
          y += v.fc2W[(q * d + j) * hidden + m]! * act(a);
        }
        return x + v.stepSize[h]! * y;
      });
      s = normed(s, c.postNormOver === 'head' ? d : D, v.postW, v.postB);
    }
    out.push(...s);
  }
  return out;
}

const dispose = (p: StateCellParams) => [p.stepSize, p.fc1.weight, p.fc1.bias, p.fc2.weight, p.fc2.bias, p.preNorm.weight, p.preNorm.bias, p.postNorm.weight, p.postNorm.bias].forEach((t) => t?.dispose());

describe.each(backends)('stateCell on $name', (backend) => {
  const rtol = backend === cpu ? 1e-6 : 2e-5;

  const CASES: Case[] = [
    { rows: 1, heads: 16, d: 32, hidden: 64 }, // the spec's sizes, defaults
    { rows: 3, heads: 4, d: 5, hidden: 7, steps: 3, norm: 'rms', activation: 'silu' },
    { rows: 2, heads: 3, d: 6, hidden: 9, perHead: true, preNormOver: 'state', postNormOver: 'head', steps: 2 },
    { rows: 5, heads: 2, d: 3, hidden: 4, biases: false, steps: 0 },
  ];
  it.each(CASES)('%j equals the float64 reference', async (c) => {
    const v = paramValues(c, c.rows);
    const D = (c.heads ?? 16) * c.d;
    const S = values(c.rows * D, 100 + c.rows);
    const p = params(c, v, backend);
    const x = tensor(S, [c.rows, D], { backend, name: 'S' });
    const y = await stateCell(x, p, c);
    expect(y.shape).toEqual([c.rows, D]);
    assertClose(reference(S, c, v), await y.data(), { rtol, name: JSON.stringify(c) });
    [x, y].forEach((t) => t.dispose());
    dispose(p);
  });

  it('f16 / bf16 state and parameters, leading dims kept', async () => {
    const c: Case = { rows: 6, heads: 4, d: 8, hidden: 12, steps: 2 };
    for (const dtype of ['f16', 'bf16'] as const) {
      const p = params(c, paramValues(c, 7), backend, dtype);
      // the reference sees the parameters as rounded to dtype
      const read = async (t: Tensor | null | undefined) => (t ? Array.from(await t.data()) : undefined);
      const v = {
        stepSize: (await read(p.stepSize))!, fc1W: (await read(p.fc1.weight))!, fc1B: await read(p.fc1.bias), fc2W: (await read(p.fc2.weight))!, fc2B: await read(p.fc2.bias),
        preW: (await read(p.preNorm.weight))!, preB: await read(p.preNorm.bias), postW: (await read(p.postNorm.weight))!, postB: await read(p.postNorm.bias),
      };
      const x = tensor(values(6 * 32, 8), [2, 3, 32], { backend, dtype });
      const y = await stateCell(x, p, c);
      expect(y.shape).toEqual([2, 3, 32]);
      expect(y.dtype).toBe('f32');
      assertClose(reference(Array.from(await x.data()), c, v), await y.data(), { rtol, name: dtype });
      [x, y].forEach((t) => t.dispose());
      dispose(p);
    }
  });

  it('K steps equal K single steps (a fixed-point iteration of one Euler step)', async () => {
    const c: Case = { rows: 2, heads: 4, d: 4, hidden: 8 };
    const p = params(c, paramValues(c, 9), backend);
    const x = tensor(values(2 * 16, 10), [2, 16], { backend });
    let y = x;
    for (let k = 0; k < 3; k++) y = await stateCell(y, p, c);
    const once = await stateCell(x, p, { ...c, steps: 3 });
    assertClose(await y.data(), await once.data(), { rtol });
    dispose(p);
  });
});

describe('loadStateCellParams', () => {
  const prefix = 'model.layers.2.state_cell.';
  const c: Case = { rows: 1, heads: 2, d: 4, hidden: 3 };
  const v = paramValues(c, 11);
  const p = params(c, v, cpu);
  const checkpoint = new Map<string, Tensor>([
    [prefix + CHECKPOINT_NAMES.stepSize, p.stepSize],
    [prefix + 'mlp.fc1.weight', p.fc1.weight],
    [prefix + 'mlp.fc1.bias', p.fc1.bias!],
    [prefix + 'mlp.fc2.weight', p.fc2.weight],
    [prefix + 'mlp.fc2.bias', p.fc2.bias!],
    [prefix + 'pre_norm.weight', p.preNorm.weight!],
    [prefix + 'pre_norm.bias', p.preNorm.bias!],
    [prefix + 'post_norm.weight', p.postNorm.weight!],
    [prefix + 'post_norm.bias', p.postNorm.bias!],
    ['model.layers.3.state_cell.step_size', p.stepSize],
  ]);

  it('maps the documented names and runs', async () => {
    const loaded = loadStateCellParams(checkpoint, prefix);
    const S = values(8, 12);
    const y = await stateCell(tensor(S, [1, 8]), loaded, c);
    assertClose(reference(S, c, v), await y.data(), { rtol: 1e-6 });
  });

  it('fails loudly on missing and unknown tensors; renames', () => {
    const missing = new Map(checkpoint);
    missing.delete(prefix + 'mlp.fc2.weight');
    expect(() => loadStateCellParams(missing, prefix)).toThrow(CheckpointError);
    expect(() => loadStateCellParams(missing, prefix, { file: 'nh.safetensors' })).toThrow(/nh.safetensors: missing state-cell tensor model.layers.2.state_cell.mlp.fc2.weight/);
    const extra = new Map(checkpoint).set(prefix + 'gate.weight', p.stepSize);
    expect(() => loadStateCellParams(extra, prefix)).toThrow(/unknown state-cell tensors model.layers.2.state_cell.gate.weight/);
    const renamed = new Map([...checkpoint].map(([k, t]) => [k.replace('step_size', 'eta'), t]));
    expect(loadStateCellParams(renamed, prefix, { names: { stepSize: 'eta' } }).stepSize).toBe(p.stepSize);
  });
});

describe('typed errors', () => {
  const c: Case = { rows: 1, heads: 2, d: 4, hidden: 3 };
  const p = params(c, paramValues(c, 13), cpu);
  const S = tensor(values(8, 14), [1, 8], { name: 'S' });
  it('refuses bad shapes, dtypes and options', async () => {
    await expect(stateCell(S, p, { heads: 3 })).rejects.toThrow(/heads must be a positive integer dividing D = 8, got 3/);
    await expect(stateCell(S, p, { heads: 4 })).rejects.toThrow(ShapeError);
    await expect(stateCell(S, { ...p, fc2: { weight: tensor(values(12, 1), [3, 4], { name: 'w2' }) } }, c)).rejects.toThrow(/fc2.weight \(w2\) is \[3, 4\]; expected \[4, 3\]/);
    await expect(stateCell(S, { ...p, postNorm: { weight: tensor(values(4, 1), [4], { name: 'pw' }) } }, c)).rejects.toThrow(/postNorm.weight \(pw\) is \[4\]; expected \[8\]/);
    await expect(stateCell(S, p, { ...c, norm: 'rms' })).rejects.toThrow(/preNorm.bias is given but norm 'rms' has no bias/);
    await expect(stateCell(S, p, { ...c, norm: 'batch' as 'rms' })).rejects.toThrow(InputError);
    await expect(stateCell(S, p, { ...c, activation: 'relu' as 'silu' })).rejects.toThrow(/activation must be 'gelu' or 'silu'/);
    await expect(stateCell(S, p, { ...c, steps: -1 })).rejects.toThrow(/steps must be an integer >= 0/);
    await expect(stateCell(tensor(new Int32Array(8), [1, 8]), p, c)).rejects.toThrow(DTypeError);
    await expect(stateCell(S, { ...p, stepSize: tensor(new Int32Array(2), [2], { name: 'eta' }) }, c)).rejects.toThrow(/stateCell: eta is i32/);
  });
});

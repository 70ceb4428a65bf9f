/**
 * State-cell benchmark cases (component `state-cell`): the per-token decode cost of the fused cell (one row,
 * one dispatch) for K = 1, 2, 4 Euler steps, and prefill rows/s (one row per token). NanoHammer's sizes:
 * D = 512, 16 heads of 32; the MLP width is unknown (spec 2.6), 64 and 128 are tried.
 * Run by tools/bench: `npx phalanx bench state-cell [--quick] [--case NAME]...`.
 */
import { type Backend, type Tensor, full, randn } from '@phalanx/core';
import { type CaseContext, type Timed, defineCases } from '../../../tools/bench/harness.js';
import { type StateCellParams, stateCell } from '../src/index.js';

interface Case {
  name: string;
  rows: number;
  hidden: number;
  steps: number;
}

const HEADS = 16;
const D = 512;
const d = D / HEADS;

const FULL: Case[] = [
  ...[1, 2, 4].map((steps) => ({ name: `decode-K${steps}-h64`, rows: 1, hidden: 64, steps })),
  { name: 'decode-K1-h128', rows: 1, hidden: 128, steps: 1 },
  { name: 'decode-K1-h64-rows16', rows: 16, hidden: 64, steps: 1 },
  ...[1024, 4096].map((rows) => ({ name: `prefill-K1-h64-T${rows}`, rows, hidden: 64, steps: 1 })),
];

const QUICK: Case[] = [FULL[0]!, { name: 'prefill-K1-h64-T64', rows: 64, hidden: 64, steps: 1 }];

function params(g: Backend, hidden: number): StateCellParams {
  return {
    stepSize: randn([HEADS], { seed: 1, std: 0.1, backend: g }),
    preNorm: { weight: full([d], 1, { backend: g }), bias: randn([d], { seed: 2, std: 0.1, backend: g }) },
    fc1: { weight: randn([hidden, d], { seed: 3, std: 1 / Math.sqrt(d), backend: g }), bias: randn([hidden], { seed: 4, std: 0.1, backend: g }) },
    fc2: { weight: randn([d, hidden], { seed: 5, std: 1 / Math.sqrt(hidden), backend: g }), bias: randn([d], { seed: 6, std: 0.1, backend: g }) },
    postNorm: { weight: full([D], 1, { backend: g }), bias: randn([D], { seed: 7, std: 0.1, backend: g }) },
  };
}

async function setup(ctx: CaseContext, c: Case): Promise<Timed> {
  const g = ctx.backend;
  const p = params(g, c.hidden);
  const S = randn([c.rows, D], { seed: 8, backend: g });
  return {
    run: async () => (await stateCell(S, p, { heads: HEADS, steps: c.steps })).dispose(),
    derive: (ms) => ({ rowsPerS: c.rows / (ms / 1000) }),
    dispose: () =>
      [S, p.stepSize, p.preNorm.weight, p.preNorm.bias, p.fc1.weight, p.fc1.bias, p.fc2.weight, p.fc2.bias, p.postNorm.weight, p.postNorm.bias].forEach((t) => (t as Tensor | null | undefined)?.dispose()),
  };
}

/** Every case once: those of the quick set also run on the CPU backend (they are small). */
const spec = (c: Case) => {
  const quick = QUICK.some((q) => q.name === c.name);
  const full = FULL.some((f) => f.name === c.name);
  return {
    name: c.name,
    shape: { rows: c.rows, hidden: c.hidden, steps: c.steps, D, heads: HEADS },
    sets: [...(full ? ['full' as const] : []), ...(quick ? ['quick' as const] : [])],
    backends: quick ? (['webgpu', 'cpu'] as const) : (['webgpu'] as const),
    reps: [20, 3] as const,
    setup: (ctx: CaseContext) => setup(ctx, c),
  };
};

export const cases = defineCases('state-cell', [...FULL, ...QUICK.filter((q) => !FULL.some((f) => f.name === q.name))].map(spec));

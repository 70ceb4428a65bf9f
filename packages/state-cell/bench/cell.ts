/**
 * State-cell benchmark on WebGPU: the per-token decode cost of the fused cell (one row, one dispatch) for
 * K = 1, 2, 4 Euler steps, and prefill rows/s (one row per token). NanoHammer's sizes: D = 512, 16 heads of
 * 32; the MLP width is unknown (spec 2.6), 64 and 128 are tried.
 * A script until tools/bench exists: `node cell.ts [--quick] [--case NAME]...`. Each result is one JSON line
 * on stdout: wall-clock per call (median, each call ended by a sync) and GPU time from timestamp queries.
 */
import { type Tensor, full, randn } from '@phalanx/core';
import { type WebGPUBackend, createWebGPUBackend, measure } from '@phalanx/webgpu';
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

function params(g: WebGPUBackend, hidden: number): StateCellParams {
  return {
    stepSize: randn([HEADS], { seed: 1, std: 0.1, backend: g }),
    preNorm: { weight: full([d], 1, { backend: g }), bias: randn([d], { seed: 2, std: 0.1, backend: g }) },
    fc1: { weight: randn([hidden, d], { seed: 3, std: 1 / Math.sqrt(d), backend: g }), bias: randn([hidden], { seed: 4, std: 0.1, backend: g }) },
    fc2: { weight: randn([d, hidden], { seed: 5, std: 1 / Math.sqrt(hidden), backend: g }), bias: randn([d], { seed: 6, std: 0.1, backend: g }) },
    postNorm: { weight: full([D], 1, { backend: g }), bias: randn([D], { seed: 7, std: 0.1, backend: g }) },
  };
}

async function run(g: WebGPUBackend, c: Case, reps: number) {
  const p = params(g, c.hidden);
  const S = randn([c.rows, D], { seed: 8, backend: g });
  const fn = async () => (await stateCell(S, p, { heads: HEADS, steps: c.steps })).dispose();
  const wall = await measure(g, fn, { warmup: 3, repeats: reps });
  const prof = g.profile('timestamp');
  for (let i = 0; i < reps; i++) await fn();
  await g.sync();
  const gpuMs = (await prof.stop()).totalMs / reps;
  [S, p.stepSize, p.preNorm.weight, p.preNorm.bias, p.fc1.weight, p.fc1.bias, p.fc2.weight, p.fc2.bias, p.postNorm.weight, p.postNorm.bias].forEach((t) => (t as Tensor | null | undefined)?.dispose());
  return { ...c, D, heads: HEADS, firstMs: wall.firstMs, wallMs: wall.medianMs, gpuMs, rowsPerS: c.rows / (gpuMs / 1000) };
}

async function main() {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const only = args.flatMap((a, i) => (args[i - 1] === '--case' ? [a] : []));
  const option = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  const reps = Number(option('--reps')) || (quick ? 3 : 20);
  const cases = (quick ? QUICK : FULL).filter((c) => only.length === 0 || only.includes(c.name));
  const g = await createWebGPUBackend({ maxPassesPerSubmit: 8, dawnFlags: ['enable-dawn-features=allow_unsafe_apis', 'disable-dawn-features=timestamp_quantization'] });
  const device = `${g.info.vendor} ${g.info.architecture} ${g.info.description}`.trim();
  console.error(`device: ${device}`);
  for (const c of cases) console.log(JSON.stringify({ device, date: new Date().toISOString().slice(0, 10), ...(await run(g, c, reps)) }));
  g.dispose();
}

await main();

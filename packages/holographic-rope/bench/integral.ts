/**
 * Holographic integral benchmark on WebGPU: per-token decode cost against the position (it should not grow:
 * the recurrence forms no angle from the position) and prefill tokens/s of each form.
 * A script until tools/bench exists: `node integral.ts [--quick] [--case NAME]...`. Each result is one JSON
 * line on stdout: wall-clock per call (median, each call ended by a sync) and GPU time per call from
 * timestamp queries (every pass of the call summed).
 */
import { type Tensor, randn } from '@phalanx/core';
import { type WebGPUBackend, createWebGPUBackend, measure } from '@phalanx/webgpu';
import { type HolographicMode, holographicIntegral, holographicStep } from '../src/index.js';

interface Case {
  name: string;
  kind: 'decode' | 'prefill';
  B: number;
  /** Tokens of a prefill (1 for a decode step). */
  T: number;
  /** Position of a decode step. */
  position?: number;
  D: number;
  mode?: HolographicMode;
}

const decode = (position: number): Case => ({ name: `decode-pos${position}`, kind: 'decode', B: 1, T: 1, position, D: 512 });
const prefill = (T: number, mode: HolographicMode, B = 1): Case => ({ name: `prefill-${mode}-B${B}-T${T}`, kind: 'prefill', B, T, D: 512, mode });

// D = 512: NanoHammer's state (spec 2.3); B = 16 stands in for a batch of sequences, or 16 layers at once
const FULL: Case[] = [
  ...[0, 1024, 16384, 131071].map(decode),
  { ...decode(131071), name: 'decode-pos131071-B16', B: 16 },
  ...[1024, 4096, 16384].flatMap((T) => (['chunk', 'recurrent', 'direct'] as const).map((m) => prefill(T, m))),
  prefill(4096, 'chunk', 16),
];

const QUICK: Case[] = [decode(0), decode(131071), prefill(256, 'chunk'), prefill(256, 'recurrent')];

/** Wall-clock and GPU time of one call of `fn`. */
async function time(g: WebGPUBackend, fn: () => Promise<void>, reps: number) {
  const wall = await measure(g, fn, { warmup: 3, repeats: reps });
  const p = g.profile('timestamp');
  for (let i = 0; i < reps; i++) await fn();
  await g.sync();
  const report = await p.stop();
  return { firstMs: wall.firstMs, wallMs: wall.medianMs, gpuMs: report.totalMs / reps, kernels: report.kernels.map((k) => ({ name: k.name, medianMs: k.medianMs })) };
}

async function run(g: WebGPUBackend, c: Case, reps: number) {
  const { B, T, D } = c;
  const dispose = (...ts: Tensor[]) => ts.forEach((t) => t.dispose());
  if (c.kind === 'decode') {
    const state = randn([B, D], { seed: 1, backend: g });
    const z = randn([B, D], { seed: 2, backend: g });
    const t = await time(g, async () => {
      const r = await holographicStep(state, z, { position: c.position, normalize: 'sqrt' });
      dispose(r.output, r.state);
    }, reps);
    dispose(state, z);
    return { ...c, ...t, usPerToken: (t.gpuMs * 1000) / B };
  }
  const z = randn([B, T, D], { seed: 3, backend: g });
  const t = await time(g, async () => {
    const r = await holographicIntegral(z, { mode: c.mode });
    dispose(r.output, r.finalState);
  }, reps);
  z.dispose();
  return { ...c, ...t, tokensPerS: (B * T) / (t.gpuMs / 1000), wallTokensPerS: (B * T) / (t.wallMs / 1000) };
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

/**
 * Holographic integral benchmark on WebGPU: per-token decode cost against the position (it should not grow:
 * the recurrence forms no angle from the position) and prefill tokens/s of each form.
 * A script until tools/bench exists: `node integral.ts [--quick] [--case NAME]...`. Each result is one JSON
 * line on stdout: GPU time per call from timestamp queries (every kernel of the call, medians summed) and
 * wall-clock time per call.
 */
import { type Tensor, randn } from '@phalanx/core';
import { type WebGPUBackend, timeOnGpu } from '@phalanx/webgpu';
import { benchMain } from '../../../tools/bench/harness.js';
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

async function run(g: WebGPUBackend, c: Case, reps: number) {
  const { B, T, D } = c;
  const dispose = (...ts: Tensor[]) => ts.forEach((t) => t.dispose());
  if (c.kind === 'decode') {
    const state = randn([B, D], { seed: 1, backend: g });
    const z = randn([B, D], { seed: 2, backend: g });
    const t = await timeOnGpu(g, async () => {
      const r = await holographicStep(state, z, { position: c.position, normalize: 'sqrt' });
      dispose(r.output, r.state);
    }, { reps });
    dispose(state, z);
    return { ...t, usPerToken: (t.medianMs * 1000) / B };
  }
  const z = randn([B, T, D], { seed: 3, backend: g });
  const t = await timeOnGpu(g, async () => {
    const r = await holographicIntegral(z, { mode: c.mode });
    dispose(r.output, r.finalState);
  }, { reps });
  z.dispose();
  return { ...t, tokensPerS: (B * T) / (t.medianMs / 1000), wallTokensPerS: (B * T) / (t.wallMs / 1000) };
}

await benchMain({ full: FULL, quick: QUICK, reps: [20, 3], run });

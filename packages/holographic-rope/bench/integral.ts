/**
 * Holographic integral benchmark cases (component `holographic-rope`): per-token decode cost against the
 * position (it should not grow: the recurrence forms no angle from the position) and prefill tokens/s of each
 * form. Run by tools/bench: `npx phalanx bench holographic-rope [--quick] [--case NAME]...`.
 */
import { type Tensor, randn } from '@phalanx/core';
import { type CaseContext, type Timed, defineCases, disposeAll } from '../../../tools/bench/harness.js';
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

async function setup(ctx: CaseContext, c: Case): Promise<Timed> {
  const { B, T, D } = c;
  const g = ctx.backend;
  const dispose = (...ts: Tensor[]) => ts.forEach((t) => t.dispose());
  if (c.kind === 'decode') {
    const state = randn([B, D], { seed: 1, backend: g });
    const z = randn([B, D], { seed: 2, backend: g });
    return {
      run: async () => {
        const r = await holographicStep(state, z, { position: c.position, normalize: 'sqrt' });
        dispose(r.output, r.state);
      },
      derive: (ms) => ({ usPerToken: (ms * 1000) / B }),
      dispose: () => disposeAll(state, z),
    };
  }
  const z = randn([B, T, D], { seed: 3, backend: g });
  return {
    run: async () => {
      const r = await holographicIntegral(z, { mode: c.mode });
      dispose(r.output, r.finalState);
    },
    derive: (ms) => ({ tokensPerS: (B * T) / (ms / 1000) }),
    dispose: () => z.dispose(),
  };
}

/** Every case once: those of the quick set also run on the CPU backend (they are small). */
const spec = (c: Case) => {
  const quick = QUICK.some((q) => q.name === c.name);
  const full = FULL.some((f) => f.name === c.name);
  return {
    name: c.name,
    shape: { kind: c.kind, B: c.B, T: c.T, position: c.position, D: c.D, mode: c.mode },
    sets: [...(full ? ['full' as const] : []), ...(quick ? ['quick' as const] : [])],
    backends: quick ? (['webgpu', 'cpu'] as const) : (['webgpu'] as const),
    reps: [20, 3] as const,
    setup: (ctx: CaseContext) => setup(ctx, c),
  };
};

export const cases = defineCases('holographic-rope', [...FULL, ...QUICK.filter((q) => !FULL.some((f) => f.name === q.name))].map(spec));

/**
 * Monoid-scan benchmark cases (component `monoid-scan`): chunked prefill throughput vs T, and the decode step
 * vs context length (the state is a fixed Dk x Dv per head, so the step must not depend on how long the
 * context was). Run by tools/bench: `npx phalanx bench monoid-scan [--quick] [--case NAME]...`.
 * PyTorch counterpart: tools/reference/monoid_scan.py (same case names).
 */
import { Rng, type Tensor, compareClose, cpu, tensor } from '@phalanx/core';
import { type CaseContext, type CaseSpec, type Timed, defineCases, disposeAll, timeCall } from '../../../tools/bench/harness.js';
import { monoidScan, monoidStep } from '../src/index.js';

interface Shape {
  B: number;
  T: number;
  H: number;
  D: number;
}

const H = 32;
const D = 64;
const gpuOnly = ['webgpu'] as const;

const prefillCase = (name: string, s: Shape, sets: CaseSpec['sets'] = ['full'], backends: CaseSpec['backends'] = gpuOnly): CaseSpec => ({
  name,
  shape: { ...s },
  sets,
  backends,
  setup: (ctx) => prefill(ctx, s),
});
const decodeCase = (name: string, s: Shape, sets: CaseSpec['sets'] = ['full'], backends: CaseSpec['backends'] = gpuOnly): CaseSpec => ({
  name,
  shape: { ...s },
  sets,
  backends,
  setup: (ctx) => decode(ctx, s),
});

export const cases = defineCases('monoid-scan', [
  ...[1024, 2048, 4096, 8192, 16384].map((T) => prefillCase(`prefill-${T}`, { B: 1, T, H, D })),
  ...[64, 1024, 8192, 65536].map((T) => decodeCase(`decode-ctx${T}`, { B: 1, T, H, D })),
  // 64 sequences at once: a state large enough to measure bandwidth
  decodeCase('decode-b64', { B: 64, T: 0, H, D }),
  // every context above in one process, steps timed round-robin so all see the same clocks and memory
  { name: 'decode-sweep', shape: { B: 1, H, D, contexts: [64, 1024, 8192, 65536] }, backends: gpuOnly, measure: sweep },
  prefillCase('prefill-256-small', { B: 1, T: 256, H: 4, D: 16 }, ['quick'], ['webgpu', 'cpu']),
  decodeCase('decode-ctx64-small', { B: 1, T: 64, H: 4, D: 16 }, ['quick'], ['webgpu', 'cpu']),
]);

/**
 * Spartacus-like inputs: q scaled by D^-1/2, decays logsigmoid(z + 3) (about 0.95, as at initialisation).
 * Past 4096 tokens a random block repeats, which keeps generating very long contexts cheap.
 */
function inputs(B: number, T: number, heads: number, d: number, seed: number) {
  const rng = new Rng(seed);
  const block = Math.min(B * T, 4096) * heads * d;
  const fill = (draw: () => number) => {
    const a = new Float32Array(B * T * heads * d);
    for (let i = 0; i < block; i++) a[i] = draw();
    for (let i = block; i < a.length; i += block) a.copyWithin(i, 0, Math.min(block, a.length - i));
    return a;
  };
  const logsigmoid = (z: number) => Math.min(z, 0) - Math.log1p(Math.exp(-Math.abs(z)));
  const shape = [B, T, heads, d];
  return {
    q: tensor(fill(() => rng.normal() * d ** -0.5), shape),
    k: tensor(fill(() => rng.normal()), shape),
    v: tensor(fill(() => rng.normal()), shape),
    logDecay: tensor(fill(() => logsigmoid(rng.normal() + 3)), shape),
  };
}

async function toBackend<T extends Record<string, Tensor>>(x: T, ctx: CaseContext): Promise<T> {
  return Object.fromEntries(await Promise.all(Object.entries(x).map(async ([k, t]) => [k, await t.to(ctx.backend)]))) as T;
}

/** Head 0 of the result against the CPU recurrence (float64) on the same inputs. */
async function spotCheck(x: ReturnType<typeof inputs>, B: number, T: number, heads: number, d: number, out: Tensor) {
  const pick = async (t: Tensor) => {
    const all = await t.data();
    const o = new Float32Array(B * T * d);
    for (let row = 0; row < B * T; row++) o.set(all.subarray(row * heads * d, (row * heads + 1) * d), row * d);
    return tensor(o, [B, T, 1, d], { backend: cpu });
  };
  const ref = await monoidScan({ q: await pick(x.q), k: await pick(x.k), v: await pick(x.v), logDecay: await pick(x.logDecay) }, { mode: 'recurrent' });
  const got = await pick(out);
  const r = compareClose(await ref.output.data(), await got.data(), { rtol: 1e-4 });
  return { relRmse: r.relRmse, ok: r.ok };
}

/** One step's inputs for B sequences. */
async function stepInputs(B: number, heads: number, d: number, ctx: CaseContext) {
  const one = inputs(B, 1, heads, d, 2);
  const flat = async (t: Tensor) => (await t.to(ctx.backend)).reshape([B, heads, d]);
  return { q: await flat(one.q), k: await flat(one.k), v: await flat(one.v), logDecay: await flat(one.logDecay) };
}

const disposeResult = (r: object) => Object.values(r).forEach((t) => (t as Tensor).dispose());

async function prefill(ctx: CaseContext, s: Shape): Promise<Timed> {
  const { B, T, H: heads, D: d } = s;
  const x = inputs(B, T, heads, d, 1);
  const gx = await toBackend(x, ctx);
  return {
    run: async () => disposeResult(await monoidScan(gx, { mode: 'chunk' })),
    derive: (ms) => ({ tokensPerSec: (B * T) / (ms / 1e3) }),
    check: async () => {
      if (T > 8192) return undefined;
      const r = await monoidScan(gx, { mode: 'chunk' });
      try {
        return await spotCheck(x, B, T, heads, d, r.output);
      } finally {
        disposeResult(r);
      }
    },
    dispose: () => disposeAll(...Object.values(gx), ...Object.values(x)),
  };
}

/** Prefill a context of T tokens (or, with no context, start from a random state), then time one step. */
async function decode(ctx: CaseContext, s: Shape): Promise<Timed> {
  const { B, T, H: heads, D: d } = s;
  let finalState: Tensor;
  if (T > 0) {
    const gx = await toBackend(inputs(B, T, heads, d, 1), ctx);
    const r = await monoidScan(gx, { mode: 'auto' });
    r.output.dispose();
    disposeAll(...Object.values(gx));
    finalState = r.finalState;
  } else {
    finalState = tensor(Float32Array.from({ length: B * heads * d * d }, (_, i) => Math.sin(i)), [B, heads, d, d], { backend: ctx.backend });
  }
  const step = await stepInputs(B, heads, d, ctx);
  const bytes = 2 * B * heads * d * d * 4 + 5 * B * heads * d * 4; // state read + written, q k v logDecay read, output written
  return {
    run: async () => disposeResult(await monoidStep(finalState, step)),
    bytes,
    derive: (ms) => ({ usPerToken: ms * 1e3 }),
    extra: { stateBytes: B * heads * d * d * 4 },
    dispose: () => disposeAll(finalState, ...Object.values(step)),
  };
}

/** States left by prefills of each context length, then steps from each timed in turn, twice round. */
async function sweep(ctx: CaseContext, emit: (row: { name: string; [k: string]: unknown }) => void) {
  const contexts = [64, 1024, 8192, 65536];
  const states: Tensor[] = [];
  for (const T of contexts) {
    const gx = await toBackend(inputs(1, T, H, D, 1), ctx);
    const { output, finalState } = await monoidScan(gx, { mode: 'auto' });
    disposeAll(output, ...Object.values(gx));
    states.push(finalState);
  }
  const step = await stepInputs(1, H, D, ctx);
  const usPerToken: Record<string, number[]> = {};
  for (let round = 0; round < 2; round++) {
    for (const [i, T] of contexts.entries()) {
      const t = await timeCall(ctx.backend, async () => disposeResult(await monoidStep(states[i]!, step)), { reps: ctx.reps });
      (usPerToken[T] ??= []).push(t.medianMs * 1e3);
    }
  }
  disposeAll(...states, ...Object.values(step));
  emit({ name: 'decode-sweep', contexts, usPerToken });
}

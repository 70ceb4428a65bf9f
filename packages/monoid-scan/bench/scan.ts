/**
 * Monoid-scan benchmark on WebGPU: chunked prefill throughput vs T, and the decode step vs context length
 * (the state is a fixed Dk x Dv per head, so the step must not depend on how long the context was).
 * A script until tools/bench exists: `node scan.mjs [--quick] [--case NAME]...`; one JSON line per case.
 * GPU times are medians of timestamp queries over back-to-back passes, summed over the kernels of one call.
 */
import { Rng, type Tensor, compareClose, cpu, tensor } from '@phalanx/core';
import { type WebGPUBackend, timeOnGpu } from '@phalanx/webgpu';
import { benchMain } from '../../../tools/bench/harness.js';
import { monoidScan, monoidStep } from '../src/index.js';

interface Case {
  name: string;
  kind: 'prefill' | 'decode' | 'sweep';
  B: number;
  T: number;
  H: number;
  D: number;
}

const H = 32;
const D = 64;
const FULL: Case[] = [
  ...[1024, 2048, 4096, 8192, 16384].map((T) => ({ name: `prefill-${T}`, kind: 'prefill' as const, B: 1, T, H, D })),
  ...[64, 1024, 8192, 65536].map((T) => ({ name: `decode-ctx${T}`, kind: 'decode' as const, B: 1, T, H, D })),
  // 64 sequences at once: a state large enough to measure bandwidth
  { name: 'decode-b64', kind: 'decode' as const, B: 64, T: 0, H, D },
  // every context above in one process, steps timed round-robin so all see the same clocks and memory
  { name: 'decode-sweep', kind: 'sweep' as const, B: 1, T: 0, H, D },
];
const QUICK: Case[] = [
  { name: 'prefill-256', kind: 'prefill', B: 1, T: 256, H: 4, D: 16 },
  { name: 'decode-ctx64', kind: 'decode', B: 1, T: 64, H: 4, D: 16 },
];

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

async function toGpu<T extends Record<string, Tensor>>(x: T, g: WebGPUBackend): Promise<T> {
  return Object.fromEntries(await Promise.all(Object.entries(x).map(async ([k, t]) => [k, await t.to(g)]))) as T;
}

/** GPU time of one call (all its kernels); the call's outputs are disposed each time. */
const gpuMs = (g: WebGPUBackend, fn: () => Promise<Tensor[]>, reps: number) => timeOnGpu(g, async () => (await fn()).forEach((t) => t.dispose()), { reps });

/** Head 0 of the GPU result against the CPU recurrence (float64) on the same inputs. */
async function spotCheck(x: ReturnType<typeof inputs>, B: number, T: number, heads: number, d: number, gpuOut: Tensor) {
  const pick = async (t: Tensor) => {
    const all = await t.data();
    const out = new Float32Array(B * T * d);
    for (let row = 0; row < B * T; row++) out.set(all.subarray((row * heads) * d, (row * heads + 1) * d), row * d);
    return tensor(out, [B, T, 1, d], { backend: cpu });
  };
  const ref = await monoidScan({ q: await pick(x.q), k: await pick(x.k), v: await pick(x.v), logDecay: await pick(x.logDecay) }, { mode: 'recurrent' });
  const got = await pick(gpuOut);
  const r = compareClose(await ref.output.data(), await got.data(), { rtol: 1e-4 });
  return { relRmse: r.relRmse, ok: r.ok };
}

/** One step's inputs for B sequences. */
async function stepInputs(B: number, heads: number, d: number, g: WebGPUBackend) {
  const one = inputs(B, 1, heads, d, 2);
  const flat = async (t: Tensor) => (await t.to(g)).reshape([B, heads, d]);
  return { q: await flat(one.q), k: await flat(one.k), v: await flat(one.v), logDecay: await flat(one.logDecay) };
}

/** States left by prefills of each context length, then steps from each timed in turn, twice round. */
async function sweep(g: WebGPUBackend, c: Case, reps: number) {
  const contexts = [64, 1024, 8192, 65536];
  const states: Tensor[] = [];
  for (const T of contexts) {
    const gx = await toGpu(inputs(1, T, c.H, c.D, 1), g);
    const { output, finalState } = await monoidScan(gx, { mode: 'auto' });
    [output, ...Object.values(gx)].forEach((t) => t.dispose());
    states.push(finalState);
  }
  const step = await stepInputs(1, c.H, c.D, g);
  const usPerToken: Record<string, number[]> = {};
  for (let round = 0; round < 2; round++) {
    for (const [i, T] of contexts.entries()) {
      const t = await gpuMs(g, async () => Object.values(await monoidStep(states[i]!, step)), reps);
      (usPerToken[T] ??= []).push(t.medianMs * 1e3);
    }
  }
  return { contexts, usPerToken };
}

async function run(g: WebGPUBackend, c: Case, reps: number) {
  if (c.kind === 'sweep') return sweep(g, c, reps);
  const { B, T, H: heads, D: d } = c;
  const x = inputs(B, Math.max(T, 1), heads, d, 1);
  const gx = await toGpu(x, g);
  if (c.kind === 'prefill') {
    const t = await gpuMs(g, async () => Object.values(await monoidScan(gx, { mode: 'chunk' })), reps);
    const check = T <= 8192 ? await spotCheck(x, B, T, heads, d, (await monoidScan(gx, { mode: 'chunk' })).output) : undefined;
    // per token and head: the intra-chunk scores and A V (~2 C d each, half masked), q S and the local state (2 d^2 each)
    return { ...t, check, tokensPerSec: (B * T) / (t.medianMs / 1e3) };
  }
  // decode: prefill a context of T tokens (or, with no context, start from a random state), then time one step
  const finalState = T > 0 ? (await monoidScan(gx, { mode: 'auto' })).finalState : await tensor(Float32Array.from({ length: B * heads * d * d }, (_, i) => Math.sin(i)), [B, heads, d, d]).to(g);
  const step = await stepInputs(B, heads, d, g);
  const t = await gpuMs(g, async () => Object.values(await monoidStep(finalState, step)), reps);
  const bytes = 2 * B * heads * d * d * 4 + 5 * B * heads * d * 4; // state read + written, q k v logDecay read, output written
  return { ...t, usPerToken: t.medianMs * 1e3, stateBytes: B * heads * d * d * 4, GBps: bytes / t.medianMs / 1e6 };
}

await benchMain({ full: FULL, quick: QUICK, run });

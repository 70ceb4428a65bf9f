/**
 * What every preset's tests share: random weights for a config, and the model-level equivalences
 * (prefill + decode == full forward, batch rows independent, CPU == WebGPU).
 */
import { type ExpectedTensor, type ModelConfig, expandLayers, parseConfig } from '@phalanx/checkpoint';
import { type Backend, Rng, Tensor, assertClose, tensor } from '@phalanx/core';
import { expect } from 'vitest';
import { type Network, type PresetDefinition, Weights } from '../src/network.js';

/** Values for a tensor by name; return undefined to take the default draw. */
export type Draw = (name: string, shape: readonly number[], rng: Rng) => number[] | undefined;

/**
 * Seeded random weights for every tensor the preset expects: norm weights 1 + N(0, 0.1^2), everything else
 * N(0, 1/fan_in) (fan_in = the last dim), so activations stay O(1) through a few layers. `draw` overrides any.
 */
export function randomWeights<C extends ModelConfig>(preset: PresetDefinition<C>, config: C, backend: Backend, seed = 1, draw?: Draw): Weights {
  const rng = new Rng(seed);
  const tensors = new Map<string, Tensor>();
  for (const e of expandLayers(preset.tensors(config), config.numHiddenLayers)) {
    if (e.optional) continue;
    const shape = shapeOf(e);
    const n = shape.reduce((a, b) => a * b, 1);
    const custom = draw?.(e.name, shape, rng);
    const std = 1 / Math.sqrt(shape[shape.length - 1] ?? 1);
    const values = custom ?? Array.from({ length: n }, () => (/norm\.weight$/.test(e.name) ? 1 + 0.1 * rng.normal() : std * rng.normal()));
    tensors.set(e.name, tensor(values, shape, { backend, name: e.name }));
  }
  return new Weights('random', tensors, backend);
}

function shapeOf(e: ExpectedTensor): number[] {
  if (!e.shape) throw new Error(`${e.name} has no expected shape to draw`);
  return [...((Array.isArray(e.shape[0]) ? e.shape[0] : e.shape) as number[])];
}

/** A config parsed from Hugging Face JSON, as loadModel would see it. */
export function configOf<C extends ModelConfig>(json: Record<string, unknown>): C {
  return parseConfig(json) as C;
}

/** Seeded ids [B][T]. */
export function randomIds(B: number, T: number, vocab: number, seed: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: B }, () => Array.from({ length: T }, () => Math.floor(rng.uniform() * vocab)));
}

export async function logitsOf(network: Network, ids: number[][]): Promise<Float32Array> {
  const t = await network.forward(ids);
  try {
    return Float32Array.from(await t.data());
  } finally {
    t.dispose();
  }
}

/**
 * Prefill of the first `prefill` tokens, then one token at a time from the state, gives the logits of the
 * full forward at every position; the prefill and every other step take their ids as a tensor on the backend.
 */
export async function expectDecodeMatchesForward(network: Network, ids: number[][], prefill: number, rtol = 1e-4): Promise<void> {
  const [B, T] = [ids.length, ids[0]!.length];
  const V = network.config.vocabSize;
  const full = await logitsOf(network, ids);
  const state = network.createState(B, T);
  try {
    // the prefill's ids as a u32 tensor on the network's backend, odd decode steps' as an i32 one (`TokenIds`)
    const onDevice = (rows: number[][], dtype: 'i32' | 'u32') => tensor(rows.flat(), [rows.length, rows[0]!.length], { dtype, backend: network.backend });
    const prefillIds = onDevice(ids.map((r) => r.slice(0, prefill)), 'u32');
    const first = await network.forward(prefillIds, { state });
    prefillIds.dispose();
    const prefillLogits = await first.data();
    first.dispose();
    for (let b = 0; b < B; b++) {
      assertClose(full.subarray(b * T * V, (b * T + prefill) * V), prefillLogits.subarray(b * prefill * V, (b + 1) * prefill * V), { rtol, name: `prefill logits row ${b}` });
    }
    for (let t = prefill; t < T; t++) {
      const rows = ids.map((r) => [r[t]!]);
      const input = t % 2 === 1 ? onDevice(rows, 'i32') : rows;
      const step = await network.forward(input, { state });
      if (input instanceof Tensor) input.dispose();
      const got = await step.data();
      step.dispose();
      expect(step.shape).toEqual([B, 1, V]);
      for (let b = 0; b < B; b++) assertClose(full.subarray((b * T + t) * V, (b * T + t + 1) * V), got.subarray(b * V, (b + 1) * V), { rtol, name: `decode logits, row ${b}, position ${t}` });
    }
    expect(state.position).toBe(T);
  } finally {
    state.dispose();
  }
}

/** Each row of a batch gives the logits it gives alone. */
export async function expectRowsIndependent(network: Network, ids: number[][], rtol = 1e-5): Promise<void> {
  const V = network.config.vocabSize;
  const T = ids[0]!.length;
  const batched = await logitsOf(network, ids);
  for (let b = 0; b < ids.length; b++) {
    const alone = await logitsOf(network, [ids[b]!]);
    assertClose(alone, batched.subarray(b * T * V, (b + 1) * T * V), { rtol, name: `row ${b} batched vs alone` });
  }
}

/** lastOnly gives the last position of the full logits. */
export async function expectLastOnly(network: Network, ids: number[][]): Promise<void> {
  const V = network.config.vocabSize;
  const T = ids[0]!.length;
  const full = await logitsOf(network, ids);
  const last = await network.forward(ids, { lastOnly: true });
  try {
    expect(last.shape).toEqual([ids.length, 1, V]);
    const got = await last.data();
    for (let b = 0; b < ids.length; b++) assertClose(full.subarray((b * T + T - 1) * V, (b * T + T) * V), got.subarray(b * V, (b + 1) * V), { rtol: 1e-6, name: `lastOnly row ${b}` });
  } finally {
    last.dispose();
  }
}

/**
 * Layers the presets share, each a few ops from the mechanism packages: token embedding, the logits head,
 * the SwiGLU MLP, and attention that prefills a KV cache or decodes one token from it.
 */
import { type Backend, InputError, Scratch, Tensor } from '@phalanx/core';
import { type InputNorm, type LinearWeight, embedding, linear, rmsNorm, softcap, swigluLinear } from '@phalanx/ops';
import { type KvCache, type ScoreOptions, appendKv, attendStep, createKvCache, varlenAttention } from '@phalanx/varlen-attention';
import type { DecodeState, TokenIds } from './network.js';

/** Rows of the embedding for ids [B][T] (host rows or a tensor on the weight's backend): [B, T, hidden] f32. */
export function embedTokens(weight: Tensor, ids: TokenIds): Promise<Tensor> {
  if (ids instanceof Tensor) return embedding(weight, ids);
  return embedding(weight, ids.flat(), { shape: [ids.length, ids[0]!.length] });
}

/** x [B, T, C] -> its last position [B, 1, C] (a row gather). */
export async function lastPosition(x: Tensor): Promise<Tensor> {
  const [B, T, C] = x.shape as [number, number, number];
  const rows = x.reshape([B * T, C]);
  try {
    return await embedding(rows, Array.from({ length: B }, (_, b) => b * T + T - 1), { shape: [B, 1] });
  } finally {
    rows.dispose();
  }
}

export interface HeadOptions {
  /** The final RMSNorm's weight; null for a weightless norm. */
  norm: Tensor | null;
  eps: number;
  /** [V, hidden]: lm_head (int8 when loaded with `quantize`), or the embedding when tied. */
  head: LinearWeight;
  /** Logit softcap c (c tanh(z / c)); none when absent. */
  softcap?: number;
  lastOnly?: boolean;
}

/** Final norm and LM head: x [B, T, hidden] -> logits [B, T, V] (or [B, 1, V] with lastOnly). */
export async function logitsHead(x: Tensor, options: HeadOptions): Promise<Tensor> {
  const s = new Scratch();
  try {
    // one position (decode) is its own last: no gather
    const rows = options.lastOnly && x.shape[1] !== 1 ? await s.keep(lastPosition(x)) : x;
    // a weighted norm runs inside the head's GEMV in decode; a weightless one (parcae) as its own op
    const { norm, eps } = options;
    const logits = norm ? linear(rows, options.head, null, { norm: { weight: norm, eps } }) : linear(await s.keep(rmsNorm(rows, null, { eps })), options.head);
    if (options.softcap === undefined) return await logits;
    return await softcap(await s.keep(logits), options.softcap);
  } finally {
    s.dispose();
  }
}

/**
 * down(silu(gate x) * up x), plus `residual` when given (a decoder layer's residual stream), of x normed by
 * `norm` when given; in decode the gate/up half is one fused GEMV that also applies the norm (see
 * `swigluLinear`) and down adds the residual in its epilogue (see `linear`).
 */
export async function swigluMlp(x: Tensor, gate: LinearWeight, up: LinearWeight, down: LinearWeight, residual?: Tensor, norm?: InputNorm): Promise<Tensor> {
  const s = new Scratch();
  try {
    return await linear(await s.keep(swigluLinear(x, gate, up, { norm })), down, null, { residual });
  } finally {
    s.dispose();
  }
}

export interface AttendOptions extends ScoreOptions {
  /** Sliding window (flash-attention's inclusive (window, 0)); none when absent. */
  window?: number;
}

/**
 * Causal attention of B equal-length sequences: q [B, T, Hq, D], k and v [B, T, Hkv, D] -> [B, T, Hq, D].
 * Without a cache, or with an empty one, the rows are attended as packed documents (one flash prefill) and
 * then appended to the cache; a cache that holds tokens takes one token per sequence (T = 1) and attends
 * over everything it holds. stateKv, when given, is [B, T, Hkv, D].
 */
export async function attend(q: Tensor, k: Tensor, v: Tensor, cache: KvCache | null, options: AttendOptions = {}): Promise<Tensor> {
  const [B, T, Hq, D] = q.shape as [number, number, number, number];
  const Hkv = k.shape[2]!;
  const s = new Scratch();
  try {
    const flat = async (t: Tensor, H: number) => s.keep(t.reshape([B * T, H, D]));
    const stateKv = options.stateKv && { k: await flat(options.stateKv.k, Hkv), v: await flat(options.stateKv.v, Hkv) };
    if (cache && cache.lengths[0]! > 0) {
      if (T !== 1) throw new InputError(`attention: a KV cache holding ${cache.lengths[0]} tokens is continued one token at a time (got ${T})`);
      const y = await s.keep(attendStep(cache, await flat(q, Hq), await flat(k, Hkv), await flat(v, Hkv), { ...options, stateKv }));
      return y.reshape([B, T, Hq, D]);
    }
    const [qf, kf, vf] = [await flat(q, Hq), await flat(k, Hkv), await flat(v, Hkv)];
    const cuSeqlens = Array.from({ length: B + 1 }, (_, b) => b * T);
    const y = await s.keep(varlenAttention({ q: qf, k: kf, v: vf }, { ...options, stateKv, cuSeqlens }));
    if (cache) await appendKv(cache, { k: kf, v: vf }, cuSeqlens);
    return y.reshape([B, T, Hq, D]);
  } finally {
    s.dispose();
  }
}

/** One KV cache per attention layer, plus the position: the decode state of attention presets. */
export class KvState implements DecodeState {
  position = 0;
  readonly caches: KvCache[];

  constructor(
    readonly batch: number,
    layers: readonly { heads: number; dim: number; window?: number }[],
    capacity: number,
    backend: Backend,
  ) {
    this.caches = layers.map((l) =>
      // a windowed layer keeps a ring of window + 1 tokens whatever the context length, or capacity ones when fewer
      createKvCache({ batch, heads: l.heads, dim: l.dim, window: l.window, capacity, backend }),);
  }

  get bytes(): number {
    return this.caches.reduce((n, c) => n + 2 * c.batch * c.slots * c.heads * c.dim * 4, 0);
  }

  dispose(): void {
    for (const c of this.caches) c.dispose();
  }
}

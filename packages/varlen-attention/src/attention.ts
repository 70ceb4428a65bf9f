import { InputError, ShapeError, Tensor, assertFloat, formatShape, runKernel, tensor } from '@phalanx/core';

/** Options shared by prefill and decode: how a logit is formed from q and k. */
export interface ScoreOptions {
  /** Logit scale; default D^-1/2. */
  scale?: number;
  /** When > 0, logits become c * tanh(logit / c) before the softmax. */
  softcap?: number;
  /** Per-query-head multiplier of q: an [Hq] tensor or Hq numbers. */
  qGain?: Tensor | ArrayLike<number>;
  /** One extra key/value per query that only that query sees (NanoHammer state tokens, mask variant A). */
  stateKv?: { k: Tensor; v: Tensor };
}

export interface VarlenAttentionOptions extends ScoreOptions {
  /** Document starts plus the total: [0, ..., Ttot], non-decreasing (empty documents are allowed). */
  cuSeqlens: ArrayLike<number>;
  /** Default true: query i sees keys j <= i. When false, every key of its document. */
  causal?: boolean;
  /** Sliding window: |i - j| <= window (flash-attention's inclusive (window, 0)); unlimited when absent. */
  window?: number;
}

/** Everything a kernel needs to form logits: shapes, the scale and softcap, and which optional inputs follow. */
export interface ScoreAttrs {
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
  /** 0 when off. */
  softcap: number;
  hasGain: boolean;
  hasState: boolean;
}

/**
 * Attributes of 'varlenAttention'. Inputs: q, k, v, then qGain [Hq] when `hasGain`, then the state k and v
 * when `hasState`. Output: f32 [T, Hq, D].
 */
export interface VarlenAttentionAttrs extends ScoreAttrs {
  T: number;
  cuSeqlens: number[];
  causal: boolean;
  /** Infinity when there is no window. */
  window: number;
}

export const label = (t: Tensor, role: string) => `${role} (${t.name ?? 'tensor'})`;

/** Refuses a tensor that is not a float or not exactly `shape`, naming it. */
export function checkTensor(op: string, t: Tensor, role: string, shape: readonly number[]): void {
  assertFloat(op, t, role);
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new ShapeError(`${op}: ${label(t, role)} is ${formatShape(t.shape)}; expected ${formatShape(shape)}`);
  }
}

/** A non-negative integer option (or undefined), else an InputError. */
export function checkCount(op: string, what: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isInteger(value) && value >= 0)) throw new InputError(`${op}: ${what} must be a non-negative integer, got ${value}`);
}

/**
 * Validates scale, softcap, qGain and stateKv against q [rows, Hq, D] and kv heads Hkv. Returns the attrs and
 * the extra kernel inputs; a qGain given as numbers becomes a tensor on q's backend, which the caller
 * disposes (`owned`).
 */
export function scoreInputs(op: string, q: Tensor, Hkv: number, options: ScoreOptions): { attrs: ScoreAttrs; extra: Tensor[]; owned: Tensor[] } {
  const [rows, Hq, D] = q.shape as [number, number, number];
  if (Hkv < 1 || Hq % Hkv !== 0) throw new ShapeError(`${op}: ${Hq} query heads are not a multiple of ${Hkv} kv heads`);
  const scale = options.scale ?? 1 / Math.sqrt(D);
  const softcap = options.softcap ?? 0;
  if (!Number.isFinite(scale)) throw new InputError(`${op}: scale must be finite, got ${scale}`);
  if (!(softcap >= 0 && Number.isFinite(softcap))) throw new InputError(`${op}: softcap must be a finite number >= 0, got ${softcap}`);
  const extra: Tensor[] = [];
  const owned: Tensor[] = [];
  const { qGain, stateKv } = options;
  if (qGain !== undefined) {
    if (qGain instanceof Tensor) {
      checkTensor(op, qGain, 'qGain', [Hq]);
      extra.push(qGain);
    } else {
      if (qGain.length !== Hq) throw new ShapeError(`${op}: qGain has ${qGain.length} values; expected one per query head (${Hq})`);
      const t = tensor(Array.from(qGain), [Hq], { backend: q.backend, name: 'qGain' });
      extra.push(t);
      owned.push(t);
    }
  }
  if (stateKv) {
    checkTensor(op, stateKv.k, 'stateKv.k', [rows, Hkv, D]);
    checkTensor(op, stateKv.v, 'stateKv.v', [rows, Hkv, D]);
    extra.push(stateKv.k, stateKv.v);
  }
  return { attrs: { Hq, Hkv, D, scale, softcap, hasGain: qGain !== undefined, hasState: !!stateKv }, extra, owned };
}

/** Offsets [0, ..., total], non-decreasing integers, else an InputError. */
export function checkCuSeqlens(op: string, cuSeqlens: ArrayLike<number>, total: number): number[] {
  const cu = Array.from(cuSeqlens);
  const valid = cu.length >= 2 && cu[0] === 0 && cu[cu.length - 1] === total && cu.every((c, i) => Number.isInteger(c) && (i === 0 || c >= cu[i - 1]!));
  if (!valid) throw new InputError(`${op}: cuSeqlens [${cu.join(', ')}] must be non-decreasing integers from 0 to the token count ${total}`);
  return cu;
}

/**
 * The keys each query sees, as inclusive ranges [lo, hi] (pairs in one array). Both ends are non-decreasing
 * in the query index, so a block of queries needs exactly the keys from its first query's lo to its last
 * query's hi: the GPU kernel relies on that to skip key tiles.
 */
export function keyBounds({ T, cuSeqlens, causal, window }: VarlenAttentionAttrs): Uint32Array {
  const bounds = new Uint32Array(2 * T);
  for (let n = 0; n + 1 < cuSeqlens.length; n++) {
    const [start, end] = [cuSeqlens[n]!, cuSeqlens[n + 1]!];
    for (let i = start; i < end; i++) {
      bounds[2 * i] = Math.max(start, i - window);
      bounds[2 * i + 1] = causal ? i : Math.min(end - 1, i + window);
    }
  }
  return bounds;
}

/**
 * Attention over packed documents (flash_attn_varlen_func): q [T, Hq, D], k and v [T, Hkv, D], documents
 * delimited by `cuSeqlens`. Query i of a document sees keys j of the same document with j <= i (when causal)
 * and |i - j| <= window; query head h reads kv head floor(h / (Hq / Hkv)). Logits are
 * scale * qGain[h] * q.k, softcapped when asked. Inputs f32, f16 or bf16; returns f32 [T, Hq, D].
 */
export async function varlenAttention(inputs: { q: Tensor; k: Tensor; v: Tensor }, options: VarlenAttentionOptions): Promise<Tensor> {
  const op = 'varlenAttention';
  const { q, k, v } = inputs;
  assertFloat(op, q, 'q');
  if (q.rank !== 3) throw new ShapeError(`${op}: ${label(q, 'q')} is ${formatShape(q.shape)}; expected [T, Hq, D]`);
  const [T, , D] = q.shape as [number, number, number];
  assertFloat(op, k, 'k');
  if (k.rank !== 3 || k.shape[0] !== T || k.shape[2] !== D) throw new ShapeError(`${op}: ${label(k, 'k')} is ${formatShape(k.shape)}; expected [${T}, Hkv, ${D}] to match q ${formatShape(q.shape)}`);
  const Hkv = k.shape[1]!;
  checkTensor(op, v, 'v', [T, Hkv, D]);
  checkCount(op, 'window', options.window);
  const cuSeqlens = checkCuSeqlens(op, options.cuSeqlens, T);
  const { attrs, extra, owned } = scoreInputs(op, q, Hkv, options);
  const full: VarlenAttentionAttrs = { ...attrs, T, cuSeqlens, causal: options.causal ?? true, window: options.window ?? Infinity };
  try {
    return (await runKernel(op, [q, k, v, ...extra], full))[0]!;
  } finally {
    owned.forEach((t) => t.dispose());
  }
}

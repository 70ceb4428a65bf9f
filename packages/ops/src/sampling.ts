import { InputError, NumericsError, Rng, ShapeError, type Tensor, assertFloat, empty, formatShape, runKernel } from '@phalanx/core';
import './cpu/sampling.js';
import './webgpu/sampling.js';

export interface SampleOptions {
  /** Divides the logits; 0 picks the argmax. Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (and ties with the k-th); 0 turns it off. Default 0. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability is at least p, in (0, 1]; 1 turns it off. Default 1. */
  topP?: number;
  /** Seeds a fresh Rng for this call. Without seed or rng, a random seed. */
  seed?: number;
  /** Draws from this Rng (one uniform per row), advancing it: for a reproducible stream over many calls. */
  rng?: Rng;
}

/** What the 'sample' kernels return for a row holding NaN or +Infinity: this bit plus the index of the first such logit. */
export const NON_FINITE = 0x80000000;

/** Attributes of the 'sample' kernels: logits read as [rows, vocab]. */
export interface SampleAttrs {
  rows: number;
  vocab: number;
  /** 0: argmax, lowest index on ties (no random numbers used). */
  temperature: number;
  topK: number;
  topP: number;
  /** One uniform number in [0, 1) per row (empty when temperature is 0). */
  uniforms: Float64Array;
}

/**
 * Samples one token id per row of logits [B, V] or [V] (f32, f16 or bf16), where the logits live; only the
 * ids are read back. Per row, in Hugging Face's order:
 *
 * 1. temperature 0: the argmax (lowest index on ties), and nothing else happens. Otherwise z = logit / temperature.
 * 2. top-k (0 < k < V): keep the tokens with z >= the k-th largest z (ties with it are kept too).
 * 3. top-p (p < 1): with probabilities q = softmax over the kept tokens, keep a token iff the mass of kept
 *    tokens with a strictly larger z is < p: the smallest set of most likely tokens whose mass is >= p,
 *    plus ties with its least likely member. The most likely token is always kept.
 * 4. With w = exp(z - max z) over the kept tokens and one uniform u in [0, 1) per row, return the first id
 *    (in index order) whose running sum of w exceeds u * sum(w): an inverse-CDF draw from the renormalised
 *    distribution.
 *
 * The CPU computes this in float64 (sorting for the thresholds), the GPU in f32 in two dispatches: the argmax
 * over chunks of 1024 logits in workgroups of their own, then one workgroup per row for the rest (each
 * threshold by bisection over the logits' order-preserving bit patterns, a pass over the row per step that
 * counts tokens for top-k and sums kept mass for top-p). Both draw u on the host from
 * the same Rng, so they agree on the distribution and, except at rounding boundaries, on each id.
 * -Infinity masks a token (a row needs one finite logit). A NaN or +Infinity logit (a model whose weights or
 * activations went non-finite) is a NumericsError naming the row and the first such index: checking costs the
 * kernels one comparison per logit and no extra read-back.
 */
export async function sample(logits: Tensor, options: SampleOptions = {}): Promise<number[]> {
  const ids = await sampleIds(logits, options);
  try {
    return await readIds(ids, logits.name ?? 'logits');
  } finally {
    ids.dispose();
  }
}

/**
 * `sample` without the read-back: the ids as a u32 tensor [rows] where the logits live, for a caller that feeds
 * them to the next forward before reading them (generation records step t + 1 while step t's id travels back).
 * The random numbers are drawn from the Rng now, so the order of calls fixes the stream. A row holding NaN or
 * +Infinity gets NON_FINITE + the index of its first such logit, which `readIds` turns into the NumericsError
 * (and an embedding turns into NaN rows: no read out of bounds).
 */
export async function sampleIds(logits: Tensor, options: SampleOptions = {}): Promise<Tensor> {
  const name = logits.name ?? 'logits';
  const { temperature = 1, topK = 0, topP = 1, seed, rng } = options;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new InputError(`sample ${name}: temperature must be >= 0 and finite, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new InputError(`sample ${name}: topK must be a non-negative integer, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new InputError(`sample ${name}: topP must be in (0, 1], got ${topP}`);
  if (seed !== undefined && rng !== undefined) throw new InputError(`sample ${name}: pass seed or rng, not both`);
  if (seed !== undefined && !Number.isInteger(seed)) throw new InputError(`sample ${name}: seed must be an integer, got ${seed}`);
  const { rows, vocab } = rowsOf(name, logits);
  if (rows === 0) return empty([0], { dtype: 'u32', backend: logits.backend });
  let uniforms = new Float64Array(0);
  if (temperature > 0) {
    const source = rng ?? new Rng(seed ?? Math.floor(Math.random() * 2 ** 32));
    uniforms = Float64Array.from({ length: rows }, () => source.uniform());
  }
  const attrs: SampleAttrs = { rows, vocab, temperature, topK, topP, uniforms };
  const [ids] = await runKernel('sample', [logits], attrs);
  return ids!;
}

/**
 * Reads ids made by `sampleIds` back (the tensor stays the caller's): a NumericsError naming the row and index
 * where a row of `logitsName` held NaN or +Infinity. The read is issued before the first await, so its copy is
 * recorded right behind the sampling, ahead of anything recorded after this call.
 */
export async function readIds(ids: Tensor, logitsName = 'logits'): Promise<number[]> {
  const out = Array.from(await ids.data());
  const bad = out.findIndex((id) => id >= NON_FINITE);
  if (bad >= 0) throw new NumericsError(`sample ${logitsName}: row ${bad} holds NaN or +Infinity, first at index ${out[bad]! - NON_FINITE}`);
  return out;
}

/** The argmax of each row of logits [B, V] or [V] (lowest index on ties): `sample` at temperature 0. */
export async function greedy(logits: Tensor): Promise<number[]> {
  return sample(logits, { temperature: 0 });
}

function rowsOf(name: string, logits: Tensor): { rows: number; vocab: number } {
  if (logits.rank !== 1 && logits.rank !== 2) throw new ShapeError(`sample ${name}: expected [B, V] or [V], got ${formatShape(logits.shape)}`);
  assertFloat('sample', logits, 'logits');
  const vocab = logits.shape[logits.rank - 1]!;
  if (vocab === 0) throw new ShapeError(`sample ${name}: rows of ${formatShape(logits.shape)} are empty`);
  return { rows: logits.size / vocab, vocab };
}

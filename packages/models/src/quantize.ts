/**
 * loadModel's `quantize` option: the attention and MLP projections (and an untied lm_head) held as int8 codes
 * with one f16 scale per output row, quantized at load by round-to-nearest with SDClip scales, and run
 * through @phalanx/ops `linear`, which reads the codes and scales each row in its epilogue.
 */
import { type Backend, InputError, type Tensor } from '@phalanx/core';
import type { Int8Weight } from '@phalanx/ops';
import { quantize } from '@phalanx/quantizer/quantize'; // not the package index: that pulls node:fs for artifacts

/**
 * 'int8', or `{ bits: 8, clipSigmas }` to choose SDClip's k (each row's scale is k * std(row) / 127; weights
 * beyond k standard deviations clip). Only 8 bits for now: packed 2-7 bit codes have their kernels in
 * @phalanx/quantizer (`quantizedLinear`), which the presets' `linear` does not reach.
 */
export type QuantizeOption = 'int8' | { bits: 8; clipSigmas?: number };

/**
 * SDClip's k for 'int8': rows clip at 10 standard deviations (heavy-tailed rows keep their outliers), and the
 * step is 10/127 = 0.079 std. On the tiny trained models the logits move by 1.5-2% (relative RMSE) and the
 * llama's held-out bpb does not change measurably (docs/packages/models.md); k = 4-6 halves the logit error
 * of outlier-free weights like theirs, at the cost of clipping wherever a row has larger outliers.
 */
export const INT8_CLIP_SIGMAS = 10;

/** The matrices `quantize` applies to: q/k/v/o and gate/up/down projections, and lm_head (absent when tied). */
export function isQuantized(name: string): boolean {
  return /\.(q|k|v|o|gate|up|down)_proj\.weight$|^lm_head\.weight$/.test(name);
}

/** The option checked: SDClip's k, or null for no quantization. A bad option is an InputError. */
export function quantizeClipSigmas(option: QuantizeOption | undefined): number | null {
  if (option === undefined) return null;
  const bad = (why: string) => new InputError(`loadModel: quantize ${why}`);
  if (option === 'int8') return INT8_CLIP_SIGMAS;
  if (typeof option !== 'object' || option === null) throw bad(`must be 'int8' or { bits: 8, clipSigmas? }, got ${JSON.stringify(option)}`);
  const { bits, clipSigmas = INT8_CLIP_SIGMAS } = option as { bits: unknown; clipSigmas?: unknown };
  if (bits !== 8) throw bad(`bits must be 8, got ${JSON.stringify(bits)} (codes of 2-7 bits are not wired into the presets yet)`);
  if (typeof clipSigmas !== 'number' || !(clipSigmas > 0) || !Number.isFinite(clipSigmas)) throw bad(`clipSigmas must be a positive number, got ${JSON.stringify(clipSigmas)}`);
  return clipSigmas;
}

/** w [out, in] (any float dtype; quantized on the CPU) as int8 codes and f16 row scales on `backend`. */
export async function quantizeInt8(w: Tensor, clipSigmas: number, backend: Backend): Promise<Int8Weight> {
  const { codes, scales } = await quantize(w, { bits: 8, clipSigmas });
  const place = async (t: Tensor) => {
    if (t.backend === backend) return t;
    try {
      return await t.to(backend);
    } finally {
      t.dispose();
    }
  };
  return { codes: await place(codes), scales: await place(scales) };
}

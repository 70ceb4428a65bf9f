/**
 * The comparison every kernel test uses (flash-linear-attention's metric): relative RMSE
 * rmse(ref - out) / rmse(ref), short-circuited to a pass when the largest absolute difference is within
 * `atol`. A NaN or Inf in `out` where `ref` is finite always fails.
 */
export interface CloseOptions {
  /** Largest relative RMSE that passes. Default 1e-5. */
  rtol?: number;
  /** Pass outright when max |ref - out| <= atol. Default 1e-6. */
  atol?: number;
  /** Names the compared tensor in the failure message. */
  name?: string;
}

export interface CloseReport {
  ok: boolean;
  relRmse: number;
  maxAbs: number;
  /** Index of the largest absolute difference (or of the first non-finite value). */
  worst: number;
  message: string;
}

export function relativeRmse(ref: ArrayLike<number>, out: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = ref[i]! - out[i]!;
    num += d * d;
    den += ref[i]! * ref[i]!;
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : Math.sqrt(num / den);
}

export function compareClose(ref: ArrayLike<number>, out: ArrayLike<number>, options: CloseOptions = {}): CloseReport {
  const { rtol = 1e-5, atol = 1e-6, name = 'output' } = options;
  if (ref.length !== out.length) {
    return { ok: false, relRmse: Infinity, maxAbs: Infinity, worst: -1, message: `${name}: length ${out.length}, expected ${ref.length}` };
  }
  let maxAbs = 0;
  let worst = -1;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i]!;
    const o = out[i]!;
    if (!Number.isFinite(o) && Number.isFinite(r)) {
      return { ok: false, relRmse: NaN, maxAbs: NaN, worst: i, message: `${name}: element ${i} is ${o}, expected ${r}` };
    }
    const d = Math.abs(r - o);
    if (d > maxAbs || worst < 0) {
      maxAbs = d;
      worst = i;
    }
  }
  const relRmse = relativeRmse(ref, out);
  const ok = maxAbs <= atol || relRmse <= rtol;
  const where = worst >= 0 ? ` (worst at ${worst}: ${out[worst]} vs ${ref[worst]})` : '';
  return {
    ok,
    relRmse,
    maxAbs,
    worst,
    message: `${name}: relative RMSE ${relRmse.toExponential(3)} (limit ${rtol}), max abs diff ${maxAbs.toExponential(3)} (atol ${atol})${where}`,
  };
}

/** Throws (with the report's message) unless `out` is close to `ref`. */
export function assertClose(ref: ArrayLike<number>, out: ArrayLike<number>, options: CloseOptions = {}): CloseReport {
  const report = compareClose(ref, out, options);
  if (!report.ok) throw new Error(report.message);
  return report;
}

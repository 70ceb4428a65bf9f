import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import { NON_FINITE, type SampleAttrs } from '../sampling.js';

/** The argmax of row[0..n), lowest index on ties. */
function argmax(z: ArrayLike<number>, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (z[i]! > z[best]!) best = i;
  return best;
}

/** The index in x[start, start + n) of the first NaN or +Infinity (-Infinity masks a token), or -1. */
function firstNonFinite(x: ArrayLike<number>, start: number, n: number): number {
  for (let i = 0; i < n; i++) {
    const v = x[start + i]!;
    if (v !== v || v === Infinity) return i;
  }
  return -1;
}

/** The smallest z a token may have and still be kept by top-k and top-p (see `sample`). */
function threshold(z: Float64Array, w: Float64Array, topK: number, topP: number): number {
  const order = Array.from(z.keys()).sort((a, b) => z[b]! - z[a]!);
  const cutK = topK > 0 && topK < z.length ? z[order[topK - 1]!]! : -Infinity;
  if (topP >= 1) return cutK;
  let total = 0;
  for (const i of order) if (z[i]! >= cutK) total += w[i]!;
  // walk groups of equal z from the top; `above` is the kept mass strictly above the current group
  let above = 0;
  let cut = cutK;
  for (let j = 0; j < order.length && z[order[j]!]! >= cutK; ) {
    const v = z[order[j]!]!;
    if (above >= topP * total) break;
    cut = v;
    while (j < order.length && z[order[j]!] === v) above += w[order[j++]!]!;
  }
  return cut;
}

registerKernel({
  op: 'sample',
  backend: 'cpu',
  fn: ([logits]: Tensor[], { rows, vocab, temperature, topK, topP, uniforms }: SampleAttrs) => {
    const out = empty([rows], { dtype: 'u32', backend: cpu });
    const ids = cpuStorage(out);
    const x = cpuValues(logits!);
    for (let r = 0; r < rows; r++) {
      const bad = firstNonFinite(x, r * vocab, vocab);
      if (bad >= 0) {
        ids[r] = NON_FINITE + bad;
        continue;
      }
      const z = new Float64Array(vocab);
      for (let i = 0; i < vocab; i++) z[i] = x[r * vocab + i]! / (temperature || 1);
      const best = argmax(z, vocab);
      if (temperature === 0) {
        ids[r] = best;
        continue;
      }
      const zmax = z[best]!;
      const w = z.map((v) => Math.exp(v - zmax));
      if (topK > 0 || topP < 1) {
        const cut = threshold(z, w, topK, topP);
        for (let i = 0; i < vocab; i++) if (z[i]! < cut) w[i] = 0;
      }
      const total = w.reduce((a, b) => a + b, 0);
      // inverse CDF in index order; the last id of nonzero weight if rounding leaves the target unreached
      const target = uniforms[r]! * total;
      let acc = 0;
      let pick = 0;
      for (let i = 0; i < vocab && !(acc > target); i++) {
        if (w[i] === 0) continue;
        acc += w[i]!;
        pick = i;
      }
      ids[r] = pick;
    }
    return out;
  },
});

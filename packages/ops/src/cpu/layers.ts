/** CPU kernels of the layers in ../layers.ts: the plain math, accumulated in float64. */
import { type StorageArray, type Tensor, cpu, cpuStorage, cpuValues, empty, registerCpuMap, registerKernel } from '@phalanx/core';
import { geluErf64, silu64 } from '../activations.js';
import type { CrossEntropyAttrs, EmbeddingAttrs, GeluAttrs, LayerNormAttrs, LerpAttrs, MixAttrs, RmsNormAttrs, RowAttrs, SoftcapAttrs, XieluCoefficients } from '../layers.js';

type Values = ArrayLike<number>;

/** log(sum(exp(v[base .. base + d]))), with the row max taken out first so exp cannot overflow. */
function logSumExp(v: Values, base: number, d: number): number {
  let m = -Infinity;
  for (let j = 0; j < d; j++) m = Math.max(m, v[base + j]!);
  let s = 0;
  for (let j = 0; j < d; j++) s += Math.exp(v[base + j]! - m);
  return m + Math.log(s);
}

/**
 * Registers a row kernel: `row(values, base, out, r, attrs)` writes what row r (the d values of input 0 from
 * `base`) gives. The other inputs' values come along in `values`.
 */
function rows<A extends RowAttrs>(op: string, row: (values: Values[], base: number, o: StorageArray, r: number, attrs: A) => void): void {
  registerKernel({
    op,
    backend: 'cpu',
    fn: (inputs: Tensor[], attrs: A) => {
      const out = empty(attrs.outShape, { backend: cpu });
      const o = cpuStorage(out);
      const values = inputs.map(cpuValues);
      for (let r = 0; r < attrs.rows; r++) row(values, r * attrs.d, o, r, attrs);
      return out;
    },
  });
}

// Registered on import (the package lists its kernel files under sideEffects).
rows<RmsNormAttrs>('rmsNorm', ([x, w], base, o, _r, { d, eps, weightOffset, scale, activation }) => {
  let ss = 0;
  for (let j = 0; j < d; j++) ss += x![base + j]! ** 2;
  const inv = scale / Math.sqrt(ss / d + eps);
  for (let j = 0; j < d; j++) {
    const y = x![base + j]! * inv * (w ? w[j]! + weightOffset : 1);
    o[base + j] = activation === 'silu' ? silu64(y) : y;
  }
});
rows<LayerNormAttrs>('layerNorm', ([x, ...rest], base, o, _r, { d, eps, hasWeight, hasBias }) => {
  const w = hasWeight ? rest[0] : undefined;
  const b = hasBias ? rest[hasWeight ? 1 : 0] : undefined;
  let mean = 0;
  for (let j = 0; j < d; j++) mean += x![base + j]!;
  mean /= d;
  let variance = 0;
  for (let j = 0; j < d; j++) variance += (x![base + j]! - mean) ** 2;
  const inv = 1 / Math.sqrt(variance / d + eps);
  for (let j = 0; j < d; j++) o[base + j] = (x![base + j]! - mean) * inv * (w ? w[j]! : 1) + (b ? b[j]! : 0);
});
rows('softmax', ([x], base, o, _r, { d }) => {
  const lse = logSumExp(x!, base, d);
  for (let j = 0; j < d; j++) o[base + j] = Math.exp(x![base + j]! - lse);
});
rows('logSoftmax', ([x], base, o, _r, { d }) => {
  const lse = logSumExp(x!, base, d);
  for (let j = 0; j < d; j++) o[base + j] = x![base + j]! - lse;
});
rows('logsumexp', ([x], base, o, r, { d }) => {
  o[r] = logSumExp(x!, base, d);
});
rows<CrossEntropyAttrs>('crossEntropy', ([x, targets], base, o, r, { d, ignoreIndex }) => {
  const t = targets![r]!;
  // an out-of-range target (only a target tensor can hold one) gives NaN, as on the GPU
  o[r] = t === ignoreIndex ? 0 : t >= 0 && t < d ? logSumExp(x!, base, d) - x![base + t]! : NaN;
});

registerCpuMap<EmbeddingAttrs>(
  'embedding',
  ([w, ids], i, { vocab, d }) => {
    const id = ids![Math.floor(i / d)]!;
    return id >= 0 && id < vocab ? w![id * d + (i % d)]! : NaN;
  },
  (_inputs, { outShape }) => outShape,
);
registerCpuMap('silu', ([x], i) => silu64(x![i]!));
registerCpuMap<GeluAttrs>('gelu', ([x], i, { approximate }) => {
  const v = x![i]!;
  if (approximate === 'tanh') return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  return geluErf64(v);
});
registerCpuMap('swiglu', ([gate, up], i) => silu64(gate![i]!) * up![i]!);
registerCpuMap<XieluCoefficients>('xielu', ([x], i, { ap, an, bp, bn }) => {
  const u = x![i]!;
  return u > 0 ? ap * u * u + bp * u : an * u * u + bn * u;
});
registerCpuMap<SoftcapAttrs>('softcap', ([x], i, { cap }) => cap * Math.tanh(x![i]! / cap));
registerCpuMap<LerpAttrs>('lerp', ([a, b], i, { t }) => a![i]! + t * (b![i]! - a![i]!));
registerCpuMap<MixAttrs>('mix', ([a, b, wa, wb], i, { d }) => wa![i % d]! * a![i]! + wb![i % d]! * b![i]!);

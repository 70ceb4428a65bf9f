import { type Tensor, empty, registerKernel, tensor } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, program } from '@phalanx/webgpu';
import { type VarlenAttentionAttrs, keyBounds } from '../attention.js';
import { SCORE_UNIFORMS, kernelFits, scoreBindings, scoreHelpers, scoreKey, scoreUniforms } from './common.js';

/** Queries per workgroup, one per thread. */
export const BLOCK_Q = 64;

/** Keys per staged tile: K and V tiles together take at most 16 KiB of workgroup memory. */
export function blockK(D: number): number {
  const padded = Math.ceil(D / 4) * 4;
  return Math.min(64, Math.max(8, 2 ** Math.floor(Math.log2(2048 / padded))));
}

/**
 * Flash attention over packed documents. A workgroup takes BLOCK_Q consecutive queries of one head; each
 * thread keeps its query (pre-multiplied by scale and gain) and its output accumulator in registers. Key/value
 * tiles of BK rows are staged in workgroup memory, and only the tiles between the block's first key (lo of
 * its first query) and last key (hi of its last query) are visited, so windowed layers and short documents
 * cost what they see. Per tile, each thread scores the keys in its own [lo, hi], then updates its online
 * softmax once (running max m, sum l, accumulator rescaled by exp(m_old - m_new)). The optional state key is
 * the softmax's first entry.
 */
export function prefillProgram(a: VarlenAttentionAttrs, inputs: Tensor[]): Program {
  const extra = inputs.slice(3);
  const [q, k, v] = inputs as [Tensor, Tensor, Tensor];
  const BK = blockK(a.D);
  return cached(`varlen:prefill:${q.dtype}:${k.dtype}:${v.dtype}:${scoreKey(a, extra)}`, () =>
    program({
      name: 'varlenAttention',
      inputs: { q: q.dtype, k: k.dtype, v: v.dtype, ...scoreBindings(a, extra), bounds: 'u32' },
      outputs: { out: 'f32' },
      uniforms: { T: 'u32', ...SCORE_UNIFORMS },
      workgroupSize: BLOCK_Q,
      helpers: `${scoreHelpers(a, ['q', 'k', 'v'])}
const BQ: u32 = ${BLOCK_Q}u;
const BK: u32 = ${BK}u;
var<workgroup> Ks: array<vec4<f32>, ${BK * Math.ceil(a.D / 4)}>;
var<workgroup> Vs: array<vec4<f32>, ${BK * Math.ceil(a.D / 4)}>;
var<workgroup> blockKeys: vec2<u32>;`,
      main: `  let h = wid.y;
  let g = h / (u.Hq / u.Hkv);
  let first = wid.x * BQ;
  let i = first + lid.x;
  let qi = min(i, u.T - 1u); // threads past the end keep step with the barriers and write nothing
  if (lid.x == 0u) { blockKeys = vec2<u32>(bounds[2u * first], bounds[2u * (min(first + BQ, u.T) - 1u) + 1u] + 1u); }
  let keys = workgroupUniformLoad(&blockKeys);
  let lo = bounds[2u * qi];
  let hi = bounds[2u * qi + 1u];
  let mult = qmult(h);
  var qr: array<vec4<f32>, D4>;
  var acc: array<vec4<f32>, D4>;
  for (var d4 = 0u; d4 < D4; d4++) {
    qr[d4] = row4_q((qi * u.Hq + h) * D, d4) * mult;
    acc[d4] = vec4<f32>(0.0);
  }
  var m = MASKED;
  var l = 0.0;
  ${
    a.hasState
      ? `{
    let base = (qi * u.Hkv + g) * D;
    var s = 0.0;
    for (var d4 = 0u; d4 < D4; d4++) { s += dot(qr[d4], row4_ks(base, d4)); }
    m = capped(s);
    l = 1.0;
    for (var d4 = 0u; d4 < D4; d4++) { acc[d4] = row4_vs(base, d4); }
  }`
      : ''
  }
  for (var j0 = keys.x; j0 < keys.y; j0 += BK) {
    for (var e = lid.x; e < BK * D4; e += BQ) {
      let j = j0 + e / D4;
      var kk = vec4<f32>(0.0);
      var vv = vec4<f32>(0.0);
      if (j < keys.y) {
        let base = (j * u.Hkv + g) * D;
        kk = row4_k(base, e % D4);
        vv = row4_v(base, e % D4);
      }
      Ks[e] = kk;
      Vs[e] = vv;
    }
    workgroupBarrier();
    if (j0 <= hi && j0 + BK > lo) {
      var s: array<f32, BK>;
      var mNew = m;
      for (var jj = 0u; jj < BK; jj++) {
        let j = j0 + jj;
        var x = MASKED;
        if (j >= lo && j <= hi) {
          var dt = 0.0;
          for (var d4 = 0u; d4 < D4; d4++) { dt += dot(qr[d4], Ks[jj * D4 + d4]); }
          x = capped(dt);
        }
        s[jj] = x;
        mNew = max(mNew, x);
      }
      let alpha = exp(m - mNew);
      l *= alpha;
      for (var d4 = 0u; d4 < D4; d4++) { acc[d4] *= alpha; }
      for (var jj = 0u; jj < BK; jj++) {
        if (s[jj] > SEEN) {
          let p = exp(s[jj] - mNew);
          l += p;
          for (var d4 = 0u; d4 < D4; d4++) { acc[d4] += p * Vs[jj * D4 + d4]; }
        }
      }
      m = mNew;
    }
    workgroupBarrier();
  }
  if (i < u.T) {
    let base = (i * u.Hq + h) * D;
    for (var d = 0u; d < D; d++) { out[base + d] = acc[d / 4u][d % 4u] / l; }
  }`,
    }),
  );
}

/** Workgroups: query blocks x heads. */
const grid = (a: VarlenAttentionAttrs): [number, number] => [Math.ceil(a.T / BLOCK_Q), a.Hq];

async function varlenAttention(inputs: Tensor[], a: VarlenAttentionAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const out = empty([a.T, a.Hq, a.D], { backend });
  if (out.size === 0) return out;
  const bounds = tensor(keyBounds(a), [2 * a.T], { dtype: 'u32', backend });
  await backend.run(prefillProgram(a, inputs), [...inputs, bounds], [out], { T: a.T, ...scoreUniforms(a) }, [...grid(a), 1]);
  bounds.dispose();
  return out;
}

// Registered on import (listed under sideEffects).
registerKernel({
  op: 'varlenAttention',
  backend: 'webgpu',
  fn: varlenAttention,
  verify: (_inputs, a: VarlenAttentionAttrs, backend: WebGPUBackend) => kernelFits(a, grid(a), backend),
});

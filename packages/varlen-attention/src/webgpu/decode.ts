import { type Tensor, empty, registerKernel } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import type { KvAppendAttrs, KvAttendAttrs } from '../cache.js';
import { SCORE_UNIFORMS, kernelFits, scoreBindings, scoreHelpers, scoreKey, scoreUniforms } from './common.js';

const WG = 64;
/** Keys per split of the decode kernel: a context up to this long is one split; longer ones spread over workgroups. */
export const SPLIT_KEYS = 256;
/** Sentinel of `window` for a global layer. */
const NO_WINDOW = 0xffffffff;

/**
 * Scatters new tokens into the ring: token t of sequence b (rows starts[b]..starts[b + 1] of k and v) goes to
 * slot (position mod slots). Only each sequence's last `slots` new tokens are written, so no two invocations
 * write one slot. seqs = [new lengths (batch), starts (batch + 1)].
 */
function appendProgram(k: Tensor, v: Tensor): Program {
  return cached(`varlen:append:${k.dtype}:${v.dtype}`, () =>
    program({
      name: 'kvAppend',
      inputs: { k: k.dtype, v: v.dtype, seqs: 'u32' },
      outputs: { kc: 'f32', vc: 'f32' },
      uniforms: { n: 'u32', batch: 'u32', slots: 'u32', row: 'u32' },
      workgroupSize: WG,
      main: `  if (idx >= u.n) { return; }
  let t = idx / u.row;
  // the sequence holding token t: the last b with starts[b] <= t (empty sequences share their start)
  var b = 0u;
  var top = u.batch - 1u;
  while (b < top) {
    let mid = (b + top + 1u) / 2u;
    if (seqs[u.batch + mid] <= t) { b = mid; } else { top = mid - 1u; }
  }
  let start = seqs[u.batch + b];
  let end = seqs[u.batch + b + 1u];
  if (end - t > u.slots) { return; }
  let position = seqs[b] - (end - start) + (t - start);
  let at = (b * u.slots + position % u.slots) * u.row + idx % u.row;
  kc[at] = load_k(idx);
  vc[at] = load_v(idx);`,
    }),
  );
}

async function kvAppend(inputs: Tensor[], a: KvAppendAttrs, backend: WebGPUBackend): Promise<Tensor[]> {
  const [k, v, seqs, cacheK, cacheV, positions] = inputs as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
  const n = a.tokens * a.Hkv * a.D;
  const uniforms = { n, batch: a.batch, slots: a.slots, row: a.Hkv * a.D };
  await backend.run(appendProgram(k, v), [k, v, seqs], [cacheK, cacheV], uniforms, grid1d(n, WG, backend.limits.maxComputeWorkgroupsPerDimension));
  // the new lengths head seqs: recorded after the scatter, so the kernels that follow read them
  backend.copyBuffer(seqs, positions, 4 * a.batch);
  return [];
}

/**
 * Pass 1 of a decode step: workgroup (split, h, b) attends query head h of sequence b over keys
 * lo + split * SPLIT_KEYS .. (up to SPLIT_KEYS of them, not past the step's token t), where lo is the first
 * key the window keeps. It writes that split's max logit m, sum l and unnormalised output to `part`
 * [b, h, split, D + 2]. Split 0 also takes the state key. Threads score keys in parallel, reduce m and l
 * in workgroup memory, then accumulate one output dim each.
 */
function partialProgram(a: KvAttendAttrs, q: Tensor, extra: Tensor[]): Program {
  return cached(`varlen:decode:${q.dtype}:${scoreKey(a, extra)}`, () =>
    program({
      name: 'kvAttend',
      inputs: { q: q.dtype, kc: 'f32', vc: 'f32', positions: 'u32', ...scoreBindings(a, extra) },
      outputs: { part: 'f32' },
      uniforms: { ...SCORE_UNIFORMS, slots: 'u32', window: 'u32', splits: 'u32' },
      workgroupSize: WG,
      helpers: `${scoreHelpers(a, ['q', 'kc'])}
const WG: u32 = ${WG}u;
const CH: u32 = ${SPLIT_KEYS}u;
var<workgroup> qs: array<vec4<f32>, D4>;
var<workgroup> w: array<f32, CH>;
var<workgroup> red: array<f32, WG>;
var<workgroup> stateWeight: f32;
/** The workgroup's max (or sum) of x: every thread gets it. */
fn reduce(x: f32, lane: u32, isMax: bool) -> f32 {
  red[lane] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { red[lane] = select(red[lane] + red[lane + s], max(red[lane], red[lane + s]), isMax); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`,
      main: `  let split = wid.x;
  let h = wid.y;
  let b = wid.z;
  let g = h / (u.Hq / u.Hkv);
  let t = positions[b] - 1u;
  let j0 = t - min(t, u.window) + split * CH;
  let count = select(0u, min(CH, t + 1u - j0), j0 <= t); // keys of this split
  let mult = qmult(h);
  for (var d4 = lid.x; d4 < D4; d4 += WG) { qs[d4] = row4_q((b * u.Hq + h) * D, d4) * mult; }
  workgroupBarrier();
  var mx = MASKED;
  for (var jj = lid.x; jj < count; jj += WG) {
    let base = ((b * u.slots + (j0 + jj) % u.slots) * u.Hkv + g) * D;
    var s = 0.0;
    for (var d4 = 0u; d4 < D4; d4++) { s += dot(qs[d4], row4_kc(base, d4)); }
    w[jj] = capped(s);
    mx = max(mx, w[jj]);
  }
  ${
    a.hasState
      ? `var xs = MASKED;
  if (split == 0u && lid.x == 0u) {
    var s = 0.0;
    for (var d4 = 0u; d4 < D4; d4++) { s += dot(qs[d4], row4_ks((b * u.Hkv + g) * D, d4)); }
    xs = capped(s);
    mx = max(mx, xs);
  }`
      : ''
  }
  let m = reduce(mx, lid.x, true);
  var sum = 0.0;
  for (var jj = lid.x; jj < count; jj += WG) {
    w[jj] = exp(w[jj] - m);
    sum += w[jj];
  }
  ${a.hasState ? `if (lid.x == 0u) { stateWeight = exp(xs - m); sum += stateWeight; }` : ''}
  let l = reduce(sum, lid.x, false);
  let pb = ((b * u.Hq + h) * u.splits + split) * (D + 2u);
  for (var d = lid.x; d < D; d += WG) {
    var o = 0.0;
    for (var jj = 0u; jj < count; jj++) { o += w[jj] * vc[((b * u.slots + (j0 + jj) % u.slots) * u.Hkv + g) * D + d]; }
    ${a.hasState ? `if (split == 0u) { o += stateWeight * load_vs((b * u.Hkv + g) * D + d); }` : ''}
    part[pb + 2u + d] = o;
  }
  if (lid.x == 0u) {
    part[pb] = m;
    part[pb + 1u] = l;
  }`,
    }),
  );
}

/** Pass 2: each output element merges its row's splits, weighting each by exp(m_split - max m). */
function combineProgram(D: number): Program {
  return cached(`varlen:combine:${D}`, () =>
    program({
      name: 'kvAttendCombine',
      inputs: { part: 'f32' },
      outputs: { out: 'f32' },
      uniforms: { n: 'u32', splits: 'u32' },
      workgroupSize: WG,
      main: `  if (idx >= u.n) { return; }
  let stride = ${D + 2}u;
  let base = idx / ${D}u * u.splits * stride;
  var m = part[base];
  for (var s = 1u; s < u.splits; s++) { m = max(m, part[base + s * stride]); }
  var l = 0.0;
  var o = 0.0;
  for (var s = 0u; s < u.splits; s++) {
    let e = exp(part[base + s * stride] - m);
    l += e * part[base + s * stride + 1u];
    o += e * part[base + s * stride + 2u + idx % ${D}u];
  }
  out[idx] = o / l;`,
    }),
  );
}

/** Workgroups of pass 1: splits x heads x sequences. */
const grid = (a: KvAttendAttrs): [number, number, number] => [Math.ceil(a.maxKeys / SPLIT_KEYS), a.Hq, a.batch];

async function kvAttend(inputs: Tensor[], a: KvAttendAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const [q, cacheK, cacheV, positions, ...extra] = inputs as [Tensor, Tensor, Tensor, Tensor, ...Tensor[]];
  const { batch, Hq, D } = a;
  const [splits] = grid(a);
  const out = empty([batch, Hq, D], { backend });
  const part = empty([batch * Hq * splits * (D + 2)], { backend });
  const uniforms = { ...scoreUniforms(a), slots: a.slots, window: Number.isFinite(a.window) ? a.window : NO_WINDOW, splits };
  await backend.run(partialProgram(a, q, extra), [q, cacheK, cacheV, positions, ...extra], [part], uniforms, grid(a));
  await backend.run(combineProgram(D), [part], [out], { n: out.size, splits }, grid1d(out.size, WG, backend.limits.maxComputeWorkgroupsPerDimension));
  part.dispose();
  return out;
}

// Registered on import (listed under sideEffects). kvAppend updates the cache in place, so it never declines
// (a fallback would update a copy).
registerKernel({ op: 'kvAppend', backend: 'webgpu', fn: kvAppend });
registerKernel({
  op: 'kvAttend',
  backend: 'webgpu',
  fn: kvAttend,
  verify: (_inputs, a: KvAttendAttrs, backend: WebGPUBackend) => kernelFits(a, grid(a), backend),
});

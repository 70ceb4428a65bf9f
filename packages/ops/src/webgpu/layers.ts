/**
 * WebGPU kernels of the layers in ../layers.ts. Two templates serve them all: `map` (one invocation per
 * output element) and `rows` (one workgroup per row, with tree reductions in workgroup memory, so rows of
 * any length, e.g. a 128k vocabulary, use the whole workgroup). Inputs of any float dtype are read with
 * `load_<name>(i)` and computed in f32.
 */
import { type Tensor, empty, registerKernel } from '@phalanx/core';
import { type Program, type UniformType, type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import { ACTIVATIONS_WGSL } from '../activations.js';
import type { CrossEntropyAttrs, EmbeddingAttrs, GeluAttrs, LayerNormAttrs, LerpAttrs, MixAttrs, RmsNormAttrs, RowAttrs, SoftcapAttrs, XieluCoefficients } from '../layers.js';

const WG = 256;

/** NaN, for out-of-range ids; made at run time because a constant expression may not be NaN. */
const NAN = /* wgsl */ `
fn nan() -> f32 { let bits = 0x7fc00000u; return bitcast<f32>(bits); }`;

/** Functions the elementwise kernels share. */
const MATH = `${NAN}${ACTIVATIONS_WGSL}`;

/** Tree reductions over the workgroup; every invocation must call them (from workgroup-uniform control flow). */
function treeReduce(name: string, combine: string): string {
  return /* wgsl */ `
fn ${name}(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] = ${combine}(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier(); // all have read red[0] before a next reduction overwrites it
  return total;
}`;
}
const REDUCE = `${NAN}\nvar<workgroup> red: array<f32, ${WG}>;\nfn add(a: f32, b: f32) -> f32 { return a + b; }` + treeReduce('reduce_sum', 'add') + treeReduce('reduce_max', 'max');

/** A strided loop of the workgroup over the row's elements j. */
const EACH = 'for (var j = lid.x; j < u.d; j += WG_X)';

/** The row's max `m` and `s` = sum(exp(x - m)): the stable core of the softmax family and cross-entropy. */
const MAX_AND_SUM = /* wgsl */ `
  var mx = bitcast<f32>(0xff7fffffu); // -FLT_MAX
  ${EACH} { mx = max(mx, load_x(base + j)); }
  let m = reduce_max(lid.x, mx);
  var acc = 0.0;
  ${EACH} { acc += exp(load_x(base + j) - m); }
  let s = reduce_sum(lid.x, acc);`;

/** A part of a kernel spec: fixed, or made from the attrs. */
type FromAttrs<A, T> = T | ((attrs: A) => T);

const resolve = <A, T>(part: FromAttrs<A, T>, attrs: A): T => (typeof part === 'function' ? (part as (attrs: A) => T)(attrs) : part);

interface KernelSpec<A> {
  /** Binding names of the inputs, in order (a norm binds only the weight and bias it was given). */
  inputs: FromAttrs<A, string[]>;
  /** Uniforms besides the sizes, and their values from the attrs (values of uniforms not declared are ignored). */
  uniforms?: FromAttrs<A, Record<string, UniformType>>;
  values?: (attrs: A) => Record<string, number>;
  /** WGSL functions besides the template's. */
  helpers?: (attrs: A) => string;
  /** WGSL of the entry point after the bounds check; it writes `store_out`. It may vary with the binding names and with what `variant` keys. */
  body: FromAttrs<A, string>;
  /** What else in the attrs changes the WGSL (uniforms, helpers or body), for the cache key. */
  variant?: (attrs: A) => string;
}

/** The program for these bindings, dtypes and variant, built once. */
function build<A>(op: string, spec: KernelSpec<A>, attrs: A, inputs: Tensor[], sizes: Record<string, UniformType>, helpers: string, head: string): Program {
  const names = resolve(spec.inputs, attrs);
  let key = `ops:${op}:`;
  for (let i = 0; i < names.length; i++) key += `${names[i]}=${inputs[i]!.dtype},`;
  key += spec.variant?.(attrs) ?? '';
  return cached(key, () => {
    const bindings = Object.fromEntries(names.map((name, i) => [name, inputs[i]!.dtype]));
    const uniforms = { ...sizes, ...(spec.uniforms && resolve(spec.uniforms, attrs)) };
    return program({ name: op, inputs: bindings, outputs: { out: 'f32' }, uniforms, workgroupSize: WG, helpers: helpers + (spec.helpers?.(attrs) ?? ''), main: `${head}\n${resolve(spec.body, attrs)}` });
  });
}

/** An elementwise kernel over the output's elements `idx`; the output has the first input's shape unless `shape` says otherwise. */
function map<A>(op: string, spec: KernelSpec<A> & { shape?: (attrs: A) => readonly number[] }): void {
  registerKernel({
    op,
    backend: 'webgpu',
    fn: async (inputs: Tensor[], attrs: A, backend: WebGPUBackend) => {
      const out = empty(spec.shape?.(attrs) ?? inputs[0]!.shape, { backend });
      const prog = build(op, spec, attrs, inputs, { n: 'u32' }, MATH, '  if (idx >= u.n) { return; }');
      await backend.run(prog, inputs, [out], { n: out.size, ...spec.values?.(attrs) }, grid1d(out.size, WG));
      return out;
    },
  });
}

/** A row kernel: one workgroup per row of `u.d` elements from `base`, with `reduce_sum` and `reduce_max`. */
function rows<A extends RowAttrs>(op: string, spec: KernelSpec<A>): void {
  const head = `  let row = wid.x + wid.y * nwg.x;
  if (row >= u.rows) { return; } // workgroup-uniform, so the barriers in the reductions stay in uniform control flow
  let base = row * u.d;`;
  registerKernel({
    op,
    backend: 'webgpu',
    fn: async (inputs: Tensor[], attrs: A, backend: WebGPUBackend) => {
      const out = empty(attrs.outShape, { backend });
      const prog = build(op, spec, attrs, inputs, { rows: 'u32', d: 'u32' }, REDUCE, head);
      await backend.run(prog, inputs, [out], { rows: attrs.rows, d: attrs.d, ...spec.values?.(attrs) }, grid1d(attrs.rows, 1));
      return out;
    },
  });
}

// Registered on import (the package lists its kernel files under sideEffects).
// scale and activation add WGSL only when used, so the plain norm keeps its shader; the scale folds into inv, once per row
rows<RmsNormAttrs>('rmsNorm', {
  inputs: (a) => (a.hasWeight ? ['x', 'w'] : ['x']),
  uniforms: (a) => ({ eps: 'f32', weight_offset: 'f32', ...(a.scale !== 1 ? { scale: 'f32' } : {}) }),
  values: (a) => ({ eps: a.eps, weight_offset: a.weightOffset, scale: a.scale }),
  helpers: (a) => (a.activation ? ACTIVATIONS_WGSL : ''),
  variant: (a) => `${a.scale !== 1 ? 'scale,' : ''}${a.activation ?? ''}`,
  body: (a) => {
    const y = `load_x(base + j) * inv${a.hasWeight ? ' * (load_w(j) + u.weight_offset)' : ''}`;
    return `
var acc = 0.0;
${EACH} { let v = load_x(base + j); acc += v * v; }
let inv = inverseSqrt(reduce_sum(lid.x, acc) / f32(u.d) + u.eps)${a.scale !== 1 ? ' * u.scale' : ''};
${EACH} { store_out(base + j, ${a.activation === 'silu' ? `silu(${y})` : y}); }`;
  },
});
rows<LayerNormAttrs>('layerNorm', {
  inputs: (a) => ['x', ...(a.hasWeight ? ['w'] : []), ...(a.hasBias ? ['b'] : [])],
  uniforms: { eps: 'f32' },
  values: (a) => ({ eps: a.eps }),
  // two passes (mean, then the variance around it) avoid the cancellation of E[x²] - E[x]²
  body: (a) => `
var acc = 0.0;
${EACH} { acc += load_x(base + j); }
let mean = reduce_sum(lid.x, acc) / f32(u.d);
acc = 0.0;
${EACH} { let c = load_x(base + j) - mean; acc += c * c; }
let inv = inverseSqrt(reduce_sum(lid.x, acc) / f32(u.d) + u.eps);
${EACH} { store_out(base + j, (load_x(base + j) - mean) * inv${a.hasWeight ? ' * load_w(j)' : ''}${a.hasBias ? ' + load_b(j)' : ''}); }`,
});
rows('softmax', { inputs: ['x'], body: `${MAX_AND_SUM}\n  ${EACH} { store_out(base + j, exp(load_x(base + j) - m) / s); }` });
// (x - m) - log(s), not x - (m + log(s)): the latter rounds to the scale of x, which may be far larger than the result
rows('logSoftmax', { inputs: ['x'], body: `${MAX_AND_SUM}\n  ${EACH} { store_out(base + j, (load_x(base + j) - m) - log(s)); }` });
rows('logsumexp', { inputs: ['x'], body: `${MAX_AND_SUM}\n  if (lid.x == 0u) { store_out(row, m + log(s)); }` });
rows<CrossEntropyAttrs>('crossEntropy', {
  inputs: ['x', 'targets'],
  uniforms: { ignore_index: 'i32' },
  values: (a) => ({ ignore_index: a.ignoreIndex }),
  // A row holding NaN or +Infinity gives NaN, as on the CPU (-Infinity masks a token), written as nan() rather
  // than left to the loss arithmetic: a compiler may assume floats are never NaN or infinite. Such a row has m
  // NaN or +Infinity, or else s NaN (its exp(NaN - m) term); a row of -Infinity only has s = 0. Tested on the
  // bits of m and s once per row, not on each logit.
  body: `${MAX_AND_SUM}
if (lid.x == 0u) {
  let t = i32(targets[row]);
  let mb = bitcast<u32>(m) & 0x7fffffffu;
  let sb = bitcast<u32>(s) & 0x7fffffffu;
  let finite = mb < 0x7f800000u && sb < 0x7f800000u && sb != 0u;
  var loss = nan(); // an out-of-range target, or a row that is not finite
  if (t == u.ignore_index) { loss = 0.0; } else if (t >= 0 && u32(t) < u.d && finite) { loss = (m - load_x(base + u32(t))) + log(s); }
  store_out(row, loss);
}`,
});

map<EmbeddingAttrs>('embedding', {
  inputs: ['w', 'ids'],
  uniforms: { d: 'u32', vocab: 'u32' },
  values: (a) => ({ d: a.d, vocab: a.vocab }),
  shape: (a) => a.outShape,
  // an out-of-range id (negative i32 ids wrap to large u32) reads row 0 instead, so nothing is read out of bounds, and writes NaN
  body: `  let id = u32(ids[idx / u.d]);
let ok = id < u.vocab;
store_out(idx, select(nan(), load_w(select(0u, id, ok) * u.d + idx % u.d), ok));`,
});
map('silu', { inputs: ['x'], body: '  store_out(idx, silu(load_x(idx)));' });
map<GeluAttrs>('gelu', {
  inputs: ['x'],
  uniforms: { tanh_form: 'u32' },
  values: (a) => ({ tanh_form: a.approximate === 'tanh' ? 1 : 0 }),
  body: '  store_out(idx, gelu(load_x(idx), u.tanh_form));',
});
map('swiglu', { inputs: ['gate', 'up'], body: '  store_out(idx, silu(load_gate(idx)) * load_up(idx));' });
map<XieluCoefficients>('xielu', {
  inputs: ['x'],
  uniforms: { ap: 'f32', an: 'f32', bp: 'f32', bn: 'f32' },
  values: ({ ap, an, bp, bn }) => ({ ap, an, bp, bn }),
  body: `  let v = load_x(idx);
store_out(idx, select(u.an * v * v + u.bn * v, u.ap * v * v + u.bp * v, v > 0.0));`,
});
map<SoftcapAttrs>('softcap', {
  inputs: ['x'],
  uniforms: { cap: 'f32' },
  values: (a) => ({ cap: a.cap }),
  body: '  store_out(idx, u.cap * tanh_safe(load_x(idx) / u.cap));',
});
map<LerpAttrs>('lerp', {
  inputs: ['a', 'b'],
  uniforms: { t: 'f32' },
  values: (a) => ({ t: a.t }),
  body: `  let va = load_a(idx);
store_out(idx, va + u.t * (load_b(idx) - va));`,
});
map<MixAttrs>('mix', {
  inputs: ['a', 'b', 'wa', 'wb'],
  uniforms: { d: 'u32' },
  values: (a) => ({ d: a.d }),
  body: `  let c = idx % u.d;
store_out(idx, load_wa(c) * load_a(idx) + load_wb(c) * load_b(idx));`,
});

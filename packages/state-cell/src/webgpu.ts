import { type DType, type Tensor, empty, registerKernel } from '@phalanx/core';
import { ACTIVATIONS_WGSL } from '@phalanx/ops';
import { type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import type { ParamName, StateCellAttrs } from './index.js';

const WG = 64;

/** Workgroup memory of one row: the state, its normalized copy, a reduction buffer and the MLP's hidden values. */
const sharedFloats = ({ D, heads, hidden }: StateCellAttrs) => 3 * D + heads * hidden;

/** The MLP's activation as `act(x)`, from the same WGSL functions as the ops of @phalanx/ops. */
const ACTIVATIONS = {
  gelu: `${ACTIVATIONS_WGSL}\nfn act(x: f32) -> f32 { return gelu(x, 0u); }`,
  silu: `${ACTIVATIONS_WGSL}\nfn act(x: f32) -> f32 { return silu(x); }`,
};

/** `for` over this thread's share of the row's D values, as i. */
const each = (D: number, body: string) => `for (var i = lid.x; i < ${D}u; i += WG_X) { ${body} }\n  workgroupBarrier();`;

/**
 * Sums of each group of `size` consecutive values of red, left at the group's first value: a tree folded
 * in place, all groups at once; each round adds the upper part of every group onto its lower part (the two
 * parts never overlap, so one barrier per round suffices).
 */
function groupSums(D: number, size: number): string {
  const rounds: string[] = [];
  for (let len = size; len > 1; ) {
    const half = Math.ceil(len / 2);
    rounds.push(each(D, `if (i % ${size}u < ${len - half}u) { red[i] += red[i + ${half}u]; }`));
    len = half;
  }
  return rounds.join('\n  ');
}

/** LayerNorm or RMSNorm of array x in place, over groups of `size`, then * weight + bias when present. */
function normCode(a: StateCellAttrs, x: string, size: number, w: ParamName, b: ParamName): string {
  const { D } = a;
  const group = `red[i / ${size}u * ${size}u] / ${size}.0`;
  const scale = `${a.names.includes(w) ? ` * load_${w}(i % ${size}u)` : ''}${a.names.includes(b) ? ` + load_${b}(i % ${size}u)` : ''}`;
  const center = a.norm === 'layer' ? [each(D, `red[i] = ${x}[i];`), groupSums(D, size), each(D, `${x}[i] -= ${group};`)] : [];
  return [...center, each(D, `red[i] = ${x}[i] * ${x}[i];`), groupSums(D, size), each(D, `${x}[i] = ${x}[i] * inverseSqrt(${group} + u.eps)${scale};`)].join('\n  ');
}

/** The whole cell, K steps, for one row per workgroup. */
function cellProgram(a: StateCellAttrs, dtypes: DType[]) {
  const { D, heads, d, hidden, perHeadMlp, names } = a;
  const key = `state-cell:${JSON.stringify({ D, heads, hidden, perHeadMlp, names, dtypes, n: a.norm, act: a.activation, pre: a.preNormSize, post: a.postNormSize })}`;
  return cached(key, () => {
    const has = (n: ParamName) => names.includes(n);
    const H = heads * hidden;
    return program({
      name: 'stateCell',
      inputs: Object.fromEntries([['S', dtypes[0]!], ...names.map((n, i) => [n, dtypes[i + 1]!])]),
      outputs: { out: 'f32' },
      uniforms: { rows: 'u32', steps: 'u32', eps: 'f32' },
      workgroupSize: WG,
      helpers: `var<workgroup> s: array<f32, ${D}>;
var<workgroup> n: array<f32, ${D}>;
var<workgroup> red: array<f32, ${D}>;
var<workgroup> hid: array<f32, ${H}>;
${ACTIVATIONS[a.activation]}`,
      main: `  let row = wid.x + wid.y * nwg.x;
  if (row >= u.rows) { return; }
  ${each(D, 's[i] = load_S(row * ' + D + 'u + i);')}
  for (var step = 0u; step < u.steps; step++) {
  ${each(D, 'n[i] = s[i];')}
  ${normCode(a, 'n', a.preNormSize, 'preW', 'preB')}
  for (var o = lid.x; o < ${H}u; o += WG_X) {
    let h = o / ${hidden}u;
    let m = o % ${hidden}u;
    let w = ${perHeadMlp ? `h * ${hidden * d}u` : '0u'} + m * ${d}u;
    var acc = ${has('fc1B') ? `load_fc1B(${perHeadMlp ? 'o' : 'm'})` : '0.0'};
    for (var j = 0u; j < ${d}u; j++) { acc += load_fc1W(w + j) * n[h * ${d}u + j]; }
    hid[o] = act(acc);
  }
  workgroupBarrier();
  ${each(D, `let h = i / ${d}u;
    let j = i % ${d}u;
    let w = ${perHeadMlp ? `h * ${d * hidden}u` : '0u'} + j * ${hidden}u;
    var acc = ${has('fc2B') ? `load_fc2B(${perHeadMlp ? 'i' : 'j'})` : '0.0'};
    for (var m = 0u; m < ${hidden}u; m++) { acc += load_fc2W(w + m) * hid[h * ${hidden}u + m]; }
    s[i] += load_stepSize(h) * acc;`)}
  ${normCode(a, 's', a.postNormSize, 'postW', 'postB')}
  }
  for (var i = lid.x; i < ${D}u; i += WG_X) { out[row * ${D}u + i] = s[i]; }`,
    });
  });
}

registerKernel({
  op: 'stateCell',
  backend: 'webgpu',
  fn: async (inputs: Tensor[], a: StateCellAttrs, backend: WebGPUBackend) => {
    const out = empty(a.outShape, { backend });
    if (a.rows === 0) return out;
    const prog = cellProgram(a, inputs.map((t) => t.dtype));
    await backend.run(prog, inputs, [out], { rows: a.rows, steps: a.steps, eps: a.eps }, grid1d(a.rows * WG, WG, backend.limits.maxComputeWorkgroupsPerDimension));
    return out;
  },
  verify: (_inputs, a: StateCellAttrs, backend: WebGPUBackend) => {
    const bytes = 4 * sharedFloats(a);
    return bytes <= backend.limits.maxComputeWorkgroupStorageSize! || `a row needs ${bytes} bytes of workgroup memory (D = ${a.D}, heads x hidden = ${a.heads * a.hidden})`;
  },
});

import type { DType, Tensor } from '@phalanx/core';
import type { UniformType, WebGPUBackend } from '@phalanx/webgpu';
import type { ScoreAttrs } from '../attention.js';

/** The largest head dim the kernels take (a query and its accumulator live in registers); larger ones run on the CPU. */
export const MAX_DIM = 256;

/**
 * The logit of a key a query does not see. Finite, because drivers may compile with fast math where
 * infinities are undefined. Kernels tell masked keys by their positions, never by comparing logits with it:
 * a NaN logit (a NaN key) compares false with anything, and must reach the query's output.
 */
const MASKED = '-3.0e38';

/** The optional score inputs (qGain, state k, state v) as program input entries, in binding order. */
export function scoreBindings(a: ScoreAttrs, extra: Tensor[]): Record<string, DType> {
  const names = [...(a.hasGain ? ['gain'] : []), ...(a.hasState ? ['ks', 'vs'] : [])];
  return Object.fromEntries(names.map((n, i) => [n, extra[i]!.dtype]));
}

/** Uniforms every attention kernel reads: scale and softcap (0 = off) of the logits, and the head counts. */
export const SCORE_UNIFORMS: Record<string, UniformType> = { Hq: 'u32', Hkv: 'u32', scale: 'f32', softcap: 'f32' };

export function scoreUniforms(a: ScoreAttrs): Record<string, number> {
  return { Hq: a.Hq, Hkv: a.Hkv, scale: a.scale, softcap: a.softcap };
}

/**
 * WGSL shared by the kernels, for head dim D padded to D4 vec4s: `row4_<x>(base, d4)` reads dims
 * 4 d4 .. 4 d4 + 3 of the row at `base` of any input dtype (zeros past D); `qmult(h)` is the scale times
 * the head's gain (folded into q); `capped(x)` applies the softcap; MASKED as above.
 */
export function scoreHelpers(a: ScoreAttrs, rows: string[]): string {
  const { D } = a;
  const row4 = (x: string) =>
    D % 4 === 0
      ? `fn row4_${x}(base: u32, d4: u32) -> vec4<f32> { let i = base + d4 * 4u; return vec4<f32>(load_${x}(i), load_${x}(i + 1u), load_${x}(i + 2u), load_${x}(i + 3u)); }`
      : `fn row4_${x}(base: u32, d4: u32) -> vec4<f32> {
  var r = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) { if (d4 * 4u + c < D) { r[c] = load_${x}(base + d4 * 4u + c); } }
  return r;
}`;
  return `const D: u32 = ${D}u;
const D4: u32 = ${Math.ceil(D / 4)}u;
const MASKED: f32 = ${MASKED};
${[...rows, ...(a.hasState ? ['ks', 'vs'] : [])].map(row4).join('\n')}
fn qmult(h: u32) -> f32 { return u.scale${a.hasGain ? ' * load_gain(h)' : ''}; }
fn capped(x: f32) -> f32 {
  if (u.softcap > 0.0) { return u.softcap * tanh(x / u.softcap); }
  return x;
}`;
}

/** Declines head dims whose query and accumulator would not fit in registers, and grids over the device's limit. */
export function kernelFits(a: ScoreAttrs, grid: number[], backend: WebGPUBackend): true | string {
  if (a.D > MAX_DIM) return `head dim ${a.D} > ${MAX_DIM}`;
  const max = backend.limits.maxComputeWorkgroupsPerDimension!;
  return grid.every((n) => n <= max) || `grid ${grid.join(' x ')} exceeds ${max} workgroups per dimension`;
}

/** Program cache key part for the score options. */
export function scoreKey(a: ScoreAttrs, extra: Tensor[]): string {
  return `${a.D}:${a.hasGain}:${a.hasState}:${extra.map((t) => t.dtype).join(',')}`;
}

/**
 * For head dims that are a multiple of 4: the named inputs viewed as 16-byte (f32) or 8-byte (f16, bf16)
 * elements, with `row4_<x>` readers that load 4 dims at once (instead of scoreHelpers' scalar ones).
 */
export function row4Views(inputs: Record<string, DType>): { views: Record<string, string>; helpers: string } {
  const views: Record<string, string> = {};
  const helpers: string[] = [];
  for (const [x, dtype] of Object.entries(inputs)) {
    views[x] = dtype === 'f32' ? 'vec4<f32>' : 'vec2<u32>';
    const half = dtype === 'f16' ? 'f16_bits_to_f32' : 'bf16_bits_to_f32';
    const body = dtype === 'f32' ? `return ${x}[base / 4u + d4];` : `let p = ${x}[base / 4u + d4];\n  return vec4<f32>(${half}(p.x & 0xffffu), ${half}(p.x >> 16u), ${half}(p.y & 0xffffu), ${half}(p.y >> 16u));`;
    helpers.push(`fn row4_${x}(base: u32, d4: u32) -> vec4<f32> {\n  ${body}\n}`);
  }
  return { views, helpers: helpers.join('\n') };
}

import { type DType, ShapeError } from '@phalanx/core';

/**
 * The WGSL helper layer. A kernel is described by its tensors, its uniforms and a body; this module
 * writes the bindings, the uniform struct, typed load/store helpers and the entry point around it, so a
 * kernel author writes only the arithmetic.
 *
 * Inside `main`:
 * - `idx` is the flat invocation index over a 2-D grid (see `grid1d`), `gid`, `lid`, `wid`, `nwg` the builtins;
 * - each input `x` has `load_x(i) -> f32` that upcasts any storage dtype (f16/bf16 unpacked, i8/u8 extracted),
 *   and the raw array `x` (f32/i32/u32 as themselves; f16/bf16/i8/u8 as packed `array<u32>`);
 * - each output `y` has `store_y(i, v: f32)` for f32 outputs and the raw array `y` for every dtype;
 * - uniforms are fields of `u` (e.g. `u.n`).
 */
export type UniformType = 'u32' | 'i32' | 'f32' | 'vec4<u32>' | 'vec4<i32>' | 'vec4<f32>' | `array<vec4<${'u32' | 'i32' | 'f32'}>, ${number}>`;

export interface ProgramSpec {
  /** Names the kernel in profiles and errors. */
  name: string;
  /** WGSL extensions (e.g. `subgroups`), written as `enable` directives at the top of the module; the device must have the matching features. */
  enables?: string[];
  /** Storage inputs in binding order, with their dtypes. */
  inputs?: Record<string, DType>;
  /** Storage outputs in binding order (after the inputs), with their dtypes. */
  outputs?: Record<string, DType>;
  /**
   * Raw WGSL element types for some bindings instead of the dtype's own (e.g. `vec4<f32>` for 16-byte loads
   * of an f32 tensor whose size is a multiple of 4); such inputs get no `load_` helper.
   */
  views?: Record<string, string>;
  /** Uniform fields in order (bound last). */
  uniforms?: Record<string, UniformType>;
  workgroupSize: number | [number, number, number];
  /** WGSL functions, consts and `var<workgroup>` declarations placed before the entry point. */
  helpers?: string;
  /** The entry point's body. */
  main: string;
}

export interface Program {
  readonly name: string;
  readonly code: string;
  readonly inputs: readonly [string, DType][];
  readonly outputs: readonly [string, DType][];
  /** The inputs then the outputs: the storage bindings in order (the uniforms follow them). */
  readonly bindings: readonly [string, DType][];
  readonly uniforms: readonly [string, UniformType][];
  /** Where each uniform goes in the uniform buffer, worked out once per program (dispatches reuse it). */
  readonly uniformLayout: UniformLayout;
  /** Invocations per workgroup along x (the stride of `idx` rows). */
  readonly workgroupSize: [number, number, number];
}

/** Storage element type of a dtype in WGSL: 16- and 8-bit dtypes are packed into u32 words. */
export function wgslStorageType(dtype: DType): 'f32' | 'i32' | 'u32' {
  return dtype === 'f32' ? 'f32' : dtype === 'i32' ? 'i32' : 'u32';
}

/** Bytes a GPU buffer needs for `size` elements of `dtype` (packed, rounded up to whole u32 words). */
export function gpuByteSize(dtype: DType, size: number): number {
  switch (dtype) {
    case 'f16':
    case 'bf16':
      return Math.ceil(size / 2) * 4;
    case 'i8':
    case 'u8':
      return Math.ceil(size / 4) * 4;
    default:
      return size * 4;
  }
}

/** Exact f16/bf16 conversions in integer arithmetic: WGSL's pack2x16float leaves rounding and overflow unspecified. */
export const HALF_HELPERS = /* wgsl */ `
fn f16_bits_to_f32(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    let v = f32(m) * 5.9604644775390625e-8;
    return select(v, -v, sign != 0u);
  }
  if (e == 31u) { return bitcast<f32>(sign | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}
fn bf16_bits_to_f32(b: u32) -> f32 { return bitcast<f32>(b << 16u); }
fn f32_to_f16_bits(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sign = (bits >> 16u) & 0x8000u;
  let exp = (bits >> 23u) & 0xffu;
  let mant = bits & 0x7fffffu;
  if (exp == 0xffu) { return sign | 0x7c00u | select(0u, 0x200u | (mant >> 13u), mant != 0u); }
  let e = i32(exp) - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    let m = mant | 0x800000u;
    let shift = u32(14 - e);
    let half = 1u << (shift - 1u);
    let rest = m & ((1u << shift) - 1u);
    var r = m >> shift;
    if (rest > half || (rest == half && (r & 1u) != 0u)) { r += 1u; }
    return sign | r;
  }
  var r = (u32(e) << 10u) | (mant >> 13u);
  let rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (r & 1u) != 0u)) { r += 1u; }
  return sign | r;
}
fn f32_to_bf16_bits(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu) != 0u) { return ((bits >> 16u) & 0xffffu) | 0x40u; }
  return ((bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u) & 0xffffu;
}
`;

function loadExpr(name: string, dtype: DType): string {
  switch (dtype) {
    case 'f32':
      return `${name}[i]`;
    case 'i32':
    case 'u32':
      return `f32(${name}[i])`;
    case 'f16':
      return `f16_bits_to_f32(extractBits(${name}[i >> 1u], (i & 1u) * 16u, 16u))`;
    case 'bf16':
      return `bf16_bits_to_f32(extractBits(${name}[i >> 1u], (i & 1u) * 16u, 16u))`;
    case 'i8':
      return `f32(extractBits(bitcast<i32>(${name}[i >> 2u]), (i & 3u) * 8u, 8u))`;
    case 'u8':
      return `f32(extractBits(${name}[i >> 2u], (i & 3u) * 8u, 8u))`;
  }
}

const UNIFORM_LAYOUT: Record<string, { size: number; align: number }> = {
  u32: { size: 4, align: 4 },
  i32: { size: 4, align: 4 },
  f32: { size: 4, align: 4 },
};

/** Byte offset, size and element kind of each uniform field under WGSL's uniform layout rules. */
export interface UniformLayout {
  fields: { name: string; offset: number; kind: 'u32' | 'i32' | 'f32'; count: number }[];
  size: number;
}

export function uniformLayout(uniforms: readonly [string, UniformType][]): UniformLayout {
  let offset = 0;
  const fields = uniforms.map(([name, type]) => {
    const array = /^array<vec4<(u32|i32|f32)>, (\d+)>$/.exec(type);
    const vec = /^vec4<(u32|i32|f32)>$/.exec(type);
    const kind = (array?.[1] ?? vec?.[1] ?? type) as 'u32' | 'i32' | 'f32';
    const { size, align } = array ? { size: 16 * Number(array[2]), align: 16 } : vec ? { size: 16, align: 16 } : UNIFORM_LAYOUT[type]!;
    offset = Math.ceil(offset / align) * align;
    const field = { name, offset, kind, count: size / 4 };
    offset += size;
    return field;
  });
  return { fields, size: Math.max(16, Math.ceil(offset / 16) * 16) };
}

/** Writes the full WGSL module of a kernel. */
export function program(spec: ProgramSpec): Program {
  const inputs = Object.entries(spec.inputs ?? {});
  const outputs = Object.entries(spec.outputs ?? {});
  const uniforms = Object.entries(spec.uniforms ?? {}) as [string, UniformType][];
  const wg: [number, number, number] = typeof spec.workgroupSize === 'number' ? [spec.workgroupSize, 1, 1] : spec.workgroupSize;
  const lines: string[] = (spec.enables ?? []).map((e) => `enable ${e};`);
  let binding = 0;
  const usesHalf = [...inputs, ...outputs].some(([, d]) => d === 'f16' || d === 'bf16');
  if (usesHalf || /f32_to_(bf)?16_bits|f16_bits_to_f32|bf16_bits_to_f32/.test(spec.main + (spec.helpers ?? ''))) lines.push(HALF_HELPERS);
  const views = spec.views ?? {};
  for (const [name, dtype] of inputs) {
    lines.push(`@group(0) @binding(${binding++}) var<storage, read> ${name}: array<${views[name] ?? wgslStorageType(dtype)}>;`);
    if (!views[name]) lines.push(`fn load_${name}(i: u32) -> f32 { return ${loadExpr(name, dtype)}; }`);
  }
  for (const [name, dtype] of outputs) {
    lines.push(`@group(0) @binding(${binding++}) var<storage, read_write> ${name}: array<${views[name] ?? wgslStorageType(dtype)}>;`);
    if (dtype === 'f32' && !views[name]) lines.push(`fn store_${name}(i: u32, v: f32) { ${name}[i] = v; }`);
  }
  if (uniforms.length > 0) {
    lines.push(`struct Uniforms {\n${uniforms.map(([n, t]) => `  ${n}: ${t},`).join('\n')}\n}`);
    lines.push(`@group(0) @binding(${binding++}) var<uniform> u: Uniforms;`);
  }
  if (spec.helpers) lines.push(spec.helpers);
  lines.push(
    `const WG_X: u32 = ${wg[0]}u;`,
    `@compute @workgroup_size(${wg.join(', ')})`,
    `fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,`,
    `        @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {`,
    `  let idx = gid.x + gid.y * nwg.x * WG_X;`,
    spec.main,
    `}`,
  );
  return { name: spec.name, code: lines.join('\n'), inputs, outputs, bindings: [...inputs, ...outputs], uniforms, uniformLayout: uniformLayout(uniforms), workgroupSize: wg };
}

/** A 2-D grid of workgroups covering `invocations` along `idx` without exceeding the per-dimension limit. */
export function grid1d(invocations: number, workgroupSize: number, maxPerDim = 65535): [number, number, number] {
  const groups = Math.max(1, Math.ceil(invocations / workgroupSize));
  if (groups <= maxPerDim) return [groups, 1, 1];
  const y = Math.ceil(groups / maxPerDim);
  if (y > maxPerDim) throw new ShapeError(`grid of ${invocations} invocations exceeds ${maxPerDim}^2 workgroups`);
  return [Math.ceil(groups / y), y, 1];
}

import { type DType, type Tensor, empty, registerKernel, tensor, zeros } from '@phalanx/core';
import { type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import type { HolographicAttrs, HolographicMode } from './index.js';
import { rotationTable } from './rotation.js';

const WG = 64;

/**
 * A rotation table as the kernels read it: per (row, lane k) the vec4 (cos_hi, sin_hi, cos_lo, sin_lo), where
 * hi is the f32 rounding of the float64 value and lo the rest. A turn by hi + lo keeps the rotation factor
 * exact to ~1e-15: with hi alone, e^{-i omega} would be off by ~4e-8 rad, an error the recurrence compounds
 * linearly with distance (~5e-3 rad after 131072 tokens), as large as the f32 angle error it avoids.
 */
function uploadTable({ cos, sin }: { cos: Float64Array; sin: Float64Array }, backend: WebGPUBackend): Tensor {
  const t = new Float32Array(cos.length * 4);
  for (let i = 0; i < cos.length; i++) {
    const [c, s] = [Math.fround(cos[i]!), Math.fround(sin[i]!)];
    t.set([c, s, cos[i]! - c, sin[i]! - s], 4 * i);
  }
  return tensor(t, [cos.length, 4], { backend });
}

/**
 * WGSL shared by the forms: where lane p lives in a row, a turn by a table entry, reading z_t of a lane and
 * writing a scaled output. Pipelines use layout 'auto', which drops unused bindings, so each program declares
 * only the bindings it reads and gets only the helpers that use them.
 */
function helpers(a: HolographicAttrs, bindings: string[]): string {
  const im = a.rotation.pairing === 'half' ? 're + u.hw' : 're + 1u';
  const k = a.rotation.pairing === 'half' ? 'p % u.hw' : '2u * (p % u.hw)';
  const scale = { none: '1.0', mean: '1.0 / (f32(pos) + 1.0)', sqrt: 'inverseSqrt(f32(pos) + 1.0)' }[a.normalize];
  const code = [
    `fn re_of(p: u32) -> u32 { return p / u.hw * 2u * u.hw + ${k}; }`,
    `fn im_of(re: u32) -> u32 { return ${im}; }`,
    `fn turn(r: vec4<f32>, c: vec2<f32>) -> vec2<f32> {
  return vec2<f32>(r.x * c.x - r.y * c.y, r.x * c.y + r.y * c.x) + vec2<f32>(r.z * c.x - r.w * c.y, r.z * c.y + r.w * c.x);
}`,
  ];
  if (bindings.includes('z')) code.push(`fn z_at(b: u32, t: u32, re: u32) -> vec2<f32> { let i = (b * u.T + t) * u.D; return vec2<f32>(load_z(i + re), load_z(i + im_of(re))); }`);
  if (bindings.includes('init')) code.push(`fn init_at(b: u32, re: u32) -> vec2<f32> { return vec2<f32>(load_init(b * u.D + re), load_init(b * u.D + im_of(re))); }`);
  if (bindings.includes('fin')) code.push(`fn finish(b: u32, re: u32, c: vec2<f32>) { fin[b * u.D + re] = c.x; fin[b * u.D + im_of(re)] = c.y; }`);
  if (bindings.includes('out')) {
    code.push(`fn put(b: u32, t: u32, re: u32, c: vec2<f32>) {
  let i = (b * u.T + t) * u.D;
  let pos = offsets[b] + t;
  let s = ${scale};
  out[i + re] = c.x * s;
  out[i + im_of(re)] = c.y * s;
}`);
  }
  return code.join('\n');
}

const UNIFORMS = { n: 'u32', T: 'u32', D: 'u32', pairs: 'u32', hw: 'u32', C: 'u32', chunks: 'u32' } as const;
const VIEWS = { table: 'vec4<f32>', sums: 'vec2<f32>', carries: 'vec2<f32>' };

/** One program of the integral over `n` threads (each returns past n), with the named bindings. */
function build(name: string, a: HolographicAttrs, inputs: Record<string, DType>, outputs: Record<string, DType>, main: string) {
  const bindings = [...Object.keys(inputs), ...Object.keys(outputs)];
  const key = `holographic:${name}:${Object.values(inputs).join(':')}:${a.rotation.pairing}:${a.normalize}`;
  return cached(key, () =>
    program({
      name: `holographic-${name}`,
      inputs,
      outputs,
      views: Object.fromEntries(Object.entries(VIEWS).filter(([b]) => bindings.includes(b))),
      uniforms: UNIFORMS,
      workgroupSize: WG,
      helpers: helpers(a, bindings),
      main: `  if (idx >= u.n) { return; }\n${main}`,
    }),
  );
}


/** Thread per (sequence, lane): c = e^{-i omega} c + z_t, with table row 1 = e^{-i omega}. */
const RECURRENT = `  let b = idx / u.pairs;
  let p = idx % u.pairs;
  let re = re_of(p);
  var c = init_at(b, re);
  let r1 = table[u.hw + p % u.hw];
  for (var t = 0u; t < u.T; t++) {
    c = turn(r1, c) + z_at(b, t, re);
    put(b, t, re, c);
  }
  finish(b, re, c);`;

/** Thread per (sequence, lane): table rows b (T + 1) + j hold e^{+i omega (offset - 1 + j)}. */
const DIRECT = `  let b = idx / u.pairs;
  let p = idx % u.pairs;
  let k = p % u.hw;
  let re = re_of(p);
  var c = init_at(b, re);
  let rows = b * (u.T + 1u);
  var acc = turn(table[rows * u.hw + k], c);
  for (var t = 0u; t < u.T; t++) {
    let r = table[(rows + t + 1u) * u.hw + k];
    acc += turn(r, z_at(b, t, re));
    c = turn(r * vec4<f32>(1.0, -1.0, 1.0, -1.0), acc);
    put(b, t, re, c);
  }
  finish(b, re, c);`;

/** Chunked pass 1, thread per (sequence, chunk, lane): the chunk's own sum sum_j e^{-i omega (L-1-j)} z_{t0+j}. */
const CHUNK_SUMS = `  let p = idx % u.pairs;
  let chunk = idx / u.pairs % u.chunks;
  let b = idx / (u.pairs * u.chunks);
  let re = re_of(p);
  let t0 = chunk * u.C;
  let L = min(u.C, u.T - t0);
  var acc = vec2<f32>(0.0);
  for (var j = 0u; j < L; j++) { acc += turn(table[(L - 1u - j) * u.hw + p % u.hw], z_at(b, t0 + j, re)); }
  sums[idx] = acc;`;

/** Chunked pass 2, thread per (sequence, lane): the state entering each chunk, sequential over chunks only. */
const CHUNK_CARRY = `  let b = idx / u.pairs;
  let p = idx % u.pairs;
  let re = re_of(p);
  var c = init_at(b, re);
  for (var chunk = 0u; chunk < u.chunks; chunk++) {
    let i = (b * u.chunks + chunk) * u.pairs + p;
    carries[i] = c;
    let L = min(u.C, u.T - chunk * u.C);
    c = turn(table[L * u.hw + p % u.hw], c) + sums[i];
  }
  finish(b, re, c);`;

/** Chunked pass 3, thread per (sequence, token, lane): c = e^{-i omega (r+1)} c_{t0-1} + sum_{j <= r} e^{-i omega (r-j)} z_{t0+j}. */
const CHUNK_OUT = `  let p = idx % u.pairs;
  let t = idx / u.pairs % u.T;
  let b = idx / (u.pairs * u.T);
  let k = p % u.hw;
  let re = re_of(p);
  let r = t % u.C;
  let t0 = t - r;
  var c = turn(table[(r + 1u) * u.hw + k], carries[(b * u.chunks + t0 / u.C) * u.pairs + p]);
  for (var j = 0u; j <= r; j++) { c += turn(table[(r - j) * u.hw + k], z_at(b, t0 + j, re)); }
  put(b, t, re, c);`;

function resolveMode({ mode, T, chunkSize }: HolographicAttrs): Exclude<HolographicMode, 'auto'> {
  if (mode !== 'auto') return mode;
  return T > chunkSize ? 'chunk' : 'recurrent';
}

async function integral(inputs: Tensor[], a: HolographicAttrs, backend: WebGPUBackend): Promise<Tensor[]> {
  const { B, T, D, rotation, chunkSize, offsets } = a;
  const [z] = inputs as [Tensor];
  const init = inputs[1] ?? zeros([B, D], { backend });
  const output = empty(a.outputShape, { backend });
  const finalState = empty(a.stateShape, { backend });
  const mode = resolveMode(a);
  const hw = rotation.width / 2;
  const pairs = D / 2;
  const chunks = Math.max(1, Math.ceil(T / chunkSize));
  // direct: per sequence, rows of positions offset - 1 .. offset + T - 1; else powers e^{-i omega k}, k <= C
  const table =
    mode === 'direct'
      ? uploadTable(rotationTable(offsets.flatMap((o) => Array.from({ length: T + 1 }, (_, j) => o - 1 + j)), rotation, 1), backend)
      : uploadTable(rotationTable(Array.from({ length: (mode === 'chunk' ? chunkSize : 1) + 1 }, (_, k) => k), { ...rotation, angles: 'exact' }, -1), backend);
  const offsetList = tensor(Uint32Array.from(offsets), [B], { dtype: 'u32', backend });
  const max = backend.limits.maxComputeWorkgroupsPerDimension;
  const uniforms = { T, D, pairs, hw, C: chunkSize, chunks };
  const [zd, id] = [z.dtype, init.dtype];
  if (mode === 'chunk') {
    const sums = empty([B * chunks * pairs, 2], { backend });
    const carries = empty([B * chunks * pairs, 2], { backend });
    const n1 = B * chunks * pairs;
    await backend.run(build('chunk-sums', a, { z: zd, table: 'f32' }, { sums: 'f32' }, CHUNK_SUMS), [z, table], [sums], { n: n1, ...uniforms }, grid1d(n1, WG, max));
    const n2 = B * pairs;
    await backend.run(build('chunk-carry', a, { init: id, table: 'f32', sums: 'f32' }, { fin: 'f32', carries: 'f32' }, CHUNK_CARRY), [init, table, sums], [finalState, carries], { n: n2, ...uniforms }, grid1d(n2, WG, max));
    const n3 = B * T * pairs;
    const out = build('chunk-out', a, { z: zd, table: 'f32', offsets: 'u32', carries: 'f32' }, { out: 'f32' }, CHUNK_OUT);
    if (n3 > 0) await backend.run(out, [z, table, offsetList, carries], [output], { n: n3, ...uniforms }, grid1d(n3, WG, max));
    sums.dispose();
    carries.dispose();
  } else {
    const n = B * pairs;
    const prog = build(mode, a, { z: zd, init: id, table: 'f32', offsets: 'u32' }, { out: 'f32', fin: 'f32' }, mode === 'direct' ? DIRECT : RECURRENT);
    await backend.run(prog, [z, init, table, offsetList], [output, finalState], { n, ...uniforms }, grid1d(n, WG, max));
  }
  // tensors this call made; released once the recorded work is submitted
  [table, offsetList, ...(inputs[1] ? [] : [init])].forEach((t) => t.dispose());
  return [output, finalState];
}

// Registered on import (listed under sideEffects).
registerKernel({ op: 'holographicIntegral', backend: 'webgpu', fn: integral });

import { type DType, InputError, type Tensor, empty, registerKernel } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import type { PackedLinearAttrs } from './linear.js';

/** Rows of x the GEMV handles at once (decode, tiny batches); more rows take the tiled kernel. */
export const PACKED_GEMV_MAX_ROWS = 4;

/** Dtypes of the per-row scales and of the optional bias, the inputs bound after x and the codes. */
export interface PackedEpilogue {
  scales: DType;
  bias?: DType;
}

function epilogue(e: PackedEpilogue): { inputs: Record<string, DType>; apply: (value: string, col: string) => string; key: string } {
  const inputs: Record<string, DType> = { scales: e.scales };
  if (e.bias) inputs.bias = e.bias;
  return { inputs, apply: (value, col) => `${value} * load_scales(${col})${e.bias ? ` + load_bias(${col})` : ''}`, key: `${e.scales}:${e.bias}` };
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * The aligned GEMV's unit of work: the fewest 16-byte words that hold whole codes (128 * words bits, words =
 * bits / gcd(bits, 128)): one word of 16 8-bit, 32 4-bit or 64 2-bit codes; three of 64 6-bit codes; seven
 * of 128 7-bit codes. When K is a multiple of `codes`, every row starts on a 16-byte boundary and is made of
 * whole chunks, so the codes sit at shifts known when the shader is written.
 */
export function packedChunk(bits: number): { words: number; codes: number } {
  const g = gcd(bits, 128);
  return { words: bits / g, codes: 128 / g };
}

/** Shape of the GEMV workgroup: output rows per workgroup, lanes (a power of two) per row, chunks per lane per iteration. */
export interface PackedGemvShape {
  rowsPerGroup: number;
  lanes: number;
  unroll: number;
}

/**
 * Packed rows are short (4096 4-bit codes are 2 KiB; the golf model's 512 6-bit codes, 384 bytes), so the lanes
 * per row follow the row's work: a power of two from 4 to 32, at most one per unrolled iteration (aligned)
 * or per code (otherwise), with 256 threads per workgroup. Each lane keeps 32 to 112 bytes of loads in
 * flight per iteration: 4 chunks of one word (2 of 2-bit codes), else 1. Not yet tuned on a GPU.
 */
export function defaultPackedGemv(bits: number, K: number): PackedGemvShape {
  const { words, codes } = packedChunk(bits);
  const unroll = words === 1 ? Math.min(4, 128 / codes) : 1;
  const work = alignedRows(K, bits) ? K / codes / unroll : K;
  const lanes = 2 ** Math.min(5, Math.max(2, Math.floor(Math.log2(Math.max(1, work)))));
  return { rowsPerGroup: 256 / lanes, lanes, unroll };
}

/** Whether the GEMV can use its aligned path (every row starts on a chunk boundary). */
function alignedRows(K: number, bits: number): boolean {
  return K % packedChunk(bits).codes === 0;
}

/**
 * The value of an unsigned field u < 2^23: ORed into the mantissa of 2^23 it makes the float 2^23 + u
 * exactly, and subtracting 2^23 + 2^(bits-1) leaves the signed code, with no integer-to-float conversion
 * (which runs at a fraction of the FMA rate on NVIDIA GPUs). `half` is 2^(bits-1) as a WGSL f32 expression.
 */
function fieldToCode(field: string, half: string, vec = false): string {
  return `bitcast<${vec ? 'vec4<f32>' : 'f32'}>(${field} | ${vec ? 'vec4<u32>(0x4b000000u)' : '0x4b000000u'}) - (8388608.0 + ${half})`;
}

/**
 * WGSL `code(p) -> f32`: the code at bit p of the stream, wherever it sits (it may straddle two words). The
 * width is the uniform `u.bits`, so one shader serves every width on these paths (fewer to compile).
 */
const CODE_AT = `fn code(p: u32) -> f32 {
  let w = p >> 5u;
  let off = p & 31u;
  var f = codes[w] >> off;
  if (off + u.bits > 32u) { f |= codes[w + 1u] << (32u - off); }
  return ${fieldToCode('(f & ((1u << u.bits) - 1u))', 'f32(1u << (u.bits - 1u))')};
}`;

/** Code j of a chunk held in vec4<u32> registers `${chunk}_0`..: its field cut with constant shifts. */
function chunkField(chunk: string, j: number, bits: number): string {
  const word = (t: number) => `${chunk}_${t >> 2}.${'xyzw'[t & 3]}`;
  const lo = j * bits;
  const t = lo >> 5;
  const off = lo & 31;
  let f = off ? `(${word(t)} >> ${off}u)` : word(t);
  if (off + bits > 32) f = `(${f} | (${word(t + 1)} << ${32 - off}u))`;
  return off + bits === 32 ? f : `(${f} & ${2 ** bits - 1}u)`;
}

/** Four codes of a chunk (j0..j0+3) as a vec4<f32>. */
function chunkCodes4(chunk: string, j0: number, bits: number): string {
  const fields = [0, 1, 2, 3].map((i) => chunkField(chunk, j0 + i, bits)).join(', ');
  return fieldToCode(`vec4<u32>(${fields})`, `${2 ** (bits - 1)}.0`, true);
}

/**
 * y[m, n] = dot(x[m, :], codes[n, :]) * scale[n] + bias[n] for a few rows m, streaming the packed W once.
 * `lanes` threads share an output row and the lanes' partial sums are added in workgroup memory.
 *  - aligned (K a multiple of `packedChunk(bits).codes`): each lane loads whole chunks of its row with
 *    16-byte loads, `unroll` chunks at a time, and decodes them in registers with constant shifts.
 *  - otherwise rows start anywhere in a word: each lane takes every `lanes`-th code of its row through
 *    `code(p)`, and the width is a uniform (one shader for every width).
 */
export function packedGemvProgram(xDType: DType, post: PackedEpilogue, bits: number, rows: number, aligned: boolean, shape: PackedGemvShape): Program {
  const ep = epilogue(post);
  const { rowsPerGroup, lanes, unroll } = shape;
  if (!(lanes > 0 && (lanes & (lanes - 1)) === 0)) throw new InputError(`packed GEMV: lanes must be a power of two, got ${lanes}`);
  return cached(`quantizer:gemv:${xDType}:${ep.key}:${aligned ? bits : 'any'}:${rows}:${aligned}:${rowsPerGroup}x${lanes}x${unroll}`, () => {
    const threads = rowsPerGroup * lanes;
    const R = Array.from({ length: rows }, (_, m) => m);
    const part = (m: number) => `partial[${m * threads}u + lid.x]`;
    const vecX = aligned && xDType === 'f32';
    let helpers: string;
    let loop: string;
    if (aligned) {
      const { words: V, codes: CODES } = packedChunk(bits);
      const Q = CODES / 4; // vec4s of codes per chunk
      // loads of `u` chunks into registers, then their products (the loads are all in flight first)
      const load = (u: number) => Array.from({ length: V }, (_, j) => `let c${u}_${j} = codes[(row + c + ${u * lanes}u) * ${V}u + ${j}u];`).join(' ');
      const fma = (u: number) =>
        Array.from({ length: Q }, (_, q) => `{ let d = ${chunkCodes4(`c${u}`, 4 * q, bits)}; let k4 = (c + ${u * lanes}u) * ${Q}u + ${q}u; ${R.map((m) => `acc${m} += dot(d, x4(${m}u, k4));`).join(' ')} }`).join('\n      ');
      const U = Array.from({ length: unroll }, (_, u) => u);
      const main =
        unroll > 1
          ? `for (; c + ${(unroll - 1) * lanes}u < C; c += ${unroll * lanes}u) {
      ${U.map(load).join('\n      ')}
      ${U.map(fma).join('\n      ')}
    }
    `
          : '';
      helpers = `fn x4(m: u32, k4: u32) -> vec4<f32> {
  ${vecX ? 'return x[m * (u.K / 4u) + k4];' : 'let i = m * u.K + k4 * 4u;\n  return vec4<f32>(load_x(i), load_x(i + 1u), load_x(i + 2u), load_x(i + 3u));'}
}`;
      loop = `let C = u.K / ${CODES}u;
    let row = n * C;
    var c = lane;
    ${main}for (; c < C; c += ${lanes}u) {
      ${load(0)}
      ${fma(0)}
    }`;
    } else {
      helpers = CODE_AT;
      loop = `let rowBit = n * u.K * u.bits;
    for (var k = lane; k < u.K; k += ${lanes}u) {
      let q = code(rowBit + k * u.bits);
      ${R.map((m) => `acc${m} += q * load_x(${m}u * u.K + k);`).join(' ')}
    }`;
    }
    return program({
      name: 'packedLinear',
      inputs: { x: xDType, codes: 'u8', ...ep.inputs },
      outputs: { out: 'f32' },
      views: { codes: aligned ? 'vec4<u32>' : 'u32', ...(vecX ? { x: 'vec4<f32>' } : {}) },
      uniforms: aligned ? { N: 'u32', K: 'u32' } : { N: 'u32', K: 'u32', bits: 'u32' },
      workgroupSize: threads,
      helpers: `var<workgroup> partial: array<f32, ${rows * threads}>;\n${helpers}`,
      main: `  let r = lid.x / ${lanes}u;
  let lane = lid.x % ${lanes}u;
  let n = (wid.x + wid.y * nwg.x) * ${rowsPerGroup}u + r;
  ${R.map((m) => `var acc${m} = 0.0;`).join(' ')}
  if (n < u.N) {
    ${loop}
  }
  ${R.map((m) => `${part(m)} = acc${m};`).join('\n  ')}
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) {
      ${R.map((m) => `${part(m)} += partial[${m * threads}u + lid.x + s];`).join('\n      ')}
    }
    workgroupBarrier();
  }
  if (lane == 0u && n < u.N) {
    ${R.map((m) => `out[${m}u * u.N + n] = ${ep.apply(part(m), 'n')};`).join('\n    ')}
  }`,
    });
  });
}

/** Tile of the packed matrix product: a BM x BN output tile per workgroup, TM x TN outputs per thread, BK-deep slices. */
export interface PackedGemmTile {
  BM: number;
  BN: number;
  BK: number;
  TM: number;
  TN: number;
}

/** 8.7 KB of workgroup memory, inside WebGPU's default 16 KiB. Not yet tuned on a GPU. */
export const DEFAULT_PACKED_TILE: PackedGemmTile = { BM: 64, BN: 64, BK: 16, TM: 4, TN: 4 };

/**
 * Tiled y = x W^T * scale + bias with W decoded once per tile: each BK-deep slice of x (BM rows) and of W
 * (BN rows, decoded from the bit stream by `code(p)`, the width a uniform) is staged in workgroup memory as
 * f32, and every decoded weight then serves BM rows of x. Slices are stored row-major with a stride of BK + 1 so that
 * threads reading one k from consecutive rows hit distinct banks; thread (ty, tx) owns rows ty + i*TY and
 * columns tx + j*TX, so a warp's stores are contiguous.
 */
export function packedGemmProgram(xDType: DType, post: PackedEpilogue, tile: PackedGemmTile = DEFAULT_PACKED_TILE): Program {
  const ep = epilogue(post);
  const { BM, BN, BK, TM, TN } = tile;
  const TX = BN / TN;
  const TY = BM / TM;
  const threads = TX * TY;
  return cached(`quantizer:gemm:${xDType}:${ep.key}:${BM}x${BN}x${BK}:${TM}x${TN}`, () => {
    const LD = BK + 1;
    const I = Array.from({ length: TM }, (_, i) => i);
    const J = Array.from({ length: TN }, (_, j) => j);
    const each = (f: (i: number, j: number) => string) => I.flatMap((i) => J.map((j) => f(i, j)));
    return program({
      name: 'packedLinear',
      inputs: { x: xDType, codes: 'u8', ...ep.inputs },
      outputs: { out: 'f32' },
      views: { codes: 'u32' },
      uniforms: { M: 'u32', N: 'u32', K: 'u32', bits: 'u32' },
      workgroupSize: threads,
      helpers: `var<workgroup> As: array<f32, ${BM * LD}>;
var<workgroup> Ws: array<f32, ${BN * LD}>;
${CODE_AT}`,
      main: `  let tx = lid.x % ${TX}u;
  let ty = lid.x / ${TX}u;
  let m0 = wid.y * ${BM}u;
  let n0 = wid.x * ${BN}u;
  ${each((i, j) => `var acc${i}_${j} = 0.0;`).join(' ')}
  for (var k0 = 0u; k0 < u.K; k0 += ${BK}u) {
    for (var e = lid.x; e < ${BM * BK}u; e += ${threads}u) {
      let m = m0 + e / ${BK}u;
      let k = k0 + e % ${BK}u;
      var v = 0.0;
      if (m < u.M && k < u.K) { v = load_x(m * u.K + k); }
      As[e / ${BK}u * ${LD}u + e % ${BK}u] = v;
    }
    for (var e = lid.x; e < ${BN * BK}u; e += ${threads}u) {
      let n = n0 + e / ${BK}u;
      let k = k0 + e % ${BK}u;
      var v = 0.0;
      if (n < u.N && k < u.K) { v = code((n * u.K + k) * u.bits); }
      Ws[e / ${BK}u * ${LD}u + e % ${BK}u] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < ${BK}u; k++) {
      ${I.map((i) => `let a${i} = As[(ty + ${i * TY}u) * ${LD}u + k];`).join(' ')}
      ${J.map((j) => `let w${j} = Ws[(tx + ${j * TX}u) * ${LD}u + k];`).join(' ')}
      ${each((i, j) => `acc${i}_${j} = fma(a${i}, w${j}, acc${i}_${j});`).join(' ')}
    }
    workgroupBarrier();
  }
  ${I.map(
    (i) => `{
    let m = m0 + ty + ${i * TY}u;
    if (m < u.M) {
      ${J.map((j) => `{ let n = n0 + tx + ${j * TX}u; if (n < u.N) { out[m * u.N + n] = ${ep.apply(`acc${i}_${j}`, 'n')}; } }`).join('\n      ')}
    }
  }`,
  ).join('\n  ')}`,
    });
  });
}

/** Kernel shapes of one dispatch: the defaults unless a benchmark is trying others. */
export interface PackedShapes {
  gemv?: PackedGemvShape;
  tile?: PackedGemmTile;
}

/**
 * Records one packed matmul into `out` (f32, outShape): the GEMV for up to PACKED_GEMV_MAX_ROWS rows of x
 * (aligned path when K allows), else the tiled kernel. Inputs: x, codes, scales, then bias if any.
 */
export async function runPackedLinear(backend: WebGPUBackend, inputs: Tensor[], out: Tensor, attrs: PackedLinearAttrs, shapes: PackedShapes = {}): Promise<void> {
  const [x, , scales, bias] = inputs as [Tensor, Tensor, Tensor, Tensor?];
  const { M, N, K, bits } = attrs;
  const post: PackedEpilogue = { scales: scales.dtype, bias: attrs.hasBias ? bias!.dtype : undefined };
  if (M <= PACKED_GEMV_MAX_ROWS) {
    const shape = shapes.gemv ?? defaultPackedGemv(bits, K);
    const prog = packedGemvProgram(x.dtype, post, bits, M, alignedRows(K, bits), shape);
    await backend.run(prog, inputs, [out], { N, K, bits }, grid1d(N, shape.rowsPerGroup, backend.limits.maxComputeWorkgroupsPerDimension));
    return;
  }
  const tile = shapes.tile ?? DEFAULT_PACKED_TILE;
  await backend.run(packedGemmProgram(x.dtype, post, tile), inputs, [out], { M, N, K, bits }, [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), 1]);
}

async function packedLinear(inputs: Tensor[], attrs: PackedLinearAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const out = empty(attrs.outShape, { backend });
  if (out.size > 0) await runPackedLinear(backend, inputs, out, attrs);
  return out;
}

// Registered on import (package.json lists this file under sideEffects).
registerKernel({
  op: 'packedLinear',
  backend: 'webgpu',
  fn: packedLinear,
  verify: (_inputs, { M, N, K, bits }: PackedLinearAttrs, backend: WebGPUBackend) => {
    const max = backend.limits.maxComputeWorkgroupsPerDimension!;
    const gemv = M <= PACKED_GEMV_MAX_ROWS;
    // the paths that address codes by bit position hold it in a u32
    if (!(gemv && alignedRows(K, bits)) && N * K * bits > 2 ** 32) return `${N} x ${K} codes of ${bits} bits exceed 2^32 bits`;
    if (gemv) return Math.ceil(N / defaultPackedGemv(bits, K).rowsPerGroup) <= max * max || `grid too large for ${N} rows`;
    return (Math.ceil(M / DEFAULT_PACKED_TILE.BM) <= max && Math.ceil(N / DEFAULT_PACKED_TILE.BN) <= max) || `grid too large for ${M} x ${N}`;
  },
});

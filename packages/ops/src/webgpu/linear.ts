import { type DType, type Tensor, empty, registerKernel } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import { ACTIVATIONS_WGSL } from '../activations.js';
import type { LinearsAttrs, MatmulAttrs, NormAttrs, SwigluLinearAttrs } from '../linear.js';

/** Tile shape of the matrix-product kernel: a BM x BN output tile per workgroup, TM x TN outputs per thread. */
export interface GemmTile {
  BM: number;
  BN: number;
  BK: number;
  TM: number;
  TN: number;
}

/** Picked on an H200 (docs/benchmarks.md); the other tiles tried there are tested on lavapipe too. */
export const DEFAULT_TILE: GemmTile = { BM: 128, BN: 128, BK: 8, TM: 8, TN: 8 };

/**
 * How one operand's BK-deep slice travels from global memory to workgroup memory, stored k-major as vec4
 * along the non-k dim (`rows` = BM or BN). `fetch` loads the next slice into registers (so the loads are in
 * flight while the current slice is multiplied) and `stash` writes them to workgroup memory.
 *  - kContiguous (a, and b transposed): with `vec`, each thread reads 16 bytes along k and consecutive
 *    threads take consecutive rows, so the transposing stores to workgroup memory hit distinct banks;
 *    without `vec` (K not a multiple of 4), scalar loads along k.
 *  - otherwise (b as [K, N]): vec4 (or scalar) loads along n, stored as they are.
 * Past the edges the registers hold zeros, so any M, N, K works.
 */
function tileLoader(op: 'a' | 'b', kContiguous: boolean, vec: boolean, rows: number, BK: number, threads: number) {
  const S = op === 'a' ? 'As' : 'Bs';
  const R = rows / 4; // vec4s per k in workgroup memory
  const [dimU, base, origin] = op === 'a' ? ['u.M', 'aBase', 'm0'] : ['u.N', 'bBase', 'n0'];
  const total = vec ? (rows * BK) / 4 : rows * BK; // loads per slice
  const regs = Array.from({ length: Math.ceil(total / threads) }, (_, e) => `r${op}${e}`);
  const fetch: string[] = [];
  const stash: string[] = [];
  // when the slice has fewer loads than the workgroup has threads, the spare threads skip them
  const guard = (code: string, e: number) => (total % threads === 0 ? code : `if (${e * threads}u + lid.x < ${total}u) { ${code} }`);
  regs.forEach((reg, e) => {
    const l = `(${e * threads}u + lid.x)`;
    if (kContiguous && vec) {
      fetch.push(`{ let r = ${l} % ${rows}u; let k = k0 + ${l} / ${rows}u * 4u; ${reg} = vec4<f32>(0.0); if (${origin} + r < ${dimU} && k < u.K) { ${reg} = load4_${op}((${base} + (${origin} + r) * u.K + k) / 4u); } }`);
      stash.push(`{ let r = ${l} % ${rows}u; let k = ${l} / ${rows}u * 4u; for (var c = 0u; c < 4u; c++) { ${S}[(k + c) * ${R}u + r / 4u][r % 4u] = ${reg}[c]; } }`);
    } else if (kContiguous) {
      fetch.push(`{ let r = ${l} / ${BK}u; let k = k0 + ${l} % ${BK}u; ${reg} = 0.0; if (${origin} + r < ${dimU} && k < u.K) { ${reg} = load_${op}(${base} + (${origin} + r) * u.K + k); } }`);
      stash.push(`{ let r = ${l} / ${BK}u; ${S}[(${l} % ${BK}u) * ${R}u + r / 4u][r % 4u] = ${reg}; }`);
    } else if (vec) {
      fetch.push(`{ let c = ${l} % ${R}u * 4u; let k = k0 + ${l} / ${R}u; ${reg} = vec4<f32>(0.0); if (n0 + c < u.N && k < u.K) { ${reg} = load4_${op}((${base} + k * u.N + n0 + c) / 4u); } }`);
      stash.push(`${S}[${l}] = ${reg};`);
    } else {
      fetch.push(`{ let c = ${l} % ${rows}u; let k = k0 + ${l} / ${rows}u; ${reg} = 0.0; if (n0 + c < u.N && k < u.K) { ${reg} = load_${op}(${base} + k * u.N + n0 + c); } }`);
      stash.push(`${S}[${l} / ${rows}u * ${R}u + ${l} % ${rows}u / 4u][${l} % 4u] = ${reg};`);
    }
  });
  const decl = regs.map((r) => `var ${r}: ${vec ? 'vec4<f32>' : 'f32'};`).join(' ');
  return { decl, fetch: fetch.map(guard).join('\n    '), stash: stash.map(guard).join('\n    ') };
}

/** A loader of 4 consecutive elements (16-byte aligned) of an f32 binding viewed as vec4, or an f16/bf16 one viewed as vec2<u32>. */
function load4(name: string, dtype: DType): { view: string; fn: string } {
  if (dtype === 'f32') return { view: 'vec4<f32>', fn: `fn load4_${name}(i: u32) -> vec4<f32> { return ${name}[i]; }` };
  if (dtype === 'i8') {
    // Four signed 8-bit codes per word (quantized weights), decoded without integer-to-float conversions (a
    // fraction of the FMA rate on NVIDIA GPUs): XOR 0x80 makes each byte c + 128; a byte ORed into the mantissa
    // of 2^23 in place, at bit 0 or 8 (bytes 2 and 3 after one shift of the word), is the float 2^23 + (c + 128) * 2^o
    // exactly, and one fma by 2^-o minus 2^23 * 2^-o + 128 leaves c exactly.
    return {
      view: 'u32',
      fn: `fn load4_${name}(i: u32) -> vec4<f32> {
  let p = ${name}[i] ^ 0x80808080u;
  let h = p >> 16u;
  let v = bitcast<vec4<f32>>((vec4<u32>(p, p, h, h) & vec4<u32>(0xffu, 0xff00u, 0xffu, 0xff00u)) | vec4<u32>(0x4b000000u));
  return fma(v, vec4<f32>(1.0, 0.00390625, 1.0, 0.00390625), vec4<f32>(-8388736.0, -32896.0, -8388736.0, -32896.0));
}`,
    };
  }
  const d = dtype === 'f16' ? 'f16_bits_to_f32' : 'bf16_bits_to_f32';
  return {
    view: 'vec2<u32>',
    fn: `fn load4_${name}(i: u32) -> vec4<f32> { let p = ${name}[i]; return vec4<f32>(${d}(p.x & 0xffffu), ${d}(p.x >> 16u), ${d}(p.y & 0xffffu), ${d}(p.y >> 16u)); }`,
  };
}

/**
 * What the kernels apply to each dot product before storing it: y = dot * rowScale[n] + bias[n] (either may
 * be absent; rowScale is the per-output-row scale of quantized weights), given by the dtypes of those inputs.
 * `residual` (GEMV only: the output's shape, added as the lanes' sum is stored, see `gemvLaneSum`) gives
 * y = residual[m, n] + (dot * rowScale[n] + bias[n]).
 */
export interface Epilogue {
  bias?: DType;
  rowScale?: DType;
  residual?: DType;
}

/**
 * The epilogue's extra inputs, bound after the two operands in this order (bias, rowScale, residual), and the
 * WGSL expression for column `col` (without the residual, which needs the output index: `gemvLaneSum` adds it).
 */
function epilogue(e: Epilogue): { inputs: Record<string, DType>; apply: (value: string, col: string) => string; key: string } {
  const inputs: Record<string, DType> = {};
  if (e.bias) inputs.bias = e.bias;
  if (e.rowScale) inputs.rowScale = e.rowScale;
  if (e.residual) inputs.residual = e.residual;
  const apply = (value: string, col: string) => `${e.rowScale ? `${value} * load_rowScale(${col})` : value}${e.bias ? ` + load_bias(${col})` : ''}`;
  return { inputs, apply, key: `${e.bias}:${e.rowScale}:${e.residual}` };
}

/**
 * Tiled matrix product with register blocking. Each workgroup stages BK-deep slices of a (BM rows) and op(b)
 * (BN columns) in workgroup memory, prefetching the next slice into registers while it multiplies the
 * current one; each thread accumulates TM x TN outputs from vec4 reads of workgroup memory: TM/4 row groups
 * and TN/4 column groups, strided so that a warp's stores are contiguous. `vec` (16-byte global loads)
 * needs K, and N when b is [K, N], to be multiples of 4.
 */
export function gemmProgram(aDType: DType, bDType: DType, transB: boolean, post: Epilogue, vec: boolean, tile: GemmTile = DEFAULT_TILE): Program {
  if (post.residual) throw new Error('gemmProgram: the tiled kernel takes no residual (linear adds it with a separate add)');
  const ep = epilogue(post);
  const { BM, BN, BK, TM, TN } = tile;
  const TX = BN / TN;
  const TY = BM / TM;
  const threads = TX * TY;
  const key = `ops:gemm:${aDType}:${bDType}:${transB}:${ep.key}:${vec}:${BM}x${BN}x${BK}:${TM}x${TN}`;
  return cached(key, () => {
    const RG = TM / 4; // row groups of 4
    const CG = TN / 4; // column groups of 4 (vec4)
    const rowStride = BM / RG; // rows between a thread's row groups
    const colStride = BN / CG;
    const acc: string[] = [];
    const fma: string[] = [];
    const store: string[] = [];
    for (let g = 0; g < RG; g++) for (let r = 0; r < 4; r++) for (let c = 0; c < CG; c++) {
      const v = `acc_${g * 4 + r}_${c}`;
      acc.push(`var ${v} = vec4<f32>(0.0);`);
      fma.push(`${v} = fma(vec4<f32>(a${g}.${'xyzw'[r]}), b${c}, ${v});`);
      store.push(`store4(m0 + ${g * rowStride}u + ty * 4u + ${r}u, n0 + ${c * colStride}u + tx * 4u, ${v});`);
    }
    const A = tileLoader('a', true, vec, BM, BK, threads);
    const B = tileLoader('b', transB, vec, BN, BK, threads);
    const la = load4('a', aDType);
    const lb = load4('b', bDType);
    return program({
      name: 'matmul',
      inputs: { a: aDType, b: bDType, ...ep.inputs },
      outputs: { out: 'f32' },
      views: vec ? { a: la.view, b: lb.view } : {},
      uniforms: { M: 'u32', N: 'u32', K: 'u32', bBatchStride: 'u32' },
      workgroupSize: threads,
      helpers: `
var<workgroup> As: array<vec4<f32>, ${(BK * BM) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(BK * BN) / 4}>;
var<private> outBase: u32;
${vec ? `${la.fn}\n${lb.fn}` : ''}
fn store4(m: u32, n: u32, v: vec4<f32>) {
  if (m >= u.M) { return; }
  for (var c = 0u; c < 4u; c++) {
    let col = n + c;
    if (col < u.N) { out[outBase + m * u.N + col] = ${ep.apply('v[c]', 'col')}; }
  }
}`,
      main: `  let tx = lid.x % ${TX}u;
  let ty = lid.x / ${TX}u;
  let m0 = wid.y * ${BM}u;
  let n0 = wid.x * ${BN}u;
  let aBase = wid.z * u.M * u.K;
  let bBase = wid.z * u.bBatchStride;
  outBase = wid.z * u.M * u.N;
  ${acc.join('\n  ')}
  ${A.decl} ${B.decl}
  var k0 = 0u;
  ${A.fetch}
  ${B.fetch}
  loop {
    ${A.stash}
    ${B.stash}
    workgroupBarrier();
    k0 += ${BK}u;
    if (k0 < u.K) {
      ${A.fetch}
      ${B.fetch}
    }
    for (var k = 0u; k < ${BK}u; k++) {
      ${Array.from({ length: RG }, (_, g) => `let a${g} = As[k * ${BM / 4}u + ${g * (rowStride / 4)}u + ty];`).join('\n      ')}
      ${Array.from({ length: CG }, (_, c) => `let b${c} = Bs[k * ${BN / 4}u + ${c * (colStride / 4)}u + tx];`).join('\n      ')}
      ${fma.join('\n      ')}
    }
    workgroupBarrier();
    if (k0 >= u.K) { break; }
  }
  ${store.join('\n  ')}`,
    });
  });
}

/** Rows of x a GEMV dispatch handles at once (decode and tiny batches); more rows use the tiled kernel. */
export const GEMV_MAX_ROWS = 4;

/** Shape of the GEMV workgroup: output rows per workgroup, and lanes that share one output row. */
export interface GemvShape {
  rowsPerGroup: number;
  lanes: number;
  /** 16-byte loads each lane issues per loop iteration (more in flight hides more latency). */
  unroll: number;
}

/** Picked on an H200 (docs/benchmarks.md). */
export const DEFAULT_GEMV: GemvShape = { rowsPerGroup: 4, lanes: 64, unroll: 4 };

/**
 * WGSL for the end of a GEMV whose `lanes` consecutive threads share output row `n` (with `lane`, `n`, `lid`
 * and `u.N` in scope): `decl` declares the workgroup array; `store` adds each thread's partial sums over its
 * lanes and has lane 0 store out[m, n] = apply(sum, 'n'). The partial sums are `acc0`.. (one per row of x), or,
 * with several `sums` prefixes (e.g. ['acc', 'accUp']), one set per prefix, all reduced together and passed to
 * `apply` in that order: apply(sum of acc<m>, 'n', sum of accUp<m>). With `residual`, lane 0 stores
 * out[m, n] = load_residual(m * N + n) + (apply(...)) (a `residual` input of the output's shape must be bound).
 * Shared with the packed GEMV of @phalanx/quantizer.
 */
export function gemvLaneSum(
  rows: number,
  threads: number,
  lanes: number,
  apply: (value: string, col: string, ...more: string[]) => string,
  sums: readonly string[] = ['acc'],
  residual = false,
): { decl: string; store: string } {
  const R = Array.from({ length: rows }, (_, m) => m);
  const { decl, reduce, part } = gemvLaneReduce(rows, threads, lanes, sums);
  return {
    decl,
    store: `${reduce}
  if (lane == 0u && n < u.N) {
    ${R.map((m) => {
      const value = apply(part(m), 'n', ...sums.slice(1).map((_, i) => part((i + 1) * rows + m)));
      return `out[${m}u * u.N + n] = ${residual ? `load_residual(${m}u * u.N + n) + (${value})` : value};`;
    }).join('\n    ')}
  }`,
  };
}

/**
 * The reduction half of `gemvLaneSum`: `decl` declares the workgroup array, `reduce` sums each thread's partial
 * sums (acc0.., then one set per further prefix of `sums`) over its `lanes`, after which `part(i)` is the sum of
 * set i / rows, row i % rows, in lane 0 of each output row. Contains barriers: call it in uniform control flow.
 */
function gemvLaneReduce(rows: number, threads: number, lanes: number, sums: readonly string[]): { decl: string; reduce: string; part: (i: number) => string } {
  const R = Array.from({ length: rows }, (_, m) => m);
  const S = sums.map((prefix, i) => ({ prefix, base: i * rows }));
  const part = (m: number) => `partial[${m * threads}u + lid.x]`;
  const each = (f: (m: number, prefix: string) => string) => S.flatMap(({ prefix, base }) => R.map((m) => f(base + m, `${prefix}${m}`)));
  return {
    decl: `var<workgroup> partial: array<f32, ${sums.length * rows * threads}>;`,
    reduce: `${each((m, acc) => `${part(m)} = ${acc};`).join('\n  ')}
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) {
      ${each((m) => `${part(m)} += partial[${m * threads}u + lid.x + s];`).join('\n      ')}
    }
    workgroupBarrier();
  }`,
    part,
  };
}

/**
 * What the GEMV stores: the matmul epilogue, or, with `swiglu`, silu(x gate^T) * (x up^T) from two weight
 * matrices of one dtype and shape, bound as `w` (gate) and `up` (no bias or row scale then).
 */
export interface GemvEpilogue extends Epilogue {
  swiglu?: boolean;
  /** With `swiglu` and int8 weights: the dtype of up's row scales, bound after gate's (`rowScale`). */
  upScale?: DType;
  /** The input's RMSNorm (`InputNorm`): the dtype of its weight, bound last (uniforms eps, weight_offset). */
  norm?: DType;
}

/** WGSL of the norm weight's vec4 at k4 (plus weight_offset), for a GEMV with an input RMSNorm. */
const NORM_WEIGHT = `fn nw4(k4: u32) -> vec4<f32> {
  let i = k4 * 4u;
  return vec4<f32>(load_normWeight(i), load_normWeight(i + 1u), load_normWeight(i + 2u), load_normWeight(i + 3u)) + u.weight_offset;
}`;

/** The input RMSNorm's factor for row m of x from the lanes' sum of squares `ss`. */
const normFactor = (ss: string) => `inverseSqrt(${ss} / f32(u.K) + u.eps)`;

/**
 * The dot products of a GEMV thread (with `n`, `lane`, `K4`, the accumulators acc0.. and `x4` in scope): over
 * row n of the weight read by `load` (a `load4` function), `unroll` 16-byte vectors at a time and then one at a
 * time, each reused for every row of x. With `loadUp` the same loop also streams row n of that matrix into
 * accUp0.., reusing each x vector for both.
 */
function gemvLoop(rows: number, { lanes, unroll }: GemvShape, load: string, loadUp?: string, norm = false): string {
  const U = Array.from({ length: unroll }, (_, j) => j);
  const R = Array.from({ length: rows }, (_, m) => m);
  // one loop step over the vectors j in J, at 16-byte index at(j) of the rows: the loads of w<j> (and v<j>,
  // up's), then the dot products with each row of x. With `norm`, x times the norm weight meets w, and the
  // squares of x are summed into ss<m> (every x element once per output row: the lanes cover K once)
  const loads = (J: number[], at: (j: number) => string) => [
    ...J.map((j) => `let w${j} = ${load}(wRow + ${at(j)});`),
    ...(loadUp ? J.map((j) => `let v${j} = ${loadUp}(wRow + ${at(j)});`) : []),
    ...(norm ? J.map((j) => `let nw${j} = nw4(${at(j)});`) : []),
  ];
  const xOf = (j: number) => (norm ? `xv${j} * nw${j}` : `xv${j}`);
  const step = (J: number[], at: (j: number) => string) =>
    R.map(
      (m) =>
        `{ ${J.map((j) => `let xv${j} = x4(${m}u, ${at(j)});`).join(' ')} acc${m} += ${J.map((j) => `dot(w${j}, ${xOf(j)})`).join(' + ')};` +
        (loadUp ? ` accUp${m} += ${J.map((j) => `dot(v${j}, ${xOf(j)})`).join(' + ')};` : '') +
        (norm ? ` ss${m} += ${J.map((j) => `dot(xv${j}, xv${j})`).join(' + ')};` : '') +
        ' }',
    );
  const unrolled = (j: number) => `k4 + ${j * lanes}u`;
  return `let wRow = n * K4;
    var k4 = lane;
    for (; k4 + ${(unroll - 1) * lanes}u < K4; k4 += ${unroll * lanes}u) {
      ${loads(U, unrolled).join('\n      ')}
      ${step(U, unrolled).join('\n      ')}
    }
    for (; k4 < K4; k4 += ${lanes}u) {
      ${loads([0], () => 'k4').join('\n      ')}
      ${step([0], () => 'k4').join('\n      ')}
    }`;
}

/**
 * y[m, n] = dot(x[m, :], w[n, :]) for a few rows m: memory-bound on w, which is streamed once. `lanes`
 * threads own one output row n and read w[n, :] in 16-byte vectors (4 floats, or 4 halves as 2 words),
 * `unroll` at a time so that more loads are in flight, reusing each vector for every x row; lanes are then summed in
 * workgroup memory. With `post.swiglu` the same loop also streams up[n, :], reusing each x vector for both
 * dot products, and stores silu(gate dot) * (up dot): the whole gate/up half of a SwiGLU MLP in one dispatch.
 */
export function gemvProgram(xDType: DType, wDType: DType, rows: number, post: GemvEpilogue, shape: GemvShape = DEFAULT_GEMV): Program {
  const fused = post.swiglu === true;
  if (fused && (post.bias || post.residual || !post.rowScale !== !post.upScale)) throw new Error('gemvProgram: the swiglu GEMV takes no bias or residual, and row scales for both matrices or neither');
  const ep = epilogue(post);
  const { rowsPerGroup, lanes, unroll } = shape;
  const norm = post.norm;
  return cached(`ops:gemv:${xDType}:${wDType}:${rows}:${ep.key}:${rowsPerGroup}x${lanes}x${unroll}${fused ? `:swiglu:${post.upScale}` : ''}:${norm}`, () => {
    const lw = load4('w', wDType);
    const lu = load4('up', wDType);
    const threads = rowsPerGroup * lanes;
    const R = Array.from({ length: rows }, (_, m) => m);
    // the input norm scales each dot product by its row's factor (the sums of squares are the last set reduced)
    const normed = (v: string, ss: string | undefined) => (norm ? `(${v}) * ${normFactor(ss!)}` : v);
    // int8 swiglu: each dot product times its matrix's row scale before silu and the product
    const swiglu = (g: string, col: string, u: string) => (post.upScale ? `silu(${g} * load_rowScale(${col})) * (${u} * load_upScale(${col}))` : `silu(${g}) * ${u}`);
    const ssSet = norm ? ['ss'] : [];
    const laneSum = fused
      ? gemvLaneSum(rows, threads, lanes, (g, col, u, ss) => swiglu(normed(g, ss), col, normed(u!, ss)), ['acc', 'accUp', ...ssSet])
      : gemvLaneSum(rows, threads, lanes, (v, col, ss) => ep.apply(normed(v, ss), col), ['acc', ...ssSet], !!post.residual);
    return program({
      name: fused ? 'swigluLinear' : 'matmul',
      inputs: {
        ...(fused ? { x: xDType, w: wDType, up: wDType, ...(post.upScale ? { rowScale: post.rowScale!, upScale: post.upScale } : {}) } : { x: xDType, w: wDType, ...ep.inputs }),
        ...(norm ? { normWeight: norm } : {}),
      },
      outputs: { out: 'f32' },
      views: { ...(xDType === 'f32' ? { w: lw.view, x: 'vec4<f32>' } : { w: lw.view }), ...(fused ? { up: lu.view } : {}) },
      uniforms: { N: 'u32', K: 'u32', ...(norm ? { eps: 'f32', weight_offset: 'f32' } : {}) },
      workgroupSize: threads,
      helpers: `${laneSum.decl}
${lw.fn}${fused ? `\n${lu.fn}\n${ACTIVATIONS_WGSL}` : ''}${norm ? `\n${NORM_WEIGHT}` : ''}
fn x4(m: u32, k4: u32) -> vec4<f32> {
  ${xDType === 'f32' ? 'return x[m * (u.K / 4u) + k4];' : 'let i = m * u.K + k4 * 4u;\n  return vec4<f32>(load_x(i), load_x(i + 1u), load_x(i + 2u), load_x(i + 3u));'}
}`,
      main: `  let r = lid.x / ${lanes}u;
  let lane = lid.x % ${lanes}u;
  let n = (wid.x + wid.y * nwg.x) * ${rowsPerGroup}u + r;
  let K4 = u.K / 4u;
  ${R.map((m) => `var acc${m} = 0.0;`).join(' ')}${fused ? ` ${R.map((m) => `var accUp${m} = 0.0;`).join(' ')}` : ''}${norm ? ` ${R.map((m) => `var ss${m} = 0.0;`).join(' ')}` : ''}
  if (n < u.N) {
    ${gemvLoop(rows, shape, 'load4_w', fused ? 'load4_up' : undefined, !!norm)}
  }
  ${laneSum.store}`,
    });
  });
}

/** At most this many weight matrices share one `linears` dispatch (each adds a branch to the kernel). */
export const LINEARS_MAX_MATRICES = 8;

/** One matrix of `linearsProgram`: its weight's dtype (float, or i8 codes), and the dtypes of its bias and row scales, when it has them. */
export interface LinearsMatrix {
  weight: DType;
  bias?: DType;
  rowScale?: DType;
}

/**
 * Several GEMVs of one x in one dispatch: y_i[m, n] = dot(x[m, :], w_i[n, :]) * rowScale_i[n] + bias_i[n] for
 * the matrices i of `mats` (each weight of its own dtype, f32/f16/bf16 or i8 codes). Each workgroup computes
 * `rowsPerGroup` rows of one matrix, exactly as `gemvProgram` does for that matrix alone: the workgroups
 * [g_i, g_(i+1)) are matrix i's (g_i in the uniforms G<i>, g_0 = 0), so which matrix a workgroup reads is
 * uniform over it and the lanes' reduction is shared. Bindings: x, then per matrix weight<i>, bias<i>,
 * scale<i> (those present), then the outputs out<i>; uniforms K, N<i>, G<i>.
 */
export function linearsProgram(xDType: DType, rows: number, mats: readonly LinearsMatrix[], shape: GemvShape = DEFAULT_GEMV, norm?: DType): Program {
  const { rowsPerGroup, lanes } = shape;
  const key = `ops:linears:${xDType}:${rows}:${mats.map((e) => `${e.weight}/${e.bias}/${e.rowScale}`).join(',')}:${rowsPerGroup}x${lanes}x${shape.unroll}:${norm}`;
  return cached(key, () => {
    const threads = rowsPerGroup * lanes;
    const R = Array.from({ length: rows }, (_, m) => m);
    const I = mats.map((_, i) => i);
    const { decl, reduce, part } = gemvLaneReduce(rows, threads, lanes, norm ? ['acc', 'ss'] : ['acc']);
    const inputs: Record<string, DType> = { x: xDType };
    const views: Record<string, string> = xDType === 'f32' ? { x: 'vec4<f32>' } : {};
    const loaders: string[] = [];
    const uniforms: Record<string, 'u32'> = { K: 'u32' };
    mats.forEach((e, i) => {
      const l = load4(`weight${i}`, e.weight);
      inputs[`weight${i}`] = e.weight;
      views[`weight${i}`] = l.view;
      loaders.push(l.fn);
      if (e.bias) inputs[`bias${i}`] = e.bias;
      if (e.rowScale) inputs[`scale${i}`] = e.rowScale;
      uniforms[`N${i}`] = 'u32';
      if (i > 0) uniforms[`G${i}`] = 'u32';
    });
    if (norm) inputs.normWeight = norm;
    // linear's epilogue (`epilogue`), for matrix i, after the input norm's factor
    const apply = (i: number, m: number) => {
      const value = norm ? `${part(m)} * ${normFactor(part(rows + m))}` : part(m);
      return `${mats[i]!.rowScale ? `${value} * load_scale${i}(n)` : value}${mats[i]!.bias ? ` + load_bias${i}(n)` : ''}`;
    };
    const cases = (body: (i: number) => string) => I.map((i) => `${i === I.length - 1 ? 'default' : `case ${i}u`}: {\n      ${body(i)}\n    }`).join('\n    ');
    return program({
      name: 'linears',
      inputs,
      outputs: Object.fromEntries(I.map((i) => [`out${i}`, 'f32'])),
      views,
      uniforms: { ...uniforms, ...(norm ? { eps: 'f32', weight_offset: 'f32' } : {}) },
      workgroupSize: threads,
      helpers: `${decl}
${loaders.join('\n')}${norm ? `\n${NORM_WEIGHT}` : ''}
fn x4(m: u32, k4: u32) -> vec4<f32> {
  ${xDType === 'f32' ? 'return x[m * (u.K / 4u) + k4];' : 'let i = m * u.K + k4 * 4u;\n  return vec4<f32>(load_x(i), load_x(i + 1u), load_x(i + 2u), load_x(i + 3u));'}
}`,
      main: `  let r = lid.x / ${lanes}u;
  let lane = lid.x % ${lanes}u;
  let g = wid.x + wid.y * nwg.x;
  let K4 = u.K / 4u;
  // the matrix whose rows this workgroup computes (the grid's spare workgroups past the last one find n >= N)
  var mat = 0u;
  var g0 = 0u;
  var N = u.N0;
  ${I.slice(1).map((i) => `if (g >= u.G${i}) { mat = ${i}u; g0 = u.G${i}; N = u.N${i}; }`).join('\n  ')}
  let n = (g - g0) * ${rowsPerGroup}u + r;
  ${R.map((m) => `var acc${m} = 0.0;`).join(' ')}${norm ? ` ${R.map((m) => `var ss${m} = 0.0;`).join(' ')}` : ''}
  if (n < N) {
    switch mat {
    ${cases((i) => gemvLoop(rows, shape, `load4_weight${i}`, undefined, !!norm).replaceAll('\n', '\n  '))}
    }
  }
  ${reduce}
  if (lane == 0u && n < N) {
    switch mat {
    ${cases((i) => R.map((m) => `out${i}[${m}u * N + n] = ${apply(i, m)};`).join('\n      '))}
    }
  }`,
    });
  });
}

async function matmul(inputs: Tensor[], attrs: MatmulAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const [a, b, ...rest] = inputs as [Tensor, Tensor, ...Tensor[]];
  const { batch, M, N, K, transB, bShared, outShape } = attrs;
  // the epilogue inputs follow the operands in this order: bias, rowScale, then residual (GEMV only, see verify)
  const normWeight = attrs.norm ? rest.pop() : undefined;
  const post: GemvEpilogue = {
    bias: attrs.hasBias ? rest[0]!.dtype : undefined,
    rowScale: attrs.hasRowScale ? rest[attrs.hasBias ? 1 : 0]!.dtype : undefined,
    residual: attrs.hasResidual ? rest[rest.length - 1]!.dtype : undefined,
    norm: normWeight?.dtype,
  };
  const out = empty(outShape, { backend });
  if (out.size === 0) return out;
  if (useGemv(attrs)) {
    const prog = gemvProgram(a.dtype, b.dtype, M, post);
    await backend.run(prog, inputs, [out], { N, K, ...normUniforms(attrs.norm) }, grid1d(N, DEFAULT_GEMV.rowsPerGroup, backend.limits.maxComputeWorkgroupsPerDimension));
    return out;
  }
  const tile = DEFAULT_TILE;
  const vec = K % 4 === 0 && (transB || N % 4 === 0);
  const prog = gemmProgram(a.dtype, b.dtype, transB, post, vec, tile);
  const uniforms = { M, N, K, bBatchStride: bShared ? 0 : K * N };
  await backend.run(prog, inputs, [out], uniforms, [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), batch]);
  return out;
}

/** The fused gate/up GEMV of `swigluLinear`: one dispatch for silu(x gate^T) * (x up^T). */
async function swigluLinear(inputs: Tensor[], { M, N, K, hasRowScale, norm, outShape }: SwigluLinearAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const [x, gate, , gateScale, upScale] = inputs as [Tensor, Tensor, Tensor, Tensor?, Tensor?];
  const out = empty(outShape, { backend });
  if (out.size === 0) return out;
  const scales = hasRowScale ? { rowScale: gateScale!.dtype, upScale: upScale!.dtype } : {};
  const prog = gemvProgram(x.dtype, gate.dtype, M, { swiglu: true, ...scales, norm: norm && inputs[inputs.length - 1]!.dtype });
  await backend.run(prog, inputs, [out], { N, K, ...normUniforms(norm) }, grid1d(N, DEFAULT_GEMV.rowsPerGroup, backend.limits.maxComputeWorkgroupsPerDimension));
  return out;
}

/** The fused GEMVs of `linears`: one dispatch, one output per matrix (see linearsProgram). */
async function linears(inputs: Tensor[], { M, K, outputs, norm }: LinearsAttrs, backend: WebGPUBackend): Promise<Tensor[]> {
  const x = inputs[0]!;
  const outs = outputs.map(({ outShape }) => empty(outShape, { backend }));
  const mats: LinearsMatrix[] = [];
  const uniforms: Record<string, number> = { K };
  let at = 1;
  let groups = 0;
  outputs.forEach(({ N, hasBias, hasRowScale }, i) => {
    const weight = inputs[at++]!.dtype;
    mats.push({ weight, bias: hasBias ? inputs[at++]!.dtype : undefined, rowScale: hasRowScale ? inputs[at++]!.dtype : undefined });
    uniforms[`N${i}`] = N;
    if (i > 0) uniforms[`G${i}`] = groups;
    groups += Math.ceil(N / DEFAULT_GEMV.rowsPerGroup);
  });
  const prog = linearsProgram(x.dtype, M, mats, DEFAULT_GEMV, norm && inputs[inputs.length - 1]!.dtype);
  await backend.run(prog, inputs, outs, { ...uniforms, ...normUniforms(norm) }, grid1d(groups * DEFAULT_GEMV.rowsPerGroup, DEFAULT_GEMV.rowsPerGroup, backend.limits.maxComputeWorkgroupsPerDimension));
  return outs;
}

/** The uniforms of an input norm (none without one). */
function normUniforms(norm: NormAttrs | undefined): Record<string, number> {
  return norm ? { eps: norm.eps, weight_offset: norm.weightOffset } : {};
}

/** Why the `linears` kernel declines these inputs (true: it takes them): see the registration below. */
function linearsVerdict(inputs: Tensor[], { M, K, outputs }: LinearsAttrs, backend: WebGPUBackend): true | string {
  if (!(M >= 1 && M <= GEMV_MAX_ROWS && K % 4 === 0)) return `the fused GEMVs take 1 to ${GEMV_MAX_ROWS} rows and K a multiple of 4 (got ${M} x ${K})`;
  if (outputs.length < 1 || outputs.length > LINEARS_MAX_MATRICES) return `the fused GEMVs take 1 to ${LINEARS_MAX_MATRICES} matrices (got ${outputs.length})`;
  let at = 1;
  let groups = 0;
  for (const { N, hasBias, hasRowScale } of outputs) {
    const w = inputs[at]!;
    if (hasRowScale !== (w.dtype === 'i8')) return `weight ${w.name ?? at} is ${w.dtype} ${hasRowScale ? 'with' : 'without'} row scales`;
    if (N < 1) return 'a matrix has no rows';
    groups += Math.ceil(N / DEFAULT_GEMV.rowsPerGroup);
    at += 1 + (hasBias ? 1 : 0) + (hasRowScale ? 1 : 0);
  }
  const { maxStorageBuffersPerShaderStage: maxStorage, maxBindingsPerBindGroup: maxBindings, maxComputeWorkgroupsPerDimension: maxGroups } = backend.limits;
  const storage = inputs.length + outputs.length;
  if (storage > maxStorage! || storage + 1 > maxBindings!) return `${storage} storage bindings, more than the device's ${maxStorage} per shader stage (or ${maxBindings} per bind group)`;
  return groups <= maxGroups! * maxGroups! || `grid too large for ${groups} workgroups`;
}

/** GEMV needs w as [N, K] with K a multiple of 4 (16-byte loads), one batch and at most GEMV_MAX_ROWS rows. */
function useGemv({ batch, M, K, transB }: MatmulAttrs): boolean {
  return transB && batch === 1 && M <= GEMV_MAX_ROWS && K % 4 === 0;
}

// Registered on import (the package lists its kernel files under sideEffects).
registerKernel({
  op: 'matmul',
  backend: 'webgpu',
  fn: matmul,
  verify: (_inputs, attrs: MatmulAttrs, backend: WebGPUBackend) => {
    const { batch, M, N } = attrs;
    // a residual is added by the GEMV epilogue only (linear composes linear then add otherwise)
    if ((attrs.hasResidual || attrs.norm) && !useGemv(attrs)) return `the residual epilogue and the input norm take the GEMV case only (got ${batch} x ${M} x ${attrs.K})`;
    const max = backend.limits.maxComputeWorkgroupsPerDimension!;
    return (batch <= max && Math.ceil(M / DEFAULT_TILE.BM) <= max && Math.ceil(N / DEFAULT_TILE.BN) <= max) || `grid too large for ${batch} x ${M} x ${N}`;
  },
});
registerKernel({
  op: 'swigluLinear',
  backend: 'webgpu',
  fn: swigluLinear,
  // only the GEMV case (the frontend composes the rest from linear and swiglu)
  verify: ([, gate, up]: Tensor[], { M, K, hasRowScale }: SwigluLinearAttrs) =>
    (M <= GEMV_MAX_ROWS && K % 4 === 0 && gate!.dtype === up!.dtype && (gate!.dtype === 'i8') === hasRowScale) ||
    `the fused GEMV takes at most ${GEMV_MAX_ROWS} rows, K a multiple of 4 and weights of one dtype, float or i8 codes with row scales (got ${M} x ${K}, ${gate!.dtype} and ${up!.dtype})`,
});
registerKernel({
  op: 'linears',
  backend: 'webgpu',
  fn: linears,
  // the GEMV case only and bindings the device has (linears composes separate linears otherwise)
  verify: linearsVerdict,
});

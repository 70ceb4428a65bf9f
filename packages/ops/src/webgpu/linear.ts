import { type DType, type Tensor, empty, registerKernel } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import type { MatmulAttrs } from '../linear.js';

/** Tile shape of the matrix-product kernel: a BM x BN output tile per workgroup, TM x TN outputs per thread. */
export interface GemmTile {
  BM: number;
  BN: number;
  BK: number;
  TM: number;
  TN: number;
}

/** Picked on an H100 (docs/benchmarks.md); every tile here is also tested on lavapipe. */
export const DEFAULT_TILE: GemmTile = { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8 };

/**
 * Tiled matrix product with register blocking. Each workgroup stages a BM x BK slice of a and a BK x BN
 * slice of op(b) in workgroup memory (k-major, as vec4 along m and n), then each thread accumulates TM x TN
 * outputs from vec4 reads: TM/4 row groups and TN/4 column groups, strided so a warp's stores are contiguous.
 * Loads upcast any dtype through load_a / load_b and zero-fill past the edges, so any M, N, K works.
 */
export function gemmProgram(aDType: DType, bDType: DType, transB: boolean, biasDType: DType | undefined, tile: GemmTile = DEFAULT_TILE): Program {
  const hasBias = biasDType !== undefined;
  const { BM, BN, BK, TM, TN } = tile;
  const TX = BN / TN;
  const TY = BM / TM;
  const threads = TX * TY;
  const key = `ops:gemm:${aDType}:${bDType}:${transB}:${biasDType}:${BM}x${BN}x${BK}:${TM}x${TN}`;
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
      const m = `m0 + ${g * rowStride}u + ty * 4u + ${r}u`;
      const n = `n0 + ${c * colStride}u + tx * 4u`;
      store.push(`store4(${m}, ${n}, ${v});`);
    }
    const loadsA = (BM * BK) / threads;
    const loadsB = (BN * BK) / threads;
    const bLoad = transB
      ? `let bn = l / ${BK}u; let bk = l % ${BK}u; let gn = n0 + bn; let gk = k0 + bk;
      var bv = 0.0; if (gn < u.N && gk < u.K) { bv = load_b(bBase + gn * u.K + gk); }`
      : `let bk = l / ${BN}u; let bn = l % ${BN}u; let gn = n0 + bn; let gk = k0 + bk;
      var bv = 0.0; if (gn < u.N && gk < u.K) { bv = load_b(bBase + gk * u.N + gn); }`;
    return program({
      name: 'matmul',
      inputs: biasDType ? { a: aDType, b: bDType, bias: biasDType } : { a: aDType, b: bDType },
      outputs: { out: 'f32' },
      uniforms: { M: 'u32', N: 'u32', K: 'u32', bBatchStride: 'u32' },
      workgroupSize: threads,
      helpers: `
var<workgroup> As: array<vec4<f32>, ${(BK * BM) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(BK * BN) / 4}>;
var<private> outBase: u32;
fn store4(m: u32, n: u32, v: vec4<f32>) {
  if (m >= u.M) { return; }
  for (var c = 0u; c < 4u; c++) {
    let col = n + c;
    if (col < u.N) { out[outBase + m * u.N + col] = v[c]${hasBias ? ' + load_bias(col)' : ''}; }
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
  for (var k0 = 0u; k0 < u.K; k0 += ${BK}u) {
    for (var e = 0u; e < ${loadsA}u; e++) {
      let l = e * ${threads}u + lid.x;
      let am = l / ${BK}u; let ak = l % ${BK}u; let gm = m0 + am; let gk = k0 + ak;
      var av = 0.0; if (gm < u.M && gk < u.K) { av = load_a(aBase + gm * u.K + gk); }
      As[ak * ${BM / 4}u + am / 4u][am % 4u] = av;
    }
    for (var e = 0u; e < ${loadsB}u; e++) {
      let l = e * ${threads}u + lid.x;
      ${bLoad}
      Bs[bk * ${BN / 4}u + bn / 4u][bn % 4u] = bv;
    }
    workgroupBarrier();
    for (var k = 0u; k < ${BK}u; k++) {
      ${Array.from({ length: RG }, (_, g) => `let a${g} = As[k * ${BM / 4}u + ${g * (rowStride / 4)}u + ty];`).join('\n      ')}
      ${Array.from({ length: CG }, (_, c) => `let b${c} = Bs[k * ${BN / 4}u + ${c * (colStride / 4)}u + tx];`).join('\n      ')}
      ${fma.join('\n      ')}
    }
    workgroupBarrier();
  }
  ${store.join('\n  ')}`,
    });
  });
}

/** Rows of x a GEMV dispatch handles at once (decode and tiny batches); more rows use the tiled kernel. */
export const GEMV_MAX_ROWS = 4;
const GEMV_ROWS_PER_WG = 8;
const GEMV_LANES = 32;

/**
 * y[m, n] = dot(x[m, :], w[n, :]) for a few rows m: memory-bound on w, which is streamed once. Each group of
 * 32 lanes owns one output row n and reads w[n, :] in 16-byte vectors (4 floats, or 4 halves as 2 words),
 * reusing each vector for every x row; lanes are summed in workgroup memory.
 */
export function gemvProgram(xDType: DType, wDType: DType, rows: number, biasDType: DType | undefined): Program {
  const hasBias = biasDType !== undefined;
  return cached(`ops:gemv:${xDType}:${wDType}:${rows}:${biasDType}`, () => {
    const half = wDType === 'f16' || wDType === 'bf16';
    const decode = wDType === 'f16' ? 'f16_bits_to_f32' : 'bf16_bits_to_f32';
    const wVec = half
      ? `let p = w[wRow + k4]; let wv = vec4<f32>(${decode}(p.x & 0xffffu), ${decode}(p.x >> 16u), ${decode}(p.y & 0xffffu), ${decode}(p.y >> 16u));`
      : `let wv = w[wRow + k4];`;
    const R = Array.from({ length: rows }, (_, m) => m);
    return program({
      name: 'matmul',
      inputs: biasDType ? { x: xDType, w: wDType, bias: biasDType } : { x: xDType, w: wDType },
      outputs: { out: 'f32' },
      views: { w: half ? 'vec2<u32>' : 'vec4<f32>' },
      uniforms: { N: 'u32', K: 'u32' },
      workgroupSize: GEMV_ROWS_PER_WG * GEMV_LANES,
      helpers: `var<workgroup> partial: array<f32, ${rows * GEMV_ROWS_PER_WG * GEMV_LANES}>;
fn x4(m: u32, k: u32) -> vec4<f32> {
  let i = m * u.K + k;
  return vec4<f32>(load_x(i), load_x(i + 1u), load_x(i + 2u), load_x(i + 3u));
}`,
      main: `  let r = lid.x / ${GEMV_LANES}u;
  let lane = lid.x % ${GEMV_LANES}u;
  let n = (wid.x + wid.y * nwg.x) * ${GEMV_ROWS_PER_WG}u + r;
  ${R.map((m) => `var acc${m} = 0.0;`).join(' ')}
  if (n < u.N) {
    let wRow = n * (u.K / 4u);
    for (var k4 = lane; k4 < u.K / 4u; k4 += ${GEMV_LANES}u) {
      ${wVec}
      ${R.map((m) => `acc${m} += dot(wv, x4(${m}u, k4 * 4u));`).join('\n      ')}
    }
  }
  ${R.map((m) => `partial[${m * GEMV_ROWS_PER_WG * GEMV_LANES}u + lid.x] = acc${m};`).join('\n  ')}
  workgroupBarrier();
  for (var s = ${GEMV_LANES / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) {
      ${R.map((m) => `partial[${m * GEMV_ROWS_PER_WG * GEMV_LANES}u + lid.x] += partial[${m * GEMV_ROWS_PER_WG * GEMV_LANES}u + lid.x + s];`).join('\n      ')}
    }
    workgroupBarrier();
  }
  if (lane == 0u && n < u.N) {
    ${R.map((m) => `out[${m}u * u.N + n] = partial[${m * GEMV_ROWS_PER_WG * GEMV_LANES}u + lid.x]${hasBias ? ' + load_bias(n)' : ''};`).join('\n    ')}
  }`,
    });
  });
}

async function matmul(inputs: Tensor[], attrs: MatmulAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const [a, b, bias] = inputs as [Tensor, Tensor, Tensor?];
  const { batch, M, N, K, transB, bShared, outShape } = attrs;
  const out = empty(outShape, { backend });
  if (out.size === 0) return out;
  if (useGemv(attrs)) {
    const prog = gemvProgram(a.dtype, b.dtype, M, bias?.dtype);
    await backend.run(prog, inputs, [out], { N, K }, grid1d(N, GEMV_ROWS_PER_WG, backend.limits.maxComputeWorkgroupsPerDimension));
    return out;
  }
  const tile = DEFAULT_TILE;
  const prog = gemmProgram(a.dtype, b.dtype, transB, bias?.dtype, tile);
  const uniforms = { M, N, K, bBatchStride: bShared ? 0 : K * N };
  await backend.run(prog, inputs, [out], uniforms, [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), batch]);
  return out;
}

/** GEMV needs w as [N, K] with K a multiple of 4 (16-byte loads), one batch and at most GEMV_MAX_ROWS rows. */
function useGemv({ batch, M, K, transB }: MatmulAttrs): boolean {
  return transB && batch === 1 && M <= GEMV_MAX_ROWS && K % 4 === 0;
}

export function registerLinearWebGPU(): void {
  registerKernel({
    op: 'matmul',
    backend: 'webgpu',
    fn: matmul,
    verify: (_inputs, { batch, M, N }: MatmulAttrs, backend: WebGPUBackend) => {
      const max = backend.limits.maxComputeWorkgroupsPerDimension!;
      return (batch <= max && Math.ceil(M / DEFAULT_TILE.BM) <= max && Math.ceil(N / DEFAULT_TILE.BN) <= max) || `grid too large for ${batch} x ${M} x ${N}`;
    },
  });
}

/**
 * WebGPU kernels of the monoid scan.
 *
 * - recurrent (decode and short prefills, spec 1.10): one workgroup per (sequence, head); column j of the
 *   state is held in registers by up to 4 threads (a slice of its rows each); each token's q, k and decay go
 *   through workgroup memory and the slices' dot products with q meet there too. The state
 *   lives in f32 storage between steps: nothing is read back per token.
 * - chunk (prefill, spec 1.5d), in three dispatches so that every chunk of every head runs in parallel except
 *   one cheap sequential pass:
 *   1. local: per chunk, L = (K * exp(B_C - B))^T V and the chunk's total log-decay g = B_C;
 *   2. carry: per state element, walk the chunks in order: S_c (the state entering chunk c) replaces L_c, and
 *      S_{c+1} = exp(g_c) S_c + L_c; the last one is the final state;
 *   3. output: per chunk, O = (Q * exp(B)) S_c + A V with A[r, s] = sum_i q_r[i] k_s[i] exp(B_r[i] - B_s[i]) for
 *      s <= r. Every exponent is <= 0 (B is a non-increasing cumulative sum inside the chunk), so nothing
 *      overflows however strong the decay: A's off-diagonal 16-row sub-chunk blocks are factored around a
 *      boundary between the two sub-chunks (both factors <= 1), its diagonal blocks are evaluated element by
 *      element; all 64 rows at once, each thread holding a 4 x 4 register tile of O and of A.
 */
import { type Tensor, cast, empty, registerKernel, tensor } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, program } from '@phalanx/webgpu';
import { ACTIVATIONS_WGSL } from '@phalanx/ops';
import { LOG_GATE_WGSL } from './decay-kernels.js';
import type { MonoidScanAttrs, StepPrologueAttrs } from './index.js';

/** Tokens per chunk and rows per sub-chunk tile of the chunk kernels (spec 1.10). */
export const CHUNK = 64;
const SUB = 16;
/** Largest Dk and Dv the chunk kernels stage in workgroup memory (32 KiB on lavapipe, 48 KiB on NVIDIA). */
export const CHUNK_MAX_DIM = 64;
const THREADS = 256;

interface Dims {
  Dk: number;
  Dv: number;
  scalarDecay: boolean;
}

/** WGSL that loads this workgroup's sequence (uniformly, so barriers may follow) and names the token rows. */
const SEQUENCE = `
var<workgroup> seqShared: vec3<u32>;
fn loadSequence(n: u32, lid: u32) -> vec3<u32> {
  if (lid == 0u) { seqShared = vec3<u32>(seqs[3u * n], seqs[3u * n + 1u], seqs[3u * n + 2u]); }
  return workgroupUniformLoad(&seqShared);
}`;

/** Decay of key dim i at token row `row`: a scalar decay is shared by the head's dims. */
const decay = (scalar: boolean, Dk: number) => (scalar ? `fn ld(row: u32, i: u32) -> f32 { return load_logDecay(row); }` : `fn ld(row: u32, i: u32) -> f32 { return load_logDecay(row * ${Dk}u + i); }`);

/** log a of key dim i at token row `row` from the decay projection z (monoidStep's prologue). */
const gatedDecay = (scalar: boolean, Dk: number, clamp: boolean) =>
  `fn ld(row: u32, i: u32) -> f32 { let v = log_gate(u.sign * load_logDecay(${scalar ? 'row' : `row * ${Dk}u + i`})); return ${clamp ? 'max(v, u.floor)' : 'v'}; }`;

/**
 * monoidStep's prologue on the staged q and k of one (token, head): each thread sums the squares of both
 * (Dk reads of workgroup memory, the same for all), then q and k are normed, weighted, scaled and activated in
 * place, as ops rmsNorm computes them.
 */
function prologueWgsl(Dk: number, threads: number, silu: boolean): string {
  const k = `sk[i] * kInv * kNorm[h * u.norm_stride + i]`;
  return `
    var qq = 0.0;
    var kk = 0.0;
    for (var i = 0u; i < ${Dk}u; i++) { qq += sq[i] * sq[i]; kk += sk[i] * sk[i]; }
    let qInv = inverseSqrt(qq / ${Dk}.0 + u.eps) * u.q_scale;
    let kInv = inverseSqrt(kk / ${Dk}.0 + u.eps);
    workgroupBarrier();
    for (var i = lid.x; i < ${Dk}u; i += ${threads}u) {
      sq[i] = sq[i] * qInv * qNorm[h * u.norm_stride + i];
      sk[i] = ${silu ? `silu(${k})` : k};
    }
    workgroupBarrier();`;
}

/** Threads per state column: each takes Dk / split rows, so decode keeps more loads in flight. */
function rowSplit(Dk: number, Dv: number): number {
  return [4, 2, 1].find((r) => Dk % r === 0 && Dv * r <= THREADS)!;
}

/**
 * `packed`: the sequences come from a table (cuSeqlens); otherwise sequence n is batch row n, tokens [0, T),
 * and the kernel needs no table (a decode step uploads nothing).
 */
function recurrentProgram(d: Dims, dtype: string, hasInit: boolean, packed: boolean, prologue?: StepPrologueAttrs): Program {
  const { Dk, Dv, scalarDecay } = d;
  const split = rowSplit(Dk, Dv);
  const rows = Dk / split;
  const pro = prologue && { silu: prologue.kSilu, clamp: prologue.floor !== null };
  return cached(`monoid:recurrent:${Dk}:${Dv}:${scalarDecay}:${hasInit}:${dtype}:${packed}:${pro ? `prologue,${pro.silu},${pro.clamp}` : ''}`, () => {
    const I = Array.from({ length: rows }, (_, i) => i);
    const dt = dtype as 'f32';
    const threads = Dv * split;
    return program({
      name: 'monoid-recurrent',
      inputs: {
        q: dt, k: dt, v: dt, logDecay: dt, ...(hasInit ? { init: 'f32' as const } : {}), ...(packed ? { seqs: 'u32' as const } : {}),
        ...(pro ? { qNorm: 'f32' as const, kNorm: 'f32' as const } : {}),
      },
      outputs: { out: 'f32', finalState: 'f32' },
      uniforms: { T: 'u32', H: 'u32', ...(pro ? { eps: 'f32', q_scale: 'f32', norm_stride: 'u32', sign: 'f32', ...(pro.clamp ? { floor: 'f32' } : {}) } : {}) },
      workgroupSize: threads,
      helpers: `${packed ? SEQUENCE : ''}
${pro ? `${LOG_GATE_WGSL}\n${pro.silu ? ACTIVATIONS_WGSL : ''}\n${gatedDecay(scalarDecay, Dk, pro.clamp)}` : decay(scalarDecay, Dk)}
var<workgroup> sq: array<f32, ${Dk}>;
var<workgroup> sk: array<f32, ${Dk}>;
var<workgroup> sa: array<f32, ${Dk}>;
var<workgroup> partial: array<f32, ${Dv * split}>;`,
      // thread (part, j) owns rows [part * rows, (part + 1) * rows) of column j, unrolled into scalars so
      // they stay in registers; the parts' dot products with q meet in workgroup memory
      main: `  let n = wid.x;
  let h = wid.y;
  let j = lid.x % ${Dv}u;
  let r0 = lid.x / ${Dv}u * ${rows}u;
  let seq = ${packed ? 'loadSequence(n, lid.x)' : 'vec3<u32>(n, 0u, u.T)'};
  let base = (n * u.H + h) * ${Dk * Dv}u + r0 * ${Dv}u + j;
  ${I.map((i) => `var s${i} = ${hasInit ? `init[base + ${i * Dv}u]` : '0.0'};`).join(' ')}
  for (var t = seq.y; t < seq.z; t++) {
    let row = (seq.x * u.T + t) * u.H + h;
    for (var i = lid.x; i < ${Dk}u; i += ${Dv * split}u) {
      sq[i] = load_q(row * ${Dk}u + i);
      sk[i] = load_k(row * ${Dk}u + i);
      sa[i] = exp(ld(row, i));
    }
    workgroupBarrier();${pro ? prologueWgsl(Dk, threads, pro.silu) : ''}
    let vj = load_v(row * ${Dv}u + j);
    var o = 0.0;
    ${I.map((i) => `s${i} = fma(sa[r0 + ${i}u], s${i}, sk[r0 + ${i}u] * vj); o = fma(sq[r0 + ${i}u], s${i}, o);`).join('\n    ')}
    partial[lid.x] = o;
    workgroupBarrier();
    if (lid.x < ${Dv}u) {
      ${split === 1 ? 'out[row * ' + Dv + 'u + j] = o;' : `out[row * ${Dv}u + j] = ${Array.from({ length: split }, (_, p) => `partial[${p * Dv}u + j]`).join(' + ')};`}
    }
  }
  ${I.map((i) => `finalState[base + ${i * Dv}u] = s${i};`).join(' ')}`,
    });
  });
}

/** Common head of the two per-chunk kernels: which chunk, which rows, and the decay of row r (0 past the end). */
const CHUNK_PRELUDE = (Dk: number) => `  let c = wid.x;
  let h = wid.y;
  let n = wid.z;
  let seq = loadSequence(n, lid.x);
  let first = seq.y + c * ${CHUNK}u;
  if (first >= seq.z && !(c == 0u)) { return; }
  let rows = min(${CHUNK}u, seq.z - min(first, seq.z));
  let chunkBase = ((n * u.H + h) * u.chunks + c) * ${Dk}u;`;

/** Token row index (into q, k, v, logDecay) of chunk row r. */
const ROW = `fn rowOf(seqBatch: u32, t: u32, h: u32) -> u32 { return (seqBatch * u.T + t) * u.H + h; }`;

function localProgram(d: Dims, dtype: string): Program {
  const { Dk, Dv, scalarDecay } = d;
  return cached(`monoid:chunk-local:${Dk}:${Dv}:${scalarDecay}:${dtype}`, () => {
    const dt = dtype as 'f32';
    const E = Array.from({ length: Math.ceil((Dk * Dv) / THREADS) }, (_, m) => m);
    const elem = (m: number) => `(lid.x + ${m * THREADS}u)`;
    return program({
      name: 'monoid-chunk-local',
      inputs: { k: dt, v: dt, logDecay: dt, seqs: 'u32' },
      outputs: { states: 'f32', decays: 'f32' },
      uniforms: { T: 'u32', H: 'u32', chunks: 'u32' },
      workgroupSize: THREADS,
      helpers: `${SEQUENCE}
${decay(scalarDecay, Dk)}
${ROW}
var<workgroup> kt: array<f32, ${CHUNK * Dk}>;
var<workgroup> vt: array<f32, ${SUB * Dv}>;`,
      main: `${CHUNK_PRELUDE(Dk)}
  // k scaled by its decay to the chunk's end, exp(B_C - B_r) <= 1. The decays are loaded by the whole
  // workgroup at once (a thread walking its column through global memory would wait on every load), summed
  // backwards in workgroup memory one key dim per thread, then k is loaded and scaled in parallel.
  for (var e = lid.x; e < ${CHUNK * Dk}u; e += ${THREADS}u) {
    let r = e / ${Dk}u;
    kt[e] = select(0.0, ld(rowOf(seq.x, first + r, h), e % ${Dk}u), r < rows);
  }
  workgroupBarrier();
  if (lid.x < ${Dk}u) {
    var after = 0.0;
    for (var r = i32(${CHUNK}) - 1; r >= 0; r--) {
      let at = u32(r) * ${Dk}u + lid.x;
      let here = kt[at];
      kt[at] = after;
      after += here;
    }
    decays[chunkBase + lid.x] = after;
  }
  workgroupBarrier();
  for (var e = lid.x; e < ${CHUNK * Dk}u; e += ${THREADS}u) {
    let r = e / ${Dk}u;
    kt[e] = select(0.0, load_k(rowOf(seq.x, first + r, h) * ${Dk}u + e % ${Dk}u) * exp(kt[e]), r < rows);
  }
  workgroupBarrier();
  // L = kt^T V, V staged ${SUB} rows at a time; each thread accumulates its elements e = lid.x + m * THREADS
  ${E.map((m) => `var acc${m} = 0.0;`).join(' ')}
  for (var r0 = 0u; r0 < ${CHUNK}u; r0 += ${SUB}u) {
    for (var e = lid.x; e < ${SUB * Dv}u; e += ${THREADS}u) {
      let r = r0 + e / ${Dv}u;
      vt[e] = 0.0;
      if (r < rows) { vt[e] = load_v(rowOf(seq.x, first + r, h) * ${Dv}u + e % ${Dv}u); }
    }
    workgroupBarrier();
    for (var rr = 0u; rr < ${SUB}u; rr++) {
      ${E.map((m) => `acc${m} = fma(kt[(r0 + rr) * ${Dk}u + ${elem(m)} / ${Dv}u], vt[rr * ${Dv}u + ${elem(m)} % ${Dv}u], acc${m});`).join('\n      ')}
    }
    workgroupBarrier();
  }
  ${E.map((m) => `if (${elem(m)} < ${Dk * Dv}u) { states[chunkBase * ${Dv}u + ${elem(m)}] = acc${m}; }`).join('\n  ')}`,
    });
  });
}

function carryProgram(d: Dims, hasInit: boolean): Program {
  const { Dk, Dv } = d;
  return cached(`monoid:chunk-carry:${Dk}:${Dv}:${hasInit}`, () =>
    program({
      name: 'monoid-chunk-carry',
      inputs: { decays: 'f32', ...(hasInit ? { init: 'f32' as const } : {}), seqs: 'u32' },
      outputs: { states: 'f32', finalState: 'f32' },
      uniforms: { H: 'u32', chunks: 'u32' },
      workgroupSize: THREADS,
      main: `  let e = wid.x * ${THREADS}u + lid.x;
  if (e >= ${Dk * Dv}u) { return; }
  let h = wid.y;
  let n = wid.z;
  let len = seqs[3u * n + 2u] - seqs[3u * n + 1u];
  let count = (len + ${CHUNK - 1}u) / ${CHUNK}u;
  let i = e / ${Dv}u;
  let head = (n * u.H + h);
  var s = ${hasInit ? `init[head * ${Dk * Dv}u + e]` : '0.0'};
  // the next chunk's loads are issued before this chunk's update, so their latency overlaps the chain
  var nextL = 0.0;
  var nextG = 0.0;
  if (count > 0u) {
    nextL = states[head * u.chunks * ${Dk * Dv}u + e];
    nextG = decays[head * u.chunks * ${Dk}u + i];
  }
  for (var c = 0u; c < count; c++) {
    let at = (head * u.chunks + c) * ${Dk * Dv}u + e;
    let chunkState = nextL;
    let chunkDecay = nextG;
    if (c + 1u < count) {
      nextL = states[at + ${Dk * Dv}u];
      nextG = decays[(head * u.chunks + c + 1u) * ${Dk}u + i];
    }
    states[at] = s;
    s = exp(chunkDecay) * s + chunkState;
  }
  finalState[head * ${Dk * Dv}u + e] = s;`,
    }),
  );
}

/**
 * Outputs of one chunk, all 64 query rows at once with register tiles (spec 1.5d). Thread (ty, tx) owns rows
 * ty + 16m (m = 0..3: one row of each sub-chunk, so every thread does the same work) and value columns
 * 4tx..4tx+3, 16 outputs, so each vec4 read of S_c or V serves 4 rows and each query or score read 4 columns.
 * The key dims are taken W = 4 CW at a time (CW vec4s); per pass, from the cumulative log-decay B of the pass's
 * dims, workgroup memory holds (rows padded to CW + 1 vec4s, so the score tiles' row reads spread over banks):
 *  - B, and the raw q and k (the diagonal sub-chunk blocks use exp(B_r - B_s) element by element, s <= r);
 *  - Qh = q * exp(B_r - g_p), g_p = B at the first row of r's sub-chunk p (so Qh * exp(g_p) = q * exp(B_r) is
 *    the inter-chunk query, and Qh is the off-diagonal query factor);
 *  - Kp = k * exp(g_{b+1} - B_s), b the key's sub-chunk; an off-diagonal block (p, b < p) is then
 *    A = (Qh * exp(g_p - g_{b+1})) Kp^T, every factor <= 1;
 *  - S_c's rows of the pass's dims, for O += (q * exp(B)) S_c.
 * Score work: 16 threads per 16x16 block, each a 4x4 tile (rows ri + 4j, keys ci + 4l of the block), summed in
 * registers over the passes: 6 off-diagonal blocks, and the 4 diagonal blocks split over two thread groups by
 * dims (the element-wise exps are the costly part); the blocks above the diagonal are never computed. The
 * scores then go to workgroup memory as A^T (vec4 of the 4 rows a thread owns), and O += A V reads V in two
 * 32-row halves, each key sub-chunk b only feeding the rows of sub-chunks >= b. Global loads go to registers
 * ahead of their use (the next pass's decays during this pass's staging, q, k and S_c during the decay sum, V
 * while the scores are written out), so their latency overlaps a barrier-bound phase instead of adding to it.
 */
function outputProgram(d: Dims, dtype: string): Program {
  const { Dk, Dv, scalarDecay } = d;
  return cached(`monoid:chunk-output:${Dk}:${Dv}:${scalarDecay}:${dtype}`, () => {
    const dt = dtype as 'f32';
    const K4 = Math.ceil(Dk / 4);
    const V4 = Math.ceil(Dv / 4);
    const CW = Math.min(4, K4); // vec4s of key dims per pass
    const NC = Math.ceil(K4 / CW); // passes
    const W = 4 * CW; // key dims per pass
    const ST = CW + 1; // row stride of the per-row tiles, in vec4s
    const H0 = Math.ceil(CW / 2); // the diagonal blocks' first thread group takes vec4s [0, H0) of a pass
    const TILE = CHUNK * ST;
    // pass layout of the pool (vec4s)
    const oB = 0;
    const oQ = TILE;
    const oK = 2 * TILE;
    const oQR = 3 * TILE;
    const oKR = 4 * TILE;
    const oEG = 5 * TILE;
    const oW = oEG + 4 * CW;
    const oS = oW + 6 * CW;
    const passEnd = oS + W * V4;
    // after the passes: A^T and half of V
    const oAT = 0;
    const oV = CHUNK * 16;
    const POOL = Math.max(passEnd, oV + 32 * V4);
    const M = [0, 1, 2, 3];
    const JL = M.flatMap((j) => M.map((l) => [j, l] as const));
    const u = (x: number) => `${x}u`;
    const DI = Array.from({ length: Math.ceil((CHUNK * W) / THREADS) }, (_, n) => n);
    const VI = Array.from({ length: Math.ceil((32 * 4 * V4) / THREADS) }, (_, n) => n);
    const SI = Array.from({ length: Math.ceil((W * 4 * V4) / THREADS) }, (_, n) => n);
    // the decays of the pass starting at dim `from`, into registers dl0.. (element e = lid.x + n * THREADS)
    const loadDecays = (from: string) =>
      DI.map((n) => `{
    let e = lid.x + ${n * THREADS}u;
    let r = e / ${W}u;
    let i = ${from} + e % ${W}u;
    dl${n} = 0.0;
    if (e < ${CHUNK * W}u && r < rows && i < ${Dk}u) { dl${n} = ld(rowOf(seq.x, first + r, h), i); }
  }`).join(' ');
    const bAt = (row: string, v: string) => `pool[${oB}u + (${row}) * ${ST}u + ${v}]`;
    return program({
      name: 'monoid-chunk-output',
      inputs: { q: dt, k: dt, v: dt, logDecay: dt, states: 'f32', seqs: 'u32' },
      outputs: { out: 'f32' },
      uniforms: { T: 'u32', H: 'u32', chunks: 'u32' },
      workgroupSize: THREADS,
      helpers: `${SEQUENCE}
${decay(scalarDecay, Dk)}
${ROW}
var<workgroup> pool: array<vec4<f32>, ${POOL}>;`,
      main: `${CHUNK_PRELUDE(Dk)}
  let ty = lid.x / 16u;
  let tx = lid.x % 16u;
  // score job of this thread: block (sp, sb), tile (ri, ci); role 1 diagonal (vec4s [vlo, vhi) of each pass),
  // 2 off-diagonal (pair index job - 4), 0 none
  let job = ty;
  let ri = tx % 4u;
  let ci = tx / 4u;
  var role = 0u;
  var sp = 0u;
  var sb = 0u;
  var vlo = 0u;
  var vhi = ${u(CW)};
  if (job < 4u) {
    role = 1u; sp = job; sb = job; vhi = ${u(H0)};
  } else if (job < 10u) {
    role = 2u;
    let k = job - 4u;
    sp = 1u + u32(k >= 1u) + u32(k >= 3u);
    sb = k - sp * (sp - 1u) / 2u;
  } else if (job < 14u) {
    role = 1u; sp = job - 10u; sb = sp; vlo = ${u(H0)};
  }
  let pair = job - 4u;
  let R = 16u * sp + ri;
  let C = 16u * sb + ci;
  ${M.map((m) => `var o${m} = vec4<f32>(0.0);`).join(' ')}
  ${JL.map(([j, l]) => `var a${j}${l} = 0.0;`).join(' ')}
  ${DI.map((n) => `var dl${n} = 0.0;`).join(' ')}
  ${loadDecays('0u')}
  for (var kc = 0u; kc < ${u(NC)}; kc++) {
    let i0 = kc * ${u(W)};
    // B of the pass's dims: the decays (already in registers, see the end of the staging) go to workgroup
    // memory, then an inclusive sum down the rows, thread (ty, tx) taking rows 4ty..4ty+3 of dim tx and adding
    // the totals of the segments above. This pass's q, k and S_c loads are issued first, to land meanwhile.
    ${DI.map((n) => `if (lid.x + ${u(n * THREADS)} < ${u(CHUNK * W)}) { let e = lid.x + ${u(n * THREADS)}; pool[${oB}u + e / ${u(W)} * ${ST}u + e % ${u(W)} / 4u][e % 4u] = dl${n}; }`).join('\n    ')}
    workgroupBarrier();
    var qv = vec4<f32>(0.0);
    var kv = vec4<f32>(0.0);
    let sr = lid.x / ${u(CW)};
    let sv = lid.x % ${u(CW)};
    if (lid.x < ${u(CHUNK * CW)} && sr < rows) {
      let row = rowOf(seq.x, first + sr, h) * ${u(Dk)};
      for (var c4 = 0u; c4 < 4u; c4++) {
        let i = i0 + 4u * sv + c4;
        if (i < ${u(Dk)}) { qv[c4] = load_q(row + i); kv[c4] = load_k(row + i); }
      }
    }
    ${SI.map((n) => `var st${n} = 0.0;
    {
      let e = lid.x + ${u(n * THREADS)};
      let i = i0 + e / ${u(4 * V4)};
      let x = e % ${u(4 * V4)};
      if (e < ${u(W * 4 * V4)} && i < ${u(Dk)} && x < ${u(Dv)}) { st${n} = states[(chunkBase + i) * ${u(Dv)} + x]; }
    }`).join('\n    ')}
    if (tx < ${u(W)}) {
      var acc = 0.0;
      for (var rr = 0u; rr < 4u; rr++) {
        let at = ${oB}u + (4u * ty + rr) * ${ST}u + tx / 4u;
        acc += pool[at][tx % 4u];
        pool[at][tx % 4u] = acc;
      }
    }
    workgroupBarrier();
    var above = 0.0;
    if (tx < ${u(W)}) {
      for (var sg = 0u; sg < ty; sg++) { above += pool[${oB}u + (4u * sg + 3u) * ${ST}u + tx / 4u][tx % 4u]; }
    }
    workgroupBarrier();
    if (tx < ${u(W)}) {
      for (var rr = 0u; rr < 4u; rr++) { pool[${oB}u + (4u * ty + rr) * ${ST}u + tx / 4u][tx % 4u] += above; }
    }
    workgroupBarrier();
    // q, k, Qh, Kp; the tables exp(g_p) and exp(g_p - g_{b+1}); S_c's rows i0..i0+W
    if (lid.x < ${u(CHUNK * CW)}) {
      let r = sr;
      let v = sv;
      let p = r / 16u;
      let br = ${bAt('r', 'v')};
      pool[${oQR}u + r * ${ST}u + v] = qv;
      pool[${oKR}u + r * ${ST}u + v] = kv;
      pool[${oQ}u + r * ${ST}u + v] = qv * exp(br - ${bAt('16u * p', 'v')});
      pool[${oK}u + r * ${ST}u + v] = select(vec4<f32>(0.0), kv * exp(${bAt('min(16u * p + 16u, 63u)', 'v')} - br), p < 3u);
    }
    if (lid.x < ${u(4 * CW)}) {
      pool[${oEG}u + lid.x] = exp(${bAt(`16u * (lid.x / ${u(CW)})`, `lid.x % ${u(CW)}`)});
    } else if (lid.x >= 64u && lid.x < ${u(64 + 6 * CW)}) {
      let k = (lid.x - 64u) / ${u(CW)};
      let v = (lid.x - 64u) % ${u(CW)};
      let p = 1u + u32(k >= 1u) + u32(k >= 3u);
      let b = k - p * (p - 1u) / 2u;
      pool[${oW}u + k * ${u(CW)} + v] = exp(${bAt('16u * p', 'v')} - ${bAt('16u * b + 16u', 'v')});
    }
    ${SI.map((n) => `if (lid.x + ${u(n * THREADS)} < ${u(W * 4 * V4)}) { let e = lid.x + ${u(n * THREADS)}; pool[${oS}u + e / ${u(4 * V4)} * ${u(V4)} + e % ${u(4 * V4)} / 4u][e % 4u] = st${n}; }`).join('\n    ')}
    if (kc + 1u < ${u(NC)}) { ${loadDecays('i0 + ' + u(W))} }
    workgroupBarrier();
    // O += (q * exp(B)) S_c
    if (tx < ${u(V4)}) {
      for (var v = 0u; v < ${u(CW)}; v++) {
        ${M.map((m) => `let e${m} = pool[${oQ}u + (ty + ${u(16 * m)}) * ${ST}u + v] * pool[${oEG + m * CW}u + v];`).join('\n        ')}
        ${[0, 1, 2, 3].map((c4) => `{
          let s = pool[${oS}u + (4u * v + ${u(c4)}) * ${u(V4)} + tx];
          ${M.map((m) => `o${m} = fma(vec4<f32>(e${m}[${c4}]), s, o${m});`).join(' ')}
        }`).join('\n        ')}
      }
    }
    // scores
    if (role == 1u) {
      for (var v = vlo; v < vhi; v++) {
        ${M.map((j) => `let q${j} = pool[${oQR}u + (R + ${u(4 * j)}) * ${ST}u + v]; let br${j} = ${bAt(`R + ${u(4 * j)}`, 'v')};`).join('\n        ')}
        ${M.map((l) => `let k${l} = pool[${oKR}u + (C + ${u(4 * l)}) * ${ST}u + v]; let bs${l} = ${bAt(`C + ${u(4 * l)}`, 'v')};`).join('\n        ')}
        ${JL.filter(([j, l]) => j >= l).map(([j, l]) => `a${j}${l} += dot(q${j} * k${l}, exp(br${j} - bs${l}));`).join('\n        ')}
      }
    } else if (role == 2u) {
      for (var v = 0u; v < ${u(CW)}; v++) {
        let w = pool[${oW}u + pair * ${u(CW)} + v];
        ${M.map((j) => `let q${j} = pool[${oQ}u + (R + ${u(4 * j)}) * ${ST}u + v] * w;`).join('\n        ')}
        ${M.map((l) => `let k${l} = pool[${oK}u + (C + ${u(4 * l)}) * ${ST}u + v];`).join('\n        ')}
        ${JL.map(([j, l]) => `a${j}${l} += dot(q${j}, k${l});`).join('\n        ')}
      }
    }
    workgroupBarrier();
  }
  // V's loads are issued before the scores are written out, to land meanwhile
  ${[0, 1].map((half) => VI.map((n) => `var vl${half}_${n} = 0.0;
  {
    let e = lid.x + ${u(n * THREADS)};
    let s = ${u(32 * half)} + e / ${u(4 * V4)};
    let x = e % ${u(4 * V4)};
    if (e < ${u(32 * 4 * V4)} && s < rows && x < ${u(Dv)}) { vl${half}_${n} = load_v(rowOf(seq.x, first + s, h) * ${u(Dv)} + x); }
  }`).join('\n  ')).join('\n  ')}
  // A^T: pool[s * 16 + t][m] = A[t + 16m, s]; the diagonal blocks' upper entries are 0, their second dim group adds
  let at = ${oAT}u + C * 16u + ri;
  if (role == 2u) {
    ${JL.map(([j, l]) => `pool[at + ${u(64 * l + 4 * j)}][sp] = a${j}${l};`).join('\n    ')}
  } else if (role == 1u && vlo == 0u) {
    ${JL.map(([j, l]) => `pool[at + ${u(64 * l + 4 * j)}][sp] = ${j < l ? '0.0' : j === l ? `select(0.0, a${j}${l}, ci <= ri)` : `a${j}${l}`};`).join('\n    ')}
  }
  workgroupBarrier();
  if (role == 1u && vlo != 0u) {
    ${JL.filter(([j, l]) => j >= l).map(([j, l]) => `pool[at + ${u(64 * l + 4 * j)}][sp] += ${j === l ? `select(0.0, a${j}${l}, ci <= ri)` : `a${j}${l}`};`).join('\n    ')}
  }
  workgroupBarrier();
  // O += A V, V staged 32 rows at a time; key sub-chunk b feeds rows of sub-chunks m >= b only
  ${[0, 1].map((half) => `${VI.map((n) => `if (lid.x + ${u(n * THREADS)} < ${u(32 * 4 * V4)}) { let e = lid.x + ${u(n * THREADS)}; pool[${oV}u + e / ${u(4 * V4)} * ${u(V4)} + e % ${u(4 * V4)} / 4u][e % 4u] = vl${half}_${n}; }`).join('\n  ')}
  workgroupBarrier();
  if (tx < ${u(V4)}) {
    ${[2 * half, 2 * half + 1].map((b) => `for (var ss = 0u; ss < 16u; ss++) {
      let a = pool[${oAT}u + (${u(16 * b)} + ss) * 16u + ty];
      let vv = pool[${oV}u + (${u(16 * (b - 2 * half))} + ss) * ${u(V4)} + tx];
      ${M.filter((m) => m >= b).map((m) => `o${m} = fma(vec4<f32>(a[${m}]), vv, o${m});`).join(' ')}
    }`).join('\n    ')}
  }
  workgroupBarrier();`).join('\n  ')}
  if (tx < ${u(V4)}) {
    ${M.map((m) => `if (ty + ${u(16 * m)} < rows) {
      let row = rowOf(seq.x, first + ty + ${u(16 * m)}, h) * ${u(Dv)} + 4u * tx;
      for (var c4 = 0u; c4 < 4u; c4++) { if (4u * tx + c4 < ${u(Dv)}) { out[row + c4] = o${m}[c4]; } }
    }`).join('\n    ')}
  }`,
    });
  });
}

/** The sequences as [batch, start, end] triples for the kernels. */
function sequenceTable(a: MonoidScanAttrs, backend: WebGPUBackend): Tensor {
  return tensor(Uint32Array.from(a.sequences.flatMap((s) => [s.batch, s.start, s.end])), [a.sequences.length, 3], { backend });
}

/** All inputs share one float dtype in these kernels; mixed dtypes are declined. */
function inputDType(inputs: Tensor[]): string | undefined {
  const d = inputs[0]!.dtype;
  return inputs.slice(0, 4).every((t) => t.dtype === d) ? d : undefined;
}

/** The initial state as the f32 the kernels read (a copy when it is stored as f16/bf16; the caller disposes it). */
async function f32State(init: Tensor | undefined): Promise<Tensor | undefined> {
  return init && init.dtype !== 'f32' ? cast(init, 'f32') : init;
}

async function recurrent(inputs: Tensor[], a: MonoidScanAttrs, backend: WebGPUBackend): Promise<Tensor[]> {
  const [q, k, v, logDecay] = inputs;
  const init = await f32State(inputs[4]);
  const output = empty(a.outputShape, { backend });
  const final = empty(a.stateShape, { backend });
  const packed = !a.sequences.every((s, n) => s.batch === n && s.start === 0 && s.end === a.T);
  const seqs = packed ? [sequenceTable(a, backend)] : [];
  const prog = recurrentProgram(a, inputDType(inputs)!, !!init, packed, a.prologue);
  const p = a.prologue;
  // the prologue's norm weights as f32 (what the kernel binds), copies where they are stored as f16/bf16
  const norms = p ? await Promise.all(inputs.slice(5, 7).map((w) => (w.dtype === 'f32' ? w : cast(w, 'f32')))) : [];
  const uniforms = p ? { T: a.T, H: a.H, eps: p.eps, q_scale: p.qScale, norm_stride: p.perHead ? a.Dk : 0, sign: p.sign, ...(p.floor !== null ? { floor: p.floor } : {}) } : { T: a.T, H: a.H };
  await backend.run(prog, [q!, k!, v!, logDecay!, ...(init ? [init] : []), ...seqs, ...norms], [output, final], uniforms, [a.sequences.length, a.H, 1]);
  norms.forEach((w, i) => w !== inputs[5 + i] && w.dispose());
  for (const t of seqs) t.dispose();
  if (init !== inputs[4]) init?.dispose();
  return [output, final];
}

async function chunked(inputs: Tensor[], a: MonoidScanAttrs, backend: WebGPUBackend): Promise<Tensor[]> {
  const [q, k, v, logDecay] = inputs;
  const init = await f32State(inputs[4]);
  const N = a.sequences.length;
  const chunks = chunkCount(a);
  const dtype = inputDType(inputs)!;
  const seqs = sequenceTable(a, backend);
  const states = empty([N, a.H, chunks, a.Dk, a.Dv], { backend });
  const decays = empty([N, a.H, chunks, a.Dk], { backend });
  const output = empty(a.outputShape, { backend });
  const final = empty(a.stateShape, { backend });
  const grid: [number, number, number] = [chunks, a.H, N];
  await backend.run(localProgram(a, dtype), [k!, v!, logDecay!, seqs], [states, decays], { T: a.T, H: a.H, chunks }, grid);
  await backend.run(carryProgram(a, !!init), init ? [decays, init, seqs] : [decays, seqs], [states, final], { H: a.H, chunks }, [Math.ceil((a.Dk * a.Dv) / THREADS), a.H, N]);
  await backend.run(outputProgram(a, dtype), [q!, k!, v!, logDecay!, states, seqs], [output], { T: a.T, H: a.H, chunks }, grid);
  for (const t of [seqs, states, decays]) t.dispose();
  if (init !== inputs[4]) init?.dispose();
  return [output, final];
}

/** Chunks of the longest sequence (at least 1, so empty sequences still get their final state written). */
function chunkCount(a: MonoidScanAttrs): number {
  return Math.max(1, ...a.sequences.map((s) => Math.ceil((s.end - s.start) / CHUNK)));
}

function recurrentFits(inputs: Tensor[], a: MonoidScanAttrs, backend: WebGPUBackend): true | string {
  if (!inputDType(inputs)) return 'q, k, v and logDecay have different dtypes';
  if (a.Dv > THREADS) return `Dv ${a.Dv} > ${THREADS}: one workgroup holds a state column per thread`;
  if (a.Dk > 256) return `Dk ${a.Dk} > 256 does not fit in registers`;
  return true;
}

// Registered on import (listed under sideEffects). The chunk kernel is preferred where it applies; the
// recurrent one serves short inputs, decode and shapes the chunk kernel declines.
registerKernel({
  op: 'monoidScan',
  backend: 'webgpu',
  priority: 1,
  fn: chunked,
  verify: (inputs: Tensor[], a: MonoidScanAttrs, backend: WebGPUBackend) => {
    if (a.mode !== 'chunk' && !(a.mode === 'auto' && a.T > CHUNK)) return `mode '${a.mode}' with T = ${a.T} is not for the chunk kernel`;
    if (a.Dk > CHUNK_MAX_DIM || a.Dv > CHUNK_MAX_DIM) return `Dk ${a.Dk} / Dv ${a.Dv} above ${CHUNK_MAX_DIM} do not fit the chunk kernel's workgroup memory`;
    if (a.chunkSize !== CHUNK || a.subChunkSize !== SUB) return `the WebGPU chunk kernel uses chunkSize ${CHUNK} and subChunkSize ${SUB}`;
    const bytes = a.sequences.length * a.H * chunkCount(a) * a.Dk * a.Dv * 4;
    if (bytes > backend.limits.maxStorageBufferBindingSize!) return `per-chunk states need ${bytes} bytes, over the binding limit`;
    return recurrentFits(inputs, a, backend);
  },
});
registerKernel({
  op: 'monoidScan',
  backend: 'webgpu',
  fn: recurrent,
  verify: (inputs: Tensor[], a: MonoidScanAttrs, backend: WebGPUBackend) => {
    if (a.mode === 'scan' || a.mode === 'chunk') return `mode '${a.mode}' is not the recurrent form`;
    return recurrentFits(inputs, a, backend);
  },
});
registerKernel({ op: 'monoidStep', backend: 'webgpu', fn: recurrent, verify: recurrentFits });

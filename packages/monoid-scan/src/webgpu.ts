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
 *      overflows however strong the decay; A is evaluated element by element, one sub-chunk tile at a time.
 */
import { type Tensor, cast, empty, registerKernel, tensor } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, program } from '@phalanx/webgpu';
import type { MonoidScanAttrs } from './index.js';

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

/** Threads per state column: each takes Dk / split rows, so decode keeps more loads in flight. */
function rowSplit(Dk: number, Dv: number): number {
  return [4, 2, 1].find((r) => Dk % r === 0 && Dv * r <= THREADS)!;
}

function recurrentProgram(d: Dims, dtype: string, hasInit: boolean): Program {
  const { Dk, Dv, scalarDecay } = d;
  const split = rowSplit(Dk, Dv);
  const rows = Dk / split;
  return cached(`monoid:recurrent:${Dk}:${Dv}:${scalarDecay}:${hasInit}:${dtype}`, () => {
    const I = Array.from({ length: rows }, (_, i) => i);
    const dt = dtype as 'f32';
    return program({
      name: 'monoid-recurrent',
      inputs: { q: dt, k: dt, v: dt, logDecay: dt, ...(hasInit ? { init: 'f32' as const } : {}), seqs: 'u32' },
      outputs: { out: 'f32', finalState: 'f32' },
      uniforms: { T: 'u32', H: 'u32' },
      workgroupSize: Dv * split,
      helpers: `${SEQUENCE}
${decay(scalarDecay, Dk)}
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
  let seq = loadSequence(n, lid.x);
  let base = (n * u.H + h) * ${Dk * Dv}u + r0 * ${Dv}u + j;
  ${I.map((i) => `var s${i} = ${hasInit ? `init[base + ${i * Dv}u]` : '0.0'};`).join(' ')}
  for (var t = seq.y; t < seq.z; t++) {
    let row = (seq.x * u.T + t) * u.H + h;
    for (var i = lid.x; i < ${Dk}u; i += ${Dv * split}u) {
      sq[i] = load_q(row * ${Dk}u + i);
      sk[i] = load_k(row * ${Dk}u + i);
      sa[i] = exp(ld(row, i));
    }
    workgroupBarrier();
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
 * Outputs of one chunk, one sub-chunk p of 16 query rows at a time; thread (r, g) owns row r of p and value
 * columns 4g..4g+3. Everything a loop reads repeatedly is staged in workgroup memory (16-row tiles):
 *  - inter-chunk: (q * exp(B_r)) S_c, S_c in 16-row tiles;
 *  - earlier key sub-chunks b < p: A = (q * exp(B_r - g_p)) (k * exp(g_p - B_s))^T with g_p = B at p's first
 *    row (both factors <= 1, spec 1.5d), so the scores are plain dot products;
 *  - the diagonal sub-chunk: exp(B_r - B_s) element by element, s <= r.
 */
function outputProgram(d: Dims, dtype: string): Program {
  const { Dk, Dv, scalarDecay } = d;
  return cached(`monoid:chunk-output:${Dk}:${Dv}:${scalarDecay}:${dtype}`, () => {
    const dt = dtype as 'f32';
    // Tiles are vec4 rows, padded with zeros to whole vec4s (a zero lane adds nothing to a dot product); q and
    // k rows get one more vec4 of stride, as the score loop reads 16 different key rows at once.
    const K4 = Math.ceil(Dk / 4);
    const V4 = Math.ceil(Dv / 4);
    const stage = (buf: string, width: number, vecStride: number, value: string) => `for (var e = lid.x; e < ${SUB * 4 * Math.ceil(width / 4)}u; e += ${THREADS}u) {
      let rr = e / ${4 * Math.ceil(width / 4)}u;
      let x = e % ${4 * Math.ceil(width / 4)}u;
      ${buf}[rr * ${vecStride}u + x / 4u][x % 4u] = select(0.0, ${value}, x < ${width}u);
    }`;
    const qRow = (rr: string) => `p * ${SUB}u + ${rr}`;
    return program({
      name: 'monoid-chunk-output',
      inputs: { q: dt, k: dt, v: dt, logDecay: dt, states: 'f32', seqs: 'u32' },
      outputs: { out: 'f32' },
      uniforms: { T: 'u32', H: 'u32', chunks: 'u32' },
      workgroupSize: THREADS,
      helpers: `${SEQUENCE}
${decay(scalarDecay, Dk)}
${ROW}
var<workgroup> cum: array<vec4<f32>, ${CHUNK * K4}>;
var<workgroup> qx: array<vec4<f32>, ${SUB * (K4 + 1)}>;
var<workgroup> kx: array<vec4<f32>, ${SUB * (K4 + 1)}>;
var<workgroup> vx: array<vec4<f32>, ${SUB * V4}>;
var<workgroup> att: array<f32, ${SUB * SUB}>;
fn cumAt(row: u32, i: u32) -> f32 { return cum[row * ${K4}u + i / 4u][i % 4u]; }`,
      main: `${CHUNK_PRELUDE(Dk)}
  // B_r: inclusive cumulative log-decay inside the chunk. The decays are loaded by the whole workgroup at once,
  // then summed down each key dim in workgroup memory, one per thread (padding lanes stay 0).
  for (var e = lid.x; e < ${CHUNK * 4 * K4}u; e += ${THREADS}u) {
    let r = e / ${4 * K4}u;
    let i = e % ${4 * K4}u;
    cum[r * ${K4}u + i / 4u][i % 4u] = select(0.0, ld(rowOf(seq.x, first + r, h), min(i, ${Dk - 1}u)), r < rows && i < ${Dk}u);
  }
  workgroupBarrier();
  if (lid.x < ${4 * K4}u) {
    var acc = 0.0;
    for (var r = 0u; r < ${CHUNK}u; r++) {
      acc += cum[r * ${K4}u + lid.x / 4u][lid.x % 4u];
      cum[r * ${K4}u + lid.x / 4u][lid.x % 4u] = acc;
    }
  }
  workgroupBarrier();
  let r = lid.x / 16u;  // query row within the sub-chunk; also the score's row
  let g = lid.x % 16u;  // vec4 of value columns; also the score's key row
  for (var p = 0u; p < ${CHUNK / SUB}u; p++) {
    let qr = p * ${SUB}u + r;
    var o = vec4<f32>(0.0);
    // (q * exp(B_r)) S_c, S_c staged 16 rows at a time in vx
    ${stage('qx', Dk, K4 + 1, `select(0.0, load_q(rowOf(seq.x, first + ${qRow('rr')}, h) * ${Dk}u + x) * exp(cumAt(${qRow('rr')}, x)), ${qRow('rr')} < rows)`)}
    for (var i0 = 0u; i0 < ${4 * K4}u; i0 += ${SUB}u) {
      ${stage('vx', Dv, V4, `select(0.0, states[(chunkBase + i0 + rr) * ${Dv}u + x], i0 + rr < ${Dk}u)`)}
      workgroupBarrier();
      for (var ii = 0u; ii < ${SUB}u; ii++) {
        let i = i0 + ii;
        if (g < ${V4}u && i < ${4 * K4}u) { o = fma(vec4<f32>(qx[r * ${K4 + 1}u + i / 4u][i % 4u]), vx[ii * ${V4}u + g], o); }
      }
      workgroupBarrier();
    }
    // q * exp(B_r - g_p), for the sub-chunks before p
    ${stage('qx', Dk, K4 + 1, `select(0.0, load_q(rowOf(seq.x, first + ${qRow('rr')}, h) * ${Dk}u + x) * exp(cumAt(${qRow('rr')}, x) - cumAt(p * ${SUB}u, x)), ${qRow('rr')} < rows)`)}
    for (var b = 0u; b <= p; b++) {
      if (b == p) {
        ${stage('qx', Dk, K4 + 1, `select(0.0, load_q(rowOf(seq.x, first + ${qRow('rr')}, h) * ${Dk}u + x), ${qRow('rr')} < rows)`)}
        ${stage('kx', Dk, K4 + 1, `select(0.0, load_k(rowOf(seq.x, first + b * ${SUB}u + rr, h) * ${Dk}u + x), b * ${SUB}u + rr < rows)`)}
      } else {
        ${stage('kx', Dk, K4 + 1, `select(0.0, load_k(rowOf(seq.x, first + b * ${SUB}u + rr, h) * ${Dk}u + x) * exp(cumAt(p * ${SUB}u, x) - cumAt(b * ${SUB}u + rr, x)), b * ${SUB}u + rr < rows)`)}
      }
      ${stage('vx', Dv, V4, `select(0.0, load_v(rowOf(seq.x, first + b * ${SUB}u + rr, h) * ${Dv}u + x), b * ${SUB}u + rr < rows)`)}
      workgroupBarrier();
      var a = 0.0;
      if (b < p) {
        for (var i = 0u; i < ${K4}u; i++) { a += dot(qx[r * ${K4 + 1}u + i], kx[g * ${K4 + 1}u + i]); }
      } else if (g <= r) {
        for (var i = 0u; i < ${K4}u; i++) {
          a += dot(qx[r * ${K4 + 1}u + i] * kx[g * ${K4 + 1}u + i], exp(cum[qr * ${K4}u + i] - cum[(b * ${SUB}u + g) * ${K4}u + i]));
        }
      }
      att[lid.x] = a;
      workgroupBarrier();
      if (g < ${V4}u) {
        for (var s = 0u; s < ${SUB}u; s++) { o = fma(vec4<f32>(att[r * ${SUB}u + s]), vx[s * ${V4}u + g], o); }
      }
      workgroupBarrier();
    }
    if (qr < rows) {
      let row = rowOf(seq.x, first + qr, h);
      for (var c = 0u; c < 4u; c++) {
        if (4u * g + c < ${Dv}u) { out[row * ${Dv}u + 4u * g + c] = o[c]; }
      }
    }
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
  const seqs = sequenceTable(a, backend);
  const prog = recurrentProgram(a, inputDType(inputs)!, !!init);
  await backend.run(prog, init ? [q!, k!, v!, logDecay!, init, seqs] : [q!, k!, v!, logDecay!, seqs], [output, final], { T: a.T, H: a.H }, [a.sequences.length, a.H, 1]);
  seqs.dispose();
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

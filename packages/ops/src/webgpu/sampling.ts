import { type DType, type Tensor, empty, registerKernel, tensor } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import { NON_FINITE, type SampleAttrs } from '../sampling.js';

/** Counts are summed as f32, exact up to 2^24. */
const MAX_VOCAB = 2 ** 24;

/** Order-preserving keys and the workgroup argmax: what the argmax pass and the sampling pass share. */
const ARGMAX_HELPERS = /* wgsl */ `
var<workgroup> red_key: array<u32, WG_X>;
var<workgroup> red_idx: array<u32, WG_X>;

/** Order-preserving u32 key of an f32 (larger float, larger key; -0 is 0), so thresholds are searched as integers. */
fn key_of(v: f32) -> u32 {
  let b = select(bitcast<u32>(v), 0u, v == 0.0);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

/** NaN or +Infinity, by the bits (compilers may assume floats are never NaN). */
fn non_finite(v: f32) -> bool {
  let b = bitcast<u32>(v);
  return (b & 0x7f800000u) == 0x7f800000u && b != 0xff800000u;
}

/** The index of the largest key over the workgroup, lowest index on ties. */
fn argmax_all(l: u32, k: u32, i: u32) -> u32 {
  red_key[l] = k;
  red_idx[l] = i;
  workgroupBarrier();
  for (var s = WG_X / 2u; s > 0u; s >>= 1u) {
    if (l < s) {
      let ok = red_key[l + s];
      let oi = red_idx[l + s];
      if (ok > red_key[l] || (ok == red_key[l] && oi < red_idx[l])) {
        red_key[l] = ok;
        red_idx[l] = oi;
      }
    }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&red_idx[0]);
}`;

const HELPERS = /* wgsl */ `
/** One pass of a threshold search: F(mid), the smallest key >= mid and the largest key < mid. */
struct Step { f: f32, above: u32, below: u32 }

var<workgroup> steps: array<Step, WG_X>;
var<workgroup> scan: array<f32, WG_X>;
var<workgroup> winner: atomic<u32>;

/** exp(z - zmax), z = x / temperature, for a token whose key is >= minKey, else 0. */
fn weight(x: f32, zmax: f32, minKey: u32) -> f32 { return select(0.0, exp(x / u.temperature - zmax), key_of(x) >= minKey); }

fn reduce_step(l: u32, v: Step) -> Step {
  steps[l] = v;
  workgroupBarrier();
  for (var s = WG_X / 2u; s > 0u; s >>= 1u) {
    if (l < s) {
      let a = steps[l];
      let b = steps[l + s];
      steps[l] = Step(a.f + b.f, min(a.above, b.above), max(a.below, b.below));
    }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&steps[0]);
}

/**
 * The largest key K with F(K) >= goal, where F(K) sums over the row's tokens with key >= K either 1 (a
 * count) or their weight. Bisection keeps F(lo) >= goal > F(hi); F changes only at keys, so each step
 * snaps lo up and hi down to the nearest keys, and the search ends once no key lies strictly between:
 * about log2(range / gap between neighbouring keys) passes, 32 at most.
 */
fn search(l: u32, base: u32, lo0: u32, hi0: u32, goal: f32, counts: bool, zmax: f32, minKey: u32) -> u32 {
  var lo = lo0;
  var hi = hi0;
  while (lo + 1u < hi) {
    let mid = lo + (hi - lo) / 2u;
    var v = Step(0.0, 0xffffffffu, 0u);
    for (var i = l; i < u.n; i += WG_X) {
      let x = load_x(base + i);
      let k = key_of(x);
      if (k >= mid) {
        if (counts) { v.f += 1.0; } else { v.f += weight(x, zmax, minKey); }
        v.above = min(v.above, k);
      } else {
        v.below = max(v.below, k);
      }
    }
    let s = reduce_step(l, v);
    if (s.f >= goal) { lo = s.above; } else { hi = s.below + 1u; }
  }
  return lo;
}`;

/** Logits per workgroup of the argmax pass: 4 per invocation, so a 128K vocabulary spreads over ~125 workgroups. */
const ARGMAX_CHUNK = 1024;
/** At most this many chunks per row (longer rows take longer chunks), so the sampling pass reads few per invocation. */
const MAX_CHUNKS = 1024;

/**
 * The argmax pass, one workgroup per `chunk` logits of a row: each writes the largest key of its chunk and
 * its lowest index to chunk_best[2 p], [2 p + 1] (p = row * chunks + chunk). A NaN or +Infinity logit gets the
 * largest key, so the argmax finds the first one. Spread over the GPU, where one workgroup per row walked
 * the whole row (on an H200, 0.21 ms for 128,256 logits, most of a greedy decode step's sampling).
 */
function argmaxChunksProgram(dtype: DType): Program {
  return cached(`ops:sample-argmax:${dtype}`, () =>
    program({
      name: 'sampleArgmax',
      inputs: { x: dtype },
      outputs: { chunk_best: 'u32' },
      uniforms: { rows: 'u32', n: 'u32', chunks: 'u32', chunk: 'u32' },
      workgroupSize: 256,
      helpers: ARGMAX_HELPERS,
      main: /* wgsl */ `
  let p = wid.x + wid.y * nwg.x;
  if (p >= u.rows * u.chunks) { return; } // workgroup-uniform
  let l = lid.x;
  let row = p / u.chunks;
  let start = (p % u.chunks) * u.chunk;
  let end = min(start + u.chunk, u.n);
  var bestKey = 0u;
  var bestIdx = 0u;
  for (var i = start + l; i < end; i += WG_X) {
    let x = load_x(row * u.n + i);
    let k = select(key_of(x), 0xffffffffu, non_finite(x));
    if (k > bestKey) { bestKey = k; bestIdx = i; }
  }
  let best = argmax_all(l, bestKey, bestIdx);
  if (l == 0u) {
    chunk_best[2u * p] = red_key[0]; // final: argmax_all ends with a barrier
    chunk_best[2u * p + 1u] = best;
  }`,
    }),
  );
}

/**
 * One workgroup per row, after the argmax pass: the argmax over the chunks, then the top-k and top-p
 * thresholds and the inverse-CDF pick (see `sample`).
 */
function sampleProgram(dtype: DType, workgroupSize: number): Program {
  return cached(`ops:sample:${dtype}:${workgroupSize}`, () =>
    program({
      name: 'sample',
      inputs: { x: dtype, rand: 'f32', chunk_best: 'u32' },
      outputs: { ids: 'u32' },
      uniforms: { rows: 'u32', n: 'u32', chunks: 'u32', topK: 'u32', greedy: 'u32', temperature: 'f32', topP: 'f32' },
      workgroupSize,
      helpers: `${ARGMAX_HELPERS}\n${HELPERS}`,
      main: /* wgsl */ `
  let row = wid.x + wid.y * nwg.x;
  if (row >= u.rows) { return; } // workgroup-uniform, so the barriers below stay in uniform control flow
  let l = lid.x;
  let base = row * u.n;
  if (l == 0u) { atomicStore(&winner, 0u); }

  // the argmax over the row's chunks (keys and indices from argmaxChunksProgram), lowest index on ties
  var bestKey = 0u;
  var bestIdx = 0u;
  for (var c = l; c < u.chunks; c += WG_X) {
    let k = chunk_best[2u * (row * u.chunks + c)];
    if (k > bestKey) { bestKey = k; bestIdx = chunk_best[2u * (row * u.chunks + c) + 1u]; }
  }
  let best = argmax_all(l, bestKey, bestIdx);
  if (non_finite(load_x(base + best))) {
    if (l == 0u) { ids[row] = ${NON_FINITE}u | best; }
    return;
  }
  if (u.greedy != 0u) {
    if (l == 0u) { ids[row] = best; }
    return;
  }
  let maxKey = key_of(load_x(base + best));
  let zmax = load_x(base + best) / u.temperature;

  // top-k: keep keys >= the largest K with count(key >= K) >= k
  var keyK = 0u;
  if (u.topK > 0u && u.topK < u.n) { keyK = search(l, base, 0u, maxKey + 1u, f32(u.topK), true, zmax, 0u); }

  // top-p: keep keys >= the largest K whose kept mass at or above K is >= p * total
  var keyP = keyK;
  if (u.topP < 1.0) {
    var m = 0.0;
    for (var i = l; i < u.n; i += WG_X) { m += weight(load_x(base + i), zmax, keyK); }
    let total = reduce_step(l, Step(m, 0u, 0u)).f;
    keyP = search(l, base, keyK, maxKey + 1u, u.topP * total, false, zmax, keyK);
  }

  // inverse CDF in index order: each invocation sums a contiguous chunk, a scan gives the chunk offsets,
  // and the last nonempty chunk starting at or below the drawn mass walks its tokens
  let chunk = (u.n + WG_X - 1u) / WG_X;
  let start = min(l * chunk, u.n);
  let end = min(start + chunk, u.n);
  var sum = 0.0;
  for (var i = start; i < end; i++) { sum += weight(load_x(base + i), zmax, keyP); }
  scan[l] = sum;
  workgroupBarrier();
  for (var off = 1u; off < WG_X; off <<= 1u) {
    var v = 0.0;
    if (l >= off) { v = scan[l - off]; }
    workgroupBarrier();
    scan[l] += v;
    workgroupBarrier();
  }
  var prefix = 0.0;
  if (l > 0u) { prefix = scan[l - 1u]; }
  let drawn = rand[row] * workgroupUniformLoad(&scan[WG_X - 1u]);
  if (sum > 0.0 && prefix <= drawn) { atomicMax(&winner, l + 1u); }
  workgroupBarrier();
  let w = atomicLoad(&winner);
  if (w == 0u) { // nothing has weight: a row without a finite logit
    if (l == 0u) { ids[row] = best; }
    return;
  }
  if (l + 1u != w) { return; }
  let rel = drawn - prefix;
  var acc = 0.0;
  var pick = start;
  for (var i = start; i < end; i++) {
    let wi = weight(load_x(base + i), zmax, keyP);
    if (wi > 0.0) {
      acc += wi;
      pick = i;
      if (acc > rel) { break; }
    }
  }
  ids[row] = pick;`,
    }),
  );
}

/** Workgroup memory of the per-row pass per invocation: steps (12 bytes), red_key, red_idx and scan (4 each). */
const ROW_BYTES_PER_INVOCATION = 24;

/**
 * Invocations of the per-row pass. Short rows get a small workgroup (every reduction costs each invocation a
 * barrier, used or not). Sampling with temperature walks the row once per bisection step (up to 32 per
 * threshold), each walk as long as the row over the workgroup: long rows take up to 1024 invocations where
 * the device has them and their workgroup memory, 4 times fewer steps per walk than 256.
 */
function rowWorkgroup(vocab: number, greedy: boolean, backend: WebGPUBackend): number {
  if (vocab < 256) return 32;
  if (greedy || vocab < 8192) return 256;
  const { maxComputeInvocationsPerWorkgroup: threads, maxComputeWorkgroupSizeX: sizeX, maxComputeWorkgroupStorageSize: bytes } = backend.limits;
  return [1024, 512].find((n) => n <= threads! && n <= sizeX! && ROW_BYTES_PER_INVOCATION * n + 4 <= bytes!) ?? 256;
}

registerKernel({
  op: 'sample',
  backend: 'webgpu',
  fn: async ([logits]: Tensor[], { rows, vocab, temperature, topK, topP, uniforms }: SampleAttrs, backend: WebGPUBackend) => {
    const greedy = temperature === 0;
    // greedy rows read no random number, but the binding needs a buffer
    const rand = tensor(greedy ? new Float32Array(rows) : Float32Array.from(uniforms), [rows], { backend });
    const ids = empty([rows], { dtype: 'u32', backend });
    const chunks = Math.min(Math.ceil(vocab / ARGMAX_CHUNK), MAX_CHUNKS);
    const chunk = Math.ceil(vocab / chunks);
    const chunkBest = empty([rows * chunks * 2], { dtype: 'u32', backend });
    await backend.run(argmaxChunksProgram(logits!.dtype), [logits!], [chunkBest], { rows, n: vocab, chunks, chunk }, grid1d(rows * chunks, 1));
    const u = { rows, n: vocab, chunks, topK, greedy: greedy ? 1 : 0, temperature: greedy ? 1 : temperature, topP };
    const workgroupSize = rowWorkgroup(vocab, greedy, backend);
    await backend.run(sampleProgram(logits!.dtype, workgroupSize), [logits!, rand, chunkBest], [ids], u, grid1d(rows, 1));
    chunkBest.dispose();
    rand.dispose();
    return ids;
  },
  verify: (_inputs: Tensor[], { vocab }: SampleAttrs) => vocab <= MAX_VOCAB || `rows of ${vocab} > 2^24 logits`,
});

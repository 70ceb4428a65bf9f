import { type Tensor, empty, registerKernel, tensor } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, program } from '@phalanx/webgpu';
import { type VarlenAttentionAttrs, keyBounds } from '../attention.js';
import { SCORE_UNIFORMS, kernelFits, row4Views, scoreBindings, scoreHelpers, scoreKey, scoreUniforms } from './common.js';

/** Queries per workgroup (both kernels). */
export const BLOCK_Q = 64;

/** The largest head dim of the tiled kernel: its Q block and key/value tiles fill 32 KiB of workgroup memory at D = 64. */
export const TILED_MAX_DIM = 64;
/** Keys per tile of the tiled kernel. */
const BK = 32;

/** Thread tile of the tiled kernel: each thread owns `rows` queries of the block, and 8 threads share them. */
export interface PrefillTile {
  rows: 4 | 8;
  /**
   * Keys, values and probabilities in workgroup arrays of their own (`tiledBytes(D, rows, true)`, 42.5 KiB at D =
   * 64) instead of one array shared by the key and value tiles (32 KiB): 2 barriers per key tile instead of 4 (the
   * subgroup variant) or 3 instead of 5. Unset: split wherever the device's workgroup memory allows it.
   */
  split?: boolean;
}

/** 4 rows (128 threads) keeps registers low; 8 rows (64 threads) halves the workgroup-memory reads per FMA. */
export const DEFAULT_PREFILL_TILE: PrefillTile = { rows: 4 };

const tileThreads = (tile: PrefillTile) => (8 * BLOCK_Q) / tile.rows;

/** Workgroup memory of the tiled kernel for head dim D (Qs, KV and Ps below; Qs, Ks, Vs, Ps and Xs when split), in bytes. */
export function tiledBytes(D: number, rows: PrefillTile['rows'] = DEFAULT_PREFILL_TILE.rows, split = false): number {
  const D4 = Math.ceil(D / 4);
  const DV4 = 8 * Math.ceil(D4 / 8);
  const shared = BLOCK_Q * D4 + BK * DV4 + (BK * BLOCK_Q) / 4;
  return 16 * (split ? shared + BK * D4 + exchangeSlots(tileThreads({ rows })) : shared);
}

/** vec4 slots of the split layout's exchange array Xs: 8 row-maxima (and final sum) slots per row group, then the value flags. */
const exchangeSlots = (threads: number) => 8 * (BLOCK_Q / 4) + threads / 4;

/**
 * FlashAttention-2 over packed documents, register-blocked like the matmul kernel. A workgroup takes
 * BLOCK_Q = 64 queries of one head with 8 x 64 / rows threads; thread (ty, tx) owns queries rows * ty ..
 * rows * ty + rows - 1, and per tile of 32 keys their logits of keys tx + 8 c (c < 4) and their output dims
 * 4 (tx + 8 n) .. + 3 (n < CG). Workgroup memory (32 KiB at D = 64):
 *   Qs [64][D4]   the query block, pre-multiplied by scale and gain, staged once;
 *   KV            the key tile [32][D4], then the value tile [32][DV4] (vec4s; key columns XOR-swizzled by
 *                 key % 8 so that the 8 keys read at once sit in distinct banks);
 *   Ps [32][64]   each thread's row maxima over its own keys (first 8 "keys": slot tx) and, in a masked
 *                 tile, each thread's non-finite value flag (after them), then the tile's probabilities,
 *                 k-major: one vec4 read gives 4 rows.
 * Per tile: S = Q K^T (4 x rows logits a thread, one vec4 fma per dim and row into the row's 4 keys: a dot per 4
 * dims added to the logit would cost a fifth more instructions); only tiles that cross some
 * query's bounds are masked. A query's output depends only on the keys it sees (as in the CPU reference): a
 * NaN key or value it sees makes it NaN, one it does not see has no effect. Whole tiles need nothing for that
 * (every key is seen, so a NaN logit gives a NaN weight); masked tiles zero the masked weights by position
 * (not by logit, which would drop a NaN key), and, where a value they stage is NaN or infinite (a check by the
 * bits as it is staged), add P V with the masked keys' values selected out, since 0 * NaN is NaN.
 * Each thread's maxima over its 4 keys go to Ps, so each thread reads its rows'
 * maxima from 8 slots; the online softmax rescales the accumulator and writes P = exp(S - m) to Ps (as exp2:
 * log2(e) is folded into Qs, so logits are in log2 units); then O += P V. Each thread keeps partial row sums
 * over its own keys, summed across the row's 8 threads once at the end. Global loads are coalesced (a
 * thread reads 4 dims of a row, consecutive threads the next dims); the next key tile and this tile's values
 * are loaded into registers while the current tile is computed. Only tiles between the block's first and
 * last key are visited. The optional state key is every row's first softmax entry (its weight counted once,
 * by tx = 0).
 * With `tile.split` (chosen wherever the device has the workgroup memory), no array serves two purposes within a
 * tile: keys in Ks, values in Vs, P in Ps, and the maxima slots, flags and final sums in Xs. The value tile is
 * then staged as P is written, after the logits, and a tile needs a barrier after staging its keys and one after
 * writing P: each array's next writer is behind a barrier that every reader of it has passed.
 */
export function prefillProgram(a: VarlenAttentionAttrs, inputs: Tensor[], tile: PrefillTile = DEFAULT_PREFILL_TILE): Program {
  return tiledProgram(a, inputs, tile, false);
}

/**
 * The tiled kernel with each row's tile maximum reduced across its 8 threads by subgroup shuffles
 * (`subgroupShuffleXor` by 1, 2, 4) instead of through Ps: no maxima writes or reads of workgroup memory, and
 * 4 barriers per key tile instead of 5 (the one that kept the maxima slots from being overwritten by P goes;
 * masked tiles keep a fifth, after reading the non-finite value flags that P overwrites).
 * The max is exact, so the result is bit-identical to `prefillProgram`'s. Sound only where the 8 threads of a
 * row (consecutive local invocation ids 8 ty .. 8 ty + 7) sit in one subgroup, with lanes in the same order:
 * subgroups of at least 8 consecutive invocations, as on NVIDIA (32), AMD (32/64), Intel (8-32) and lavapipe
 * (8); `subgroupPrefillUsable` checks the size, and the registry falls back to `prefillProgram` otherwise.
 */
export function subgroupPrefillProgram(a: VarlenAttentionAttrs, inputs: Tensor[], tile: PrefillTile = DEFAULT_PREFILL_TILE): Program {
  return tiledProgram(a, inputs, tile, true);
}

/** The smallest subgroup size the backend's adapter reports (undefined where it reports none). */
function subgroupMinSize(backend: WebGPUBackend): number | undefined {
  const device = backend.device as { adapterInfo?: { subgroupMinSize?: number } } | undefined;
  return device?.adapterInfo?.subgroupMinSize;
}

/** Whether the subgroup variant may run: the 'subgroups' feature, and a known minimum subgroup size of at least 8. */
export function subgroupPrefillUsable(backend: WebGPUBackend): true | string {
  if (!backend.features.has('subgroups')) return "no 'subgroups' feature";
  const min = subgroupMinSize(backend);
  if (min === undefined) return 'subgroup size unknown';
  return min >= 8 || `subgroups of ${min} < 8 invocations`;
}

function tiledProgram(a: VarlenAttentionAttrs, inputs: Tensor[], tile: PrefillTile, subgroupMax: boolean): Program {
  const extra = inputs.slice(3);
  const [q, k, v] = inputs as [Tensor, Tensor, Tensor];
  return cached(`varlen:prefill:tiled:${q.dtype}:${k.dtype}:${v.dtype}:${scoreKey(a, extra)}:${tile.rows}${tile.split ? ':split' : ''}${subgroupMax ? ':sg' : ''}`, () => {
    const RT = tile.rows;
    const threads = tileThreads(tile);
    const D4 = Math.ceil(a.D / 4);
    const CG = Math.ceil(D4 / 8); // output column groups a thread owns
    const DV4 = 8 * CG; // value row in vec4s, padded so every thread's column groups exist
    const SW = D4 % 8 === 0 ? 7 : 0; // the key swizzle needs whole groups of 8 columns
    const range = (n: number) => Array.from({ length: n }, (_, i) => i);
    const [TR, R, G, RG] = [range(RT), range(4), range(CG), range(RT / 4)]; // a thread's rows; 4 keys or rows; column groups; row groups
    const XYZW = ['x', 'y', 'z', 'w'];
    const each = <X>(xs: X[], f: (x: X) => string, sep = '\n  ') => xs.map(f).join(sep);
    const accs = (f: (t: number, n: number) => string, sep = '\n  ') => TR.flatMap((t) => G.map((n) => f(t, n))).join(sep);
    // row t of a thread is component t % 4 of its row group t / 4 (m, l and the vec4s of Ps hold 4 rows)
    const of = (x: string, t: number) => `${x}${t >> 2}[${t % 4}]`;
    // staged loads, row-major: load e of a thread is element l = e * threads + lid.x of the tile
    const count = (total: number) => range(Math.ceil(total / threads));
    const loads = (total: number, f: (e: number) => string) =>
      each(
        count(total),
        (e) => {
          const code = `{ let l = ${e * threads}u + lid.x; ${f(e)} }`;
          return total % threads === 0 ? code : `if (${e * threads}u + lid.x < ${total}u) ${code}`;
        },
        '\n    ',
      );
    const regs = (name: string, total: number) => each(count(total), (e) => `var ${name}${e}: vec4<f32>;`, ' ');
    const fetchK = (start: string) => loads(BK * D4, (e) => `kr${e} = kvRow4(${start} + l / D4, kHi, l % D4, true);`);
    // the split layout's arrays, or the shared one: keys and values in KV, maxima slots and flags in Ps (EX)
    const split = tile.split === true;
    const [KS, VS, EX] = split ? ['Ks', 'Vs', 'Xs'] : ['KV', 'KV', 'Ps'];
    const stashK = loads(BK * D4, (e) => `${KS}[(l / D4) * D4 + ((l % D4) ^ ((l / D4) & SW))] = kr${e};`);
    // padding columns (DV4 > D4) are zeros; without padding the guard is dropped rather than left to the compiler
    const fetchV = loads(BK * DV4, (e) =>
      DV4 === D4 ? `vr${e} = kvRow4(j0 + l / DV4, kHi, l % DV4, false);` : `vr${e} = vec4<f32>(0.0); if (l % DV4 < D4) { vr${e} = kvRow4(j0 + l / DV4, kHi, l % DV4, false); }`,
    );
    const stashV = loads(BK * DV4, (e) => `${VS}[l] = vr${e};`);
    // Non-finite values of a masked tile. P V multiplies a masked key's value by p = 0, and 0 * NaN (or 0 * Inf) is
    // NaN, so a tile whose masked keys may hold such a value takes a guarded P V. Thread (ty, tx) stages value
    // columns = tx (mod 8), exactly those the threads with its tx read (threads and DV4 are multiples of 8): each
    // writes a flag, 1 when one of its staged vec4s is NaN or infinite by the bits (compilers may assume floats
    // are never NaN), into its slot of Ps after key 7 (free from the last tile's P V to this tile's P, and not
    // among the row maxima slots), and after the next barrier each thread sums the NS flags of its tx. Whole tiles
    // do none of this.
    const NS = threads / 8;
    const raiseFlag = `var bits = vec4<u32>(0u);
      ${each(count(BK * DV4), (e) => `bits = max(bits, bitcast<vec4<u32>>(vr${e}) & vec4<u32>(0x7fffffffu));`, '\n      ')}
      ${EX}[FLAGS + tx * ${NS / 4}u + ty / 4u][ty % 4u] = select(0.0, 1.0, any(bits >= vec4<u32>(0x7f800000u)));`;
    const readFlags = `guardV = any((${each(range(NS / 4), (k) => `${EX}[FLAGS + tx * ${NS / 4}u + ${k}u]`, ' + ')}) > vec4<f32>(0.0));`;
    // the key range each of a thread's rows sees, as a mask over its 4 keys tx + 8 c of the tile
    const keysSeen = (t: number) => `(j >= vec4<u32>(lo${t})) & (j <= vec4<u32>(hi${t}))`;
    // Ps holds one vec4 per (key, row group): row group g of thread ty is vec4 RT / 4 * ty + g of a key
    const ps = (key: string, g: number, array = 'Ps') => `${array}[${key} * (BQ / 4u) + ${RT / 4}u * ty + ${g}u]`;
    // x0..x{RT-1} (one vec4 per row, over keys tx + 8 c) into Ps
    const toPs = (x: string) => each(RG, (g) => each(R, (c) => `${ps(`(tx + ${8 * c}u)`, g)} = vec4<f32>(${each(R, (r) => `${x}${4 * g + r}[${c}]`, ', ')});`, '\n    '), '\n    ');
    // O += P V over the tile's keys; `guarded` (a masked tile with a non-finite value in the thread's columns) adds
    // only the values of keys in each row's [lo, hi], so that a masked key's 0 * NaN stays out of rows that do not
    // see it
    const inRows = (key: string, g: number) => `(vec4<u32>(${key}) >= vec4<u32>(${each(R, (r) => `lo${4 * g + r}`, ', ')})) & (vec4<u32>(${key}) <= vec4<u32>(${each(R, (r) => `hi${4 * g + r}`, ', ')}))`;
    const pv = (guarded: boolean) => `for (var j = 0u; j < BK; j++) {
        ${each(RG, (g) => `let p${g} = ${ps('j', g)};`, '\n        ')}
        ${each(G, (n) => `let v${n} = ${VS}[j * DV4 + tx + ${8 * n}u];`, '\n        ')}
        ${guarded ? `${each(RG, (g) => `let seen${g} = ${inRows('j0 + j', g)};`, '\n        ')}\n        ` : ''}${accs(
          (t, n) => `acc${t}_${n} = fma(vec4<f32>(${of('p', t)}), ${guarded ? `select(vec4<f32>(0.0), v${n}, ${of('seen', t)})` : `v${n}`}, acc${t}_${n});`,
          '\n        ',
        )}
      }`;
    const direct = a.D % 4 === 0 ? row4Views({ q: q.dtype, k: k.dtype, v: v.dtype }) : undefined;
    // each row's maximum over the tile, mNew = max(m, that): from the 8 threads' own maxima over their 4 keys each
    // (exact, so the same m as reducing all 32 logits), exchanged through Ps (Xs when split) or, with subgroupMax,
    // by shuffles
    const ownMax = (g: number) => `vec4<f32>(${each(R, (r) => `max(max(s${4 * g + r}[0], s${4 * g + r}[1]), max(s${4 * g + r}[2], s${4 * g + r}[3]))`, ', ')})`;
    const tileMax = subgroupMax
      ? `// the row's 8 threads are lanes 8 ty .. 8 ty + 7 of one subgroup: a butterfly over lane bits 0..2
    ${each(RG, (g) => `var mNew${g} = ${ownMax(g)};`, ' ')}
    ${each([1, 2, 4], (x) => each(RG, (g) => `mNew${g} = max(mNew${g}, subgroupShuffleXor(mNew${g}, ${x}u));`, ' '), '\n    ')}
    ${each(RG, (g) => `mNew${g} = max(mNew${g}, m${g});`, ' ')}`
      : `${each(RG, (g) => `${ps('tx', g, EX)} = ${ownMax(g)};`, '\n    ')}
    workgroupBarrier();
    ${
      split
        ? ''
        : `// the key tile is consumed: the value tile takes its place
    ${stashV}
    if (masked) { ${readFlags} }`
    }
    ${each(RG, (g) => `var mNew${g} = m${g};`, ' ')}
    for (var t = 0u; t < 8u; t++) {
      ${each(RG, (g) => `mNew${g} = max(mNew${g}, ${ps('t', g, EX)});`, '\n      ')}
    }`;
    return program({
      name: 'varlenAttention',
      enables: subgroupMax ? ['subgroups'] : undefined,
      inputs: { q: q.dtype, k: k.dtype, v: v.dtype, ...scoreBindings(a, extra), bounds: 'u32' },
      outputs: { out: 'f32' },
      views: direct?.views,
      uniforms: { T: 'u32', ...SCORE_UNIFORMS },
      workgroupSize: threads,
      helpers: `${scoreHelpers(a, direct ? [] : ['q', 'k', 'v'])}
${direct?.helpers ?? ''}
const BQ: u32 = ${BLOCK_Q}u;
const BK: u32 = ${BK}u;
const DV4: u32 = ${DV4}u;
const SW: u32 = ${SW}u;
/** Where the non-finite value flags of a masked tile sit in ${EX}: from key 8 on. */
const FLAGS: u32 = 8u * (BQ / 4u);
/** log2(e): the kernel keeps logits in log2 units so that the softmax exponentials are bare exp2 calls. */
const LOG2E: f32 = 1.4426950408889634;
var<workgroup> Qs: array<vec4<f32>, ${BLOCK_Q * D4}>;
${
  split
    ? `var<workgroup> Ks: array<vec4<f32>, ${BK * D4}>;
var<workgroup> Vs: array<vec4<f32>, ${BK * DV4}>;
var<workgroup> Xs: array<vec4<f32>, ${exchangeSlots(threads)}>;`
    : `var<workgroup> KV: array<vec4<f32>, ${BK * DV4}>;`
}
var<workgroup> Ps: array<vec4<f32>, ${(BK * BLOCK_Q) / 4}>;
var<private> kvHead: u32;
/** Dims 4 d4 .. 4 d4 + 3 of key (or value) row j of the block's kv head; zeros from row \`end\` on. */
fn kvRow4(j: u32, end: u32, d4: u32, isK: bool) -> vec4<f32> {
  if (j >= end) { return vec4<f32>(0.0); }
  let base = (j * u.Hkv + kvHead) * D;
  if (isK) { return row4_k(base, d4); }
  return row4_v(base, d4);
}
/** \`capped\` for logits in log2 units: log2(e) c tanh(x / c) of natural x is c2 tanh(x2 / c2) with c2 = c log2(e). */
fn capped2(x: f32) -> f32 {
  if (u.softcap > 0.0) { let c = u.softcap * LOG2E; return c * tanh(x / c); }
  return x;
}
/** Output dims 4 d4 .. 4 d4 + 3 of the row at base (those below D). */
fn store4(base: u32, d4: u32, x: vec4<f32>) {
  for (var c = 0u; c < 4u; c++) { if (d4 * 4u + c < D) { out[base + d4 * 4u + c] = x[c]; } }
}`,
      main: `  let tx = lid.x % 8u;
  let ty = lid.x / 8u;
  let h = wid.y;
  kvHead = h / (u.Hq / u.Hkv);
  // last blocks first: under a causal mask they see the most keys, so the short ones fill the tail
  let first = (nwg.x - 1u - wid.x) * BQ;
  let last = min(first + BQ, u.T) - 1u;
  // bounds are non-decreasing: the block needs keys bounds[first].lo ..= bounds[last].hi, and a tile inside
  // [bounds[last].lo, bounds[first].hi] is seen whole by every query of the block
  let kLo = bounds[2u * first];
  let kHi = bounds[2u * last + 1u] + 1u;
  let wholeLo = bounds[2u * last];
  let wholeHi = bounds[2u * first + 1u] + 1u;
  // log2(e) folded into the query: every logit below (state key included) is in log2 units, and
  // exp(s - m) = exp2(s2 - m2) saves the multiply inside each exponential
  let mult = qmult(h) * LOG2E;
  for (var l = lid.x; l < BQ * D4; l += ${threads}u) {
    let i = first + l / D4;
    var x = vec4<f32>(0.0);
    if (i < u.T) { x = row4_q((i * u.Hq + h) * D, l % D4) * mult; }
    Qs[l] = x;
  }
  ${each(TR, (t) => `let i${t} = first + ${RT}u * ty + ${t}u;`)}
  // rows past the end follow the last and write nothing
  ${each(TR, (t) => `let lo${t} = bounds[2u * min(i${t}, last)];\n  let hi${t} = bounds[2u * min(i${t}, last) + 1u];`)}
  ${each(RG, (g) => `var m${g} = vec4<f32>(MASKED);\n  var l${g} = vec4<f32>(0.0);`)}
  ${accs((t, n) => `var acc${t}_${n} = vec4<f32>(0.0);`, ' ')}
  ${
    a.hasState
      ? `workgroupBarrier();
  {
    ${each(RG, (g) => `var s${g} = vec4<f32>(0.0);`, ' ')}
    for (var d4 = 0u; d4 < D4; d4++) {
      ${each(TR, (t) => `${of('s', t)} += dot(Qs[(${RT}u * ty + ${t}u) * D4 + d4], row4_ks((min(i${t}, last) * u.Hkv + kvHead) * D, d4));`, '\n      ')}
    }
    ${each(RG, (g) => `m${g} = vec4<f32>(${each(R, (r) => `capped2(s${g}[${r}])`, ', ')});\n    l${g} = vec4<f32>(select(0.0, 1.0, tx == 0u));`, '\n    ')}
    ${accs((t, n) => `if (tx + ${8 * n}u < D4) { acc${t}_${n} = row4_vs((min(i${t}, last) * u.Hkv + kvHead) * D, tx + ${8 * n}u); }`, '\n    ')}
  }`
      : ''
  }
  ${regs('kr', BK * D4)} ${regs('vr', BK * DV4)}
  var j0 = kLo;
  ${fetchK('j0')}
  for (; j0 < kHi; j0 += BK) {
    // a tile that some query of the block does not see whole: masked logits and weights, and guarded values
    let masked = j0 < wholeLo || j0 + BK > wholeHi;
    var guardV = false;
    ${stashK}
    ${fetchV}
    workgroupBarrier();
    ${each(TR, (t) => `var s${t} = vec4<f32>(0.0);`, ' ')}
    for (var d4 = 0u; d4 < D4; d4++) {
      ${each(R, (c) => `let k${c} = ${KS}[(tx + ${8 * c}u) * D4 + (d4 ^ (tx & SW))];`, '\n      ')}
      ${each(XYZW, (x) => `let k${x} = vec4<f32>(k0.${x}, k1.${x}, k2.${x}, k3.${x});`, ' ')}
      ${each(TR, (t) => `let q${t} = Qs[(${RT}u * ty + ${t}u) * D4 + d4];\n      ${each(XYZW, (x) => `s${t} = fma(vec4<f32>(q${t}.${x}), k${x}, s${t});`, ' ')}`, '\n      ')}
    }
    if (u.softcap > 0.0) {
      let cap = u.softcap * LOG2E; // the softcap in log2 units (see capped2)
      ${each(TR, (t) => `s${t} = cap * tanh(s${t} / cap);`, '\n      ')}
    }
    if (masked) {
      let j = vec4<u32>(j0 + tx) + vec4<u32>(0u, 8u, 16u, 24u);
      ${each(TR, (t) => `s${t} = select(vec4<f32>(MASKED), s${t}, ${keysSeen(t)});`, '\n      ')}
      ${raiseFlag}
    }
    ${tileMax}
    ${each(RG, (g) => `let alpha${g} = exp2(m${g} - mNew${g});\n    m${g} = mNew${g};`, '\n    ')}
    // every key of a whole tile is seen, so a NaN logit (a NaN key) gives a NaN weight and reaches the row
    ${each(TR, (t) => `var p${t} = exp2(s${t} - ${of('mNew', t)});`, '\n    ')}
    if (masked) {
      // a masked key weighs 0 (by its position, not its logit: exp2(MASKED - MASKED) is 1 in a row that has seen
      // no key yet, and a NaN logit must stay NaN)
      let j = vec4<u32>(j0 + tx) + vec4<u32>(0u, 8u, 16u, 24u);
      ${each(TR, (t) => `p${t} = select(vec4<f32>(0.0), p${t}, ${keysSeen(t)});`, '\n      ')}
    }
    ${each(RG, (g) => `l${g} = l${g} * alpha${g} + vec4<f32>(${each(R, (r) => `dot(p${4 * g + r}, vec4<f32>(1.0))`, ', ')});`, '\n    ')}
    ${accs((t, n) => `acc${t}_${n} *= ${of('alpha', t)};`, ' ')}
    ${
      split
        ? `// every thread is past the last tile's P V (this tile's first barrier): the values and P take their places
    ${stashV}`
        : subgroupMax
        ? `// every thread has read the key tile: the value tile takes its place (Ps is free since the last tile's end)
    workgroupBarrier();
    if (masked) {
      ${readFlags}
      workgroupBarrier(); // every thread has read the flags before P overwrites them
    }
    ${stashV}`
        : `// every thread has read the maxima slots before P (keys 0 .. 7 included) overwrites them
    workgroupBarrier();`
    }
    ${toPs('p')}
    workgroupBarrier();
    ${split ? `if (masked) { ${readFlags} }` : ''}
    if (j0 + BK < kHi) {
      ${fetchK('(j0 + BK)')}
    }
    if (guardV) {
      ${pv(true)}
    } else {
      ${pv(false)}
    }
    ${split ? '' : 'workgroupBarrier(); // the next tile overwrites the values and P'}
  }
  // each row's sum over its 8 threads' keys (split: in the maxima slots, whose readers are past the last barrier)
  ${each(RG, (g) => `${ps('tx', g, EX)} = l${g};`)}
  workgroupBarrier();
  ${each(RG, (g) => `var sum${g} = vec4<f32>(0.0);`, ' ')}
  for (var t = 0u; t < 8u; t++) {
    ${each(RG, (g) => `sum${g} += ${ps('t', g, EX)};`, '\n    ')}
  }
  ${accs((t, n) => `if (i${t} < u.T) { store4((i${t} * u.Hq + h) * D, tx + ${8 * n}u, acc${t}_${n} / ${of('sum', t)}); }`)}`,
    });
  });
}

/** Keys per staged tile of the row kernel: K and V tiles together take at most 16 KiB of workgroup memory. */
export function blockK(D: number): number {
  const padded = Math.ceil(D / 4) * 4;
  return Math.min(64, Math.max(8, 2 ** Math.floor(Math.log2(2048 / padded))));
}

/**
 * Flash attention for what the tiled kernel declines (D > TILED_MAX_DIM, or a device with less workgroup
 * memory than it needs). A workgroup takes BLOCK_Q consecutive queries of one head, one per thread; each
 * thread keeps its query (pre-multiplied by scale and gain) and its output accumulator in registers. Key/value
 * tiles of BK rows are staged in workgroup memory, and only the tiles between the block's first key (lo of
 * its first query) and last key (hi of its last query) are visited, so windowed layers and short documents
 * cost what they see. Per tile, each thread scores the keys in its own [lo, hi], then updates its online
 * softmax once (running max m, sum l, accumulator rescaled by exp(m_old - m_new)); keys outside [lo, hi] are
 * skipped by position, so a NaN in a key or value reaches exactly the queries that see it. The optional state
 * key is the softmax's first entry.
 */
export function rowPrefillProgram(a: VarlenAttentionAttrs, inputs: Tensor[]): Program {
  const extra = inputs.slice(3);
  const [q, k, v] = inputs as [Tensor, Tensor, Tensor];
  const BK = blockK(a.D);
  return cached(`varlen:prefill:${q.dtype}:${k.dtype}:${v.dtype}:${scoreKey(a, extra)}`, () =>
    program({
      name: 'varlenAttention',
      inputs: { q: q.dtype, k: k.dtype, v: v.dtype, ...scoreBindings(a, extra), bounds: 'u32' },
      outputs: { out: 'f32' },
      uniforms: { T: 'u32', ...SCORE_UNIFORMS },
      workgroupSize: BLOCK_Q,
      helpers: `${scoreHelpers(a, ['q', 'k', 'v'])}
const BQ: u32 = ${BLOCK_Q}u;
const BK: u32 = ${BK}u;
var<workgroup> Ks: array<vec4<f32>, ${BK * Math.ceil(a.D / 4)}>;
var<workgroup> Vs: array<vec4<f32>, ${BK * Math.ceil(a.D / 4)}>;
var<workgroup> blockKeys: vec2<u32>;`,
      main: `  let h = wid.y;
  let g = h / (u.Hq / u.Hkv);
  let first = wid.x * BQ;
  let i = first + lid.x;
  let qi = min(i, u.T - 1u); // threads past the end keep step with the barriers and write nothing
  if (lid.x == 0u) { blockKeys = vec2<u32>(bounds[2u * first], bounds[2u * (min(first + BQ, u.T) - 1u) + 1u] + 1u); }
  let keys = workgroupUniformLoad(&blockKeys);
  let lo = bounds[2u * qi];
  let hi = bounds[2u * qi + 1u];
  let mult = qmult(h);
  var qr: array<vec4<f32>, D4>;
  var acc: array<vec4<f32>, D4>;
  for (var d4 = 0u; d4 < D4; d4++) {
    qr[d4] = row4_q((qi * u.Hq + h) * D, d4) * mult;
    acc[d4] = vec4<f32>(0.0);
  }
  var m = MASKED;
  var l = 0.0;
  ${
    a.hasState
      ? `{
    let base = (qi * u.Hkv + g) * D;
    var s = 0.0;
    for (var d4 = 0u; d4 < D4; d4++) { s += dot(qr[d4], row4_ks(base, d4)); }
    m = capped(s);
    l = 1.0;
    for (var d4 = 0u; d4 < D4; d4++) { acc[d4] = row4_vs(base, d4); }
  }`
      : ''
  }
  for (var j0 = keys.x; j0 < keys.y; j0 += BK) {
    for (var e = lid.x; e < BK * D4; e += BQ) {
      let j = j0 + e / D4;
      var kk = vec4<f32>(0.0);
      var vv = vec4<f32>(0.0);
      if (j < keys.y) {
        let base = (j * u.Hkv + g) * D;
        kk = row4_k(base, e % D4);
        vv = row4_v(base, e % D4);
      }
      Ks[e] = kk;
      Vs[e] = vv;
    }
    workgroupBarrier();
    if (j0 <= hi && j0 + BK > lo) {
      var s: array<f32, BK>;
      var mNew = m;
      for (var jj = 0u; jj < BK; jj++) {
        let j = j0 + jj;
        var x = MASKED;
        if (j >= lo && j <= hi) {
          var dt = 0.0;
          for (var d4 = 0u; d4 < D4; d4++) { dt += dot(qr[d4], Ks[jj * D4 + d4]); }
          x = capped(dt);
        }
        s[jj] = x;
        mNew = max(mNew, x);
      }
      let alpha = exp(m - mNew);
      l *= alpha;
      for (var d4 = 0u; d4 < D4; d4++) { acc[d4] *= alpha; }
      for (var jj = 0u; jj < BK; jj++) {
        // by position, not by logit: a NaN logit (a NaN key) stays NaN; a masked value is never multiplied (0 * NaN)
        let j = j0 + jj;
        if (j >= lo && j <= hi) {
          let p = exp(s[jj] - mNew);
          l += p;
          for (var d4 = 0u; d4 < D4; d4++) { acc[d4] += p * Vs[jj * D4 + d4]; }
        }
      }
      m = mNew;
    }
    workgroupBarrier();
  }
  if (i < u.T) {
    let base = (i * u.Hq + h) * D;
    for (var d = 0u; d < D; d++) { out[base + d] = acc[d / 4u][d % 4u] / l; }
  }`,
    }),
  );
}

/** Workgroups: query blocks x heads. */
const grid = (a: VarlenAttentionAttrs): [number, number] => [Math.ceil(a.T / BLOCK_Q), a.Hq];

/** The kernel function that runs a program of `build` over the query blocks and heads. */
function prefillKernel(build: (a: VarlenAttentionAttrs, inputs: Tensor[], tile: PrefillTile) => Program) {
  return async (inputs: Tensor[], a: VarlenAttentionAttrs, backend: WebGPUBackend): Promise<Tensor> => {
    const out = empty([a.T, a.Hq, a.D], { backend });
    if (out.size === 0) return out;
    const { rows, split } = DEFAULT_PREFILL_TILE;
    const tile = { rows, split: split ?? tiledBytes(a.D, rows, true) <= backend.limits.maxComputeWorkgroupStorageSize! };
    const bounds = tensor(keyBounds(a), [2 * a.T], { dtype: 'u32', backend });
    await backend.run(build(a, inputs, tile), [...inputs, bounds], [out], { T: a.T, ...scoreUniforms(a) }, [...grid(a), 1]);
    bounds.dispose();
    return out;
  };
}

/** Whether the tiled kernel (either variant) takes these attrs on this backend. */
function tiledFits(a: VarlenAttentionAttrs, backend: WebGPUBackend): true | string {
  if (a.D > TILED_MAX_DIM) return `head dim ${a.D} > ${TILED_MAX_DIM}`;
  const limit = backend.limits.maxComputeWorkgroupStorageSize!;
  const bytes = tiledBytes(a.D, DEFAULT_PREFILL_TILE.rows);
  return bytes <= limit ? kernelFits(a, grid(a), backend) : `needs ${bytes} bytes of workgroup memory; the device has ${limit}`;
}

// Registered on import (listed under sideEffects): the subgroup variant of the tiled kernel is tried first, then
// the tiled kernel, then the row kernel.
registerKernel({
  op: 'varlenAttention',
  backend: 'webgpu',
  fn: prefillKernel(subgroupPrefillProgram),
  priority: 2,
  verify: (_inputs, a: VarlenAttentionAttrs, backend: WebGPUBackend) => {
    const usable = subgroupPrefillUsable(backend);
    return usable === true ? tiledFits(a, backend) : usable;
  },
});
registerKernel({
  op: 'varlenAttention',
  backend: 'webgpu',
  fn: prefillKernel(prefillProgram),
  priority: 1,
  verify: (_inputs, a: VarlenAttentionAttrs, backend: WebGPUBackend) => tiledFits(a, backend),
});
registerKernel({
  op: 'varlenAttention',
  backend: 'webgpu',
  fn: prefillKernel(rowPrefillProgram),
  verify: (_inputs, a: VarlenAttentionAttrs, backend: WebGPUBackend) => kernelFits(a, grid(a), backend),
});

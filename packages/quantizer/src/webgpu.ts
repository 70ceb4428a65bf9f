import { type DType, InputError, type Tensor, empty, registerKernel } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import { gemvLaneSum } from '@phalanx/ops';
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
 * The aligned GEMV's unit of work, a "group": the fewest u32 words that hold whole codes (words = bits /
 * gcd(bits, 32)): one word of 4 8-bit, 8 4-bit or 16 2-bit codes; three words of 16 6-bit codes; `bits`
 * words of 32 codes at 3, 5 and 7 bits. When K is a multiple of `codes`, every row starts on a word boundary
 * and is made of whole groups, so the codes sit at shifts known when the shader is written.
 */
export function packedChunk(bits: number): { words: number; codes: number } {
  const g = gcd(bits, 32);
  return { words: bits / g, codes: 32 / g };
}

/**
 * Shape of the GEMV workgroup. Aligned path: `rowsPerGroup` output rows per workgroup, each thread computing
 * `rowsPerThread` of them (so `rowsPerGroup / rowsPerThread * lanes` threads), `lanes` (a power of two)
 * threads sharing those rows, `unroll` units (groups, or 4 groups with `wide`) per lane and row in each
 * K-slice (a slice is lanes * unroll units). Unaligned path: `rowsPerGroup * lanes` threads, one row each,
 * and `unroll` unused.
 */
export interface PackedGemvShape {
  rowsPerGroup: number;
  lanes: number;
  unroll: number;
  rowsPerThread?: number;
  /**
   * Aligned path, widths whose group is one word (2, 4 and 8 bits) and K a multiple of 4 groups (rows on
   * 16-byte boundaries): each lane's unit is 4 consecutive groups loaded as one vec4<u32>, so a thread has
   * 4 times the codes in flight per load. Untimed so far.
   */
  wide?: boolean;
}

/**
 * The aligned GEMV's unit of work: `words` u32 words of `codes` codes, loaded `vec` words at a time (a group,
 * word by word; with `shape.wide`, 4 one-word groups as one vec4<u32>).
 */
function gemvUnit(bits: number, shape: PackedGemvShape): { words: number; codes: number; vec: number } {
  const { words, codes } = packedChunk(bits);
  return shape.wide ? { words: 4, codes: 4 * codes, vec: 4 } : { words, codes, vec: 1 };
}

/** Why wide loads cannot read rows of K codes of `bits` bits, or undefined where they can. */
function wideRefusal(bits: number, K: number): string | undefined {
  const { words, codes } = packedChunk(bits);
  if (words !== 1) return `wide loads need a one-word group (2, 4 or 8 bits), not ${bits} bits`;
  if (K % (4 * codes) !== 0) return `wide loads need K a multiple of ${4 * codes} at ${bits} bits (rows on 16-byte boundaries), got ${K}`;
  return undefined;
}

/** Workgroup memory of the aligned GEMV, in vec4 slots: WebGPU's guaranteed 16 KiB. */
const GEMV_SLOTS = 1024;

/** The aligned GEMV's layout in workgroup memory for `rows` rows of x (see packedGemvProgram). */
function gemvLayout(bits: number, rows: number, shape: PackedGemvShape) {
  const Q = gemvUnit(bits, shape).codes / 4; // vec4s of x per unit
  const S = Q > 1 ? Q + 1 : 1; // slots per unit in workgroup memory: one of padding (no bank conflicts)
  const R = shape.rowsPerThread ?? 1;
  const threads = (shape.rowsPerGroup / R) * shape.lanes;
  const xSlots = shape.lanes * shape.unroll * S; // per row of x
  const red = threads * Math.ceil(R / 4); // partial sums of one row of x, 4 output rows per slot
  const mPass = Math.max(1, Math.min(rows, Math.floor(GEMV_SLOTS / red)));
  return { Q, S, R, threads, xSlots, red, mPass, slots: Math.max(rows * xSlots, mPass * red) };
}

/**
 * The GEMV's shape for `rows` rows of x and N output rows. Aligned rows: at 2, 4 and 8 bits with rows on
 * 16-byte boundaries, wide loads (one vec4 of codes per lane and row in a slice) over 32 lanes, which an H200
 * ran 7-9% faster than the narrow shapes at 16384 x 8192; otherwise 64 lanes and 16 codes per lane and row in a
 * slice (one group at 3, 5, 6 and 7 bits); fewer lanes for short rows. 4 output rows per thread for one row of
 * x (2 for two, else 1), 256 threads, or fewer where N would give under 512 workgroups; the x slice is made
 * smaller if it would not fit 16 KiB (docs/packages/quantizer.md). Other K: 4 to 32 lanes per output row by
 * row length, 256 threads.
 */
export function defaultPackedGemv(bits: number, K: number, rows = 1, N = Infinity): PackedGemvShape {
  if (!alignedRows(K, bits)) {
    const lanes = 2 ** Math.min(5, Math.max(2, Math.floor(Math.log2(Math.max(1, K)))));
    return { rowsPerGroup: 256 / lanes, lanes, unroll: 1 };
  }
  const wide = wideRefusal(bits, K) === undefined;
  const { words, codes } = gemvUnit(bits, { rowsPerGroup: 1, lanes: 1, unroll: 1, wide });
  const C = K / codes;
  let unroll = wide ? 1 : Math.min(C, words === 1 ? Math.max(1, 16 / codes) : 1);
  let lanes = 2 ** Math.min(wide ? 5 : 6, Math.floor(Math.log2(Math.max(1, C / unroll))));
  const rowsPerThread = rows === 1 ? 4 : rows === 2 ? 2 : 1;
  let blocks = 256 / lanes; // threads sharing no row
  while (blocks > 1 && N / (blocks * rowsPerThread) < 512) blocks /= 2;
  const shape = () => ({ rowsPerGroup: blocks * rowsPerThread, lanes, unroll, rowsPerThread, ...(wide ? { wide } : {}) });
  while (gemvLayout(bits, rows, shape()).slots > GEMV_SLOTS && unroll > 1) unroll--;
  while (gemvLayout(bits, rows, shape()).slots > GEMV_SLOTS && lanes > 1) lanes /= 2;
  return shape();
}

/** Whether the GEMV can use its aligned path (every row starts on a group boundary). */
function alignedRows(K: number, bits: number): boolean {
  return K % packedChunk(bits).codes === 0;
}

/**
 * The value of an unsigned field u < 2^23: ORed into the mantissa of 2^23 it makes the float 2^23 + u
 * exactly, and subtracting 2^23 + 2^(bits-1) leaves the signed code, with no integer-to-float conversion
 * (which runs at a fraction of the FMA rate on NVIDIA GPUs). `half` is 2^(bits-1) as a WGSL f32 expression.
 */
function fieldToCode(field: string, half: string): string {
  return `bitcast<f32>(${field} | 0x4b000000u) - (8388608.0 + ${half})`;
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

/**
 * Where the aligned GEMV puts component j (0..3) of its vec4s of codes: at bit `o` of the float's mantissa,
 * so the decoded value is code * 2^o. A field already at bit o of its word needs one AND-OR (no shift), and
 * codes j of consecutive vec4s share one shifted word: at 4 and 8 bits one shift serves four codes where the
 * plain decode shifts every code. The accumulator's component j is 2^o times too large, undone exactly (a
 * power of two) when the lanes' sums are added: `codeScales`. Fields must stay inside the 23-bit mantissa.
 */
function codeOffset(j: number, bits: number): number {
  if (j * bits + bits <= 23) return j * bits;
  if (((j * bits) % 16) + bits <= 23) return (j * bits) % 16;
  return 0;
}

/** vec4 of 2^-o per component: the accumulators' sums times this are the sums of the codes' products. */
function codeScales(bits: number): string {
  return `vec4<f32>(${range(4).map((j) => `${2 ** -codeOffset(j, bits)}`).join(', ')})`;
}

/** Four codes of a group (i0..i0+3) held in u32 registers `word(0)`.., as a vec4<f32> of code * 2^codeOffset. */
function groupCodes4(word: (t: number) => string, i0: number, bits: number): string {
  const offsets = range(4).map((j) => codeOffset(j, bits));
  const fields = offsets.map((o, j) => {
    const lo = (i0 + j) * bits;
    const t = lo >> 5;
    const shift = (lo & 31) - o; // > 0 whenever the field straddles two words (o + bits <= 23)
    const w = shift > 0 ? `(${word(t)} >> ${shift}u)` : shift < 0 ? `(${word(t)} << ${-shift}u)` : word(t);
    return (lo & 31) + bits > 32 ? `(${w} | (${word(t + 1)} << ${32 - shift}u))` : w;
  });
  const masks = offsets.map((o) => `${(2 ** bits - 1) * 2 ** o}u`);
  const bias = offsets.map((o) => `${2 ** 23 + 2 ** (bits - 1 + o)}.0`);
  return `bitcast<vec4<f32>>((vec4<u32>(${fields.join(', ')}) & vec4<u32>(${masks.join(', ')})) | vec4<u32>(0x4b000000u)) - vec4<f32>(${bias.join(', ')})`;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * The aligned GEMVs' start: the thread's lane and first output row nBase (R rows per thread, `lanes` threads
 * per row group), C units of `codes` codes per row (cl the last), K4 vec4s of x per row, and rs<r> the first
 * unit of output row r (clamped to the last row: rows past N are computed and not stored).
 */
function gemvPrelude(rowsPerGroup: number, lanes: number, R: number, codes: number): string {
  return `  let lane = lid.x % ${lanes}u;
  let nBase = (wid.x + wid.y * nwg.x) * ${rowsPerGroup}u + lid.x / ${lanes}u * ${R}u;
  let C = u.K / ${codes}u;
  let cl = C - 1u;
  let K4 = u.K / 4u;
  ${range(R).map((r) => `let rs${r} = min(nBase + ${r}u, u.N - 1u) * C;`).join(' ')}`;
}

/** What `sliceLoop` puts together: WGSL generators of an aligned GEMV, for registers named by prefix `p`. */
interface SliceLoopParts {
  /** Units per slice. */
  LU: number;
  xdecl: (p: string) => string;
  /** x of the slice at unit `g` into registers `p`.. */
  xload: (p: string, g: string) => string;
  /** registers `p`.. into workgroup memory */
  xstore: (p: string) => string;
  /** codes of the slice at unit `g` into registers `p`.. (declared with `decl`) */
  loads: (p: string, g: string, decl: string) => string;
  compute: string;
  /** the next slice's registers (n.., xn..) into the current ones (w.., xr..) */
  swap: string;
}

/**
 * The aligned GEMVs' K loop, from unit g0 (whose codes are in registers w.. already): per slice, x is staged
 * in workgroup memory while the next slice's codes and x are loaded into registers, then the slice is
 * multiplied; a barrier on each side of the multiply.
 */
function sliceLoop({ LU, xdecl, xload, xstore, loads, compute, swap }: SliceLoopParts): string {
  return `${xdecl('xr')} ${xdecl('xn')}
  ${xload('xr', 'g0')}
  loop {
    ${xstore('xr')}
    workgroupBarrier();
    let g1 = g0 + ${LU}u;
    ${loads('n', 'g1', 'let ')}
    ${xload('xn', 'g1')}
    ${compute}
    workgroupBarrier();
    if (g1 >= C) { break; }
    ${swap}
    g0 = g1;
  }`;
}

/**
 * The aligned GEMVs' end: each thread's sums `hsum(m, r)` (row m of x, its output row r) added over the lanes in
 * workgroup memory `sh`, mPass rows of x at a time (slot (mi * RQ + rq) * threads + lid.x holds output rows
 * 4rq..4rq+3), and lane 0 stores apply(sum) for the rows below N.
 */
function laneReduce(
  g: { rows: number; mPass: number; R: number; threads: number; lanes: number; apply: (value: string, col: string) => string },
  hsum: (m: number, r: number) => string,
): string {
  const { rows, mPass, R, threads, lanes, apply } = g;
  const RQ = Math.ceil(R / 4);
  const [Mr, Rr] = [range(rows), range(R)];
  const sum = (m: number, r: number) => (r < R ? hsum(m, r) : '0.0');
  return range(Math.ceil(rows / mPass))
    .map((p) => Mr.slice(p * mPass, (p + 1) * mPass))
    .map((ms, p) => {
      const slot = (mi: number, rq: number) => `${(mi * RQ + rq) * threads}u + lid.x`;
      const each = (f: (mi: number, m: number, rq: number) => string) => ms.flatMap((m, mi) => range(RQ).map((rq) => f(mi, m, rq)));
      return `${p > 0 ? 'workgroupBarrier();\n  ' : ''}${each((mi, m, rq) => `sh[${slot(mi, rq)}] = vec4<f32>(${range(4).map((c) => sum(m, 4 * rq + c)).join(', ')});`).join('\n  ')}
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) {
      ${each((mi, _m, rq) => `sh[${slot(mi, rq)}] += sh[${slot(mi, rq)} + s];`).join('\n      ')}
    }
    workgroupBarrier();
  }
  if (lane == 0u) {
    ${ms.flatMap((m, mi) => Rr.map((r) => `if (nBase + ${r}u < u.N) { out[${m}u * u.N + nBase + ${r}u] = ${apply(`sh[${slot(mi, r >> 2)}].${'xyzw'[r & 3]}`, `nBase + ${r}u`)}; }`)).join('\n    ')}
  }`;
    })
    .join('\n  ');
}

/**
 * y[m, n] = dot(x[m, :], codes[n, :]) * scale[n] + bias[n] for a few rows m (K codes each), streaming the
 * packed W once.
 *  - aligned (K a multiple of `packedChunk(bits).codes`): the workgroup walks K in slices of lanes * unroll
 *    units (`gemvUnit`). Per slice it stages x (every row m) in workgroup memory, where each unit's vec4s sit
 *    one slot apart from the next unit's (a padding slot; no bank conflicts when lanes read consecutive units),
 *    while each thread holds the words of the slice for its `rowsPerThread` rows in registers; both the words
 *    and x are loaded into registers one slice ahead (lane l reads unit l + j * lanes, so a warp's loads are
 *    contiguous). Each x vec4 read from workgroup memory then serves rowsPerThread rows, and each x element
 *    is read from global memory once per workgroup. Codes are cut out with constant shifts; the last slice
 *    may run past the row (its units are clamped into the row and meet x = 0), and rows past N are clamped
 *    and not stored. Lanes' partial sums are added in workgroup memory.
 *  - otherwise rows start anywhere in a word: each lane takes every `lanes`-th code of its row through
 *    `code(p)`, and the width is a uniform (one shader for every width).
 */
export function packedGemvProgram(xDType: DType, post: PackedEpilogue, bits: number, rows: number, K: number, shape: PackedGemvShape): Program {
  const { rowsPerGroup, lanes, unroll, wide } = shape;
  if (!(lanes > 0 && (lanes & (lanes - 1)) === 0)) throw new InputError(`packed GEMV: lanes must be a power of two, got ${lanes}`);
  const refusal = wide ? wideRefusal(bits, K) : undefined;
  if (refusal) throw new InputError(`packed GEMV: ${refusal}`);
  if (!alignedRows(K, bits)) return unalignedGemvProgram(xDType, post, rows, shape);
  const L = gemvLayout(bits, rows, shape);
  const { Q, S, R, threads, xSlots, mPass, slots } = L;
  const name = `${rowsPerGroup}x${lanes}x${unroll}x${R}${wide ? 'w' : ''}`;
  if (!(Number.isInteger(rowsPerGroup / R) && rowsPerGroup >= R && unroll >= 1 && Number.isInteger(unroll))) {
    throw new InputError(`packed GEMV: ${rowsPerGroup} rows per workgroup, ${R} per thread, unroll ${unroll}`);
  }
  if (slots > GEMV_SLOTS) throw new InputError(`packed GEMV: shape ${name} needs ${slots * 16} bytes of workgroup memory for ${rows} rows`);
  const ep = epilogue(post);
  return cached(`quantizer:gemv:${xDType}:${ep.key}:${bits}:${rows}:aligned:${name}`, () => {
    const { words: G, codes: P, vec: V } = gemvUnit(bits, shape);
    const XV = lanes * unroll * Q; // vec4s of x per slice and row of x
    const LU = lanes * unroll;
    const [Rr, Ur, Tr, Mr, Qr] = [range(R), range(unroll), range(G / V), range(rows), range(Q)];
    const vecX = xDType === 'f32';
    // register t of a unit holds words tV..tV+V-1 (components of a vec4<u32> when V = 4)
    const word = (p: string, r: number, j: number) => (t: number) => `${p}${r}_${j}_${Math.floor(t / V)}${V > 1 ? `.${'xyzw'[t % V]}` : ''}`;
    // the words of the slice starting at unit `g` for every row and unrolled unit, into `p`-named registers
    const loads = (p: string, g: string, decl: string) =>
      Ur.map((j) => `let g${p}${j} = min(${g} + ${j * lanes}u + lane, cl);`)
        .concat(Rr.flatMap((r) => Ur.map((j) => Tr.map((t) => `${decl}${p}${r}_${j}_${t} = codes[(rs${r} + g${p}${j})${Tr.length > 1 ? ` * ${Tr.length}u + ${t}u` : ''}];`).join(' '))))
        .join('\n    ');
    const x4 = (m: string, k4: string) =>
      vecX ? `x[${m} * K4 + ${k4}]` : `vec4<f32>(load_x(${m} * u.K + ${k4} * 4u), load_x(${m} * u.K + ${k4} * 4u + 1u), load_x(${m} * u.K + ${k4} * 4u + 2u), load_x(${m} * u.K + ${k4} * 4u + 3u))`;
    const compute = Ur.map(
      (j) => `{
      let xb = (${j * lanes}u + lane) * ${S}u;
      ${Qr.map(
        (q) => `{
        ${Mr.map((m) => `let x${m} = sh[${m * xSlots}u + xb + ${q}u];`).join(' ')}
        ${Rr.map((r) => `{ let d = ${groupCodes4(word('w', r, j), 4 * q, bits)}; ${Mr.map((m) => `acc${m}_${r} = fma(d, x${m}, acc${m}_${r});`).join(' ')} }`).join('\n        ')}
      }`,
      ).join('\n      ')}
    }`,
    ).join('\n    ');
    // x of the slice at unit `g`: element e = lid.x + i * threads of [rows][XV], into registers `p`0.. (0 past K)
    const total = rows * XV;
    const E = range(Math.ceil(total / threads));
    const guard = (i: number) => ((i + 1) * threads <= total ? '' : ` && lid.x + ${i * threads}u < ${total}u`);
    const xload = (p: string, g: string) =>
      E.map((i) => `{ let e = lid.x + ${i * threads}u; let k4 = ${g} * ${Q}u + e % ${XV}u; ${p}${i} = select(vec4<f32>(0.0), ${x4(`(e / ${XV}u)`, `min(k4, K4 - 1u)`)}, k4 < K4${guard(i)}); }`)
        .join('\n    ');
    const stageIndex = (ii: string) => (S === 1 ? ii : `${ii} / ${Q}u * ${S}u + ${ii} % ${Q}u`);
    const xstore = (p: string) =>
      E.map((i) => {
        const st = `{ let e = lid.x + ${i * threads}u; sh[e / ${XV}u * ${xSlots}u + ${stageIndex(`(e % ${XV}u)`)}] = ${p}${i}; }`;
        return guard(i) ? `if (lid.x + ${i * threads}u < ${total}u) ${st}` : st;
      }).join('\n    ');
    const xdecl = (p: string) => E.map((i) => `var ${p}${i}: vec4<f32>;`).join(' ');
    const body = `${loads('w', 'g0', 'var ')}
  ${sliceLoop({ LU, xdecl, xload, xstore, loads, compute, swap: `${Rr.flatMap((r) => Ur.flatMap((j) => Tr.map((t) => `w${r}_${j}_${t} = n${r}_${j}_${t};`))).join(' ')}\n    ${E.map((i) => `xr${i} = xn${i};`).join(' ')}` })}`;
    const reduce = laneReduce({ rows, mPass, R, threads, lanes, apply: ep.apply }, (m, r) => `dot(acc${m}_${r}, ${codeScales(bits)})`);
    return program({
      name: 'packedLinear',
      inputs: { x: xDType, codes: 'u8', ...ep.inputs },
      outputs: { out: 'f32' },
      views: { codes: V > 1 ? 'vec4<u32>' : 'u32', ...(vecX ? { x: 'vec4<f32>' } : {}) },
      uniforms: { N: 'u32', K: 'u32' },
      workgroupSize: threads,
      helpers: `var<workgroup> sh: array<vec4<f32>, ${slots}>;`,
      main: `${gemvPrelude(rowsPerGroup, lanes, R, P)}
  ${Mr.flatMap((m) => Rr.map((r) => `var acc${m}_${r} = vec4<f32>(0.0);`)).join(' ')}
  var g0 = 0u;
  ${body}
  ${reduce}`,
    });
  });
}

/** Consecutive x that share one int8 scale in the int8-activation GEMV (as llama.cpp's Q8 blocks share theirs). */
export const INT8_ACTIVATION_BLOCK = 16;

/**
 * Why the int8-activation GEMV cannot take rows of K codes of `bits` bits, or undefined where it can: it reads
 * codes that sit whole in bytes (as nibbles or bytes) of one-word groups, loaded 16 bytes at a time.
 */
export function int8ActivationRefusal(bits: number, K: number): string | undefined {
  if (bits !== 4 && bits !== 8) return `int8 activations take 4- or 8-bit codes, not ${bits} bits`;
  return wideRefusal(bits, K);
}

/**
 * The GEMV with int8 activations (`PackedLinearAttrs.int8Activations`): x is quantized to int8 in blocks of 16
 * consecutive values of a row, s_b = max |x_b| / 127 (1 for a block of zeros), q = round(x / s_b) with ties to
 * even, and each product of 4 codes with 4 quantized x is one `dot4I8Packed`; a block's integer sum is exact
 * (i32) and is scaled by s_b once: y[m, n] = scale[n] * sum_b s_b * sum_(k in b) q[m, k] code[n, k] (+ bias).
 * 4-bit codes are stored as c + 8: their nibbles, masked into bytes (even and odd codes of a word apart), meet
 * x packed in the same order, and 8 * sum_(k in b) q is subtracted per block; 8-bit codes are c + 128, and
 * flipping each byte's top bit gives c. The workgroup walks K in slices as the wide aligned GEMV does: per
 * slice each block of x is quantized by the thread that loads it into workgroup memory (a vec4<u32> and its
 * scale), while each thread holds one vec4<u32> of codes per output row and unit, loaded a slice ahead.
 */
export function packedInt8GemvProgram(xDType: DType, post: PackedEpilogue, bits: number, rows: number, K: number, shape: PackedGemvShape): Program {
  const refusal = int8ActivationRefusal(bits, K);
  if (refusal) throw new InputError(`packed GEMV: ${refusal}`);
  const { rowsPerGroup, lanes, unroll } = shape;
  const R = shape.rowsPerThread ?? 1;
  if (!(lanes > 0 && (lanes & (lanes - 1)) === 0)) throw new InputError(`packed GEMV: lanes must be a power of two, got ${lanes}`);
  if (!(Number.isInteger(rowsPerGroup / R) && rowsPerGroup >= R && unroll >= 1 && Number.isInteger(unroll))) {
    throw new InputError(`packed GEMV: ${rowsPerGroup} rows per workgroup, ${R} per thread, unroll ${unroll}`);
  }
  const threads = (rowsPerGroup / R) * lanes;
  const codes = 4 * (32 / bits); // codes per unit: 4 words
  const V = codes / INT8_ACTIVATION_BLOCK; // blocks of x per unit: 2 at 4 bits, 1 at 8
  const S = V > 1 ? V + 1 : 1; // slots per unit: one of padding at 4 bits (no bank conflicts)
  const xSlots = lanes * unroll * S; // per row of x
  const red = threads * Math.ceil(R / 4); // partial sums of one row of x, 4 output rows per slot
  // workgroup memory in vec4 slots: the packed x (a vec4<u32> per block), its scales (an f32 per block), the lanes' sums
  const xMemory = rows * xSlots + Math.ceil((rows * xSlots) / 4);
  const mPass = Math.max(1, Math.min(rows, Math.floor((GEMV_SLOTS - xMemory) / red)));
  if (xMemory + mPass * red > GEMV_SLOTS) throw new InputError(`packed GEMV: shape ${rowsPerGroup}x${lanes}x${unroll}x${R} needs more than 16 KiB of workgroup memory for ${rows} rows`);
  const ep = epilogue(post);
  const name = `${rowsPerGroup}x${lanes}x${unroll}x${R}`;
  return cached(`quantizer:gemv-int8x:${xDType}:${ep.key}:${bits}:${rows}:${name}`, () => {
    const [Rr, Ur, Mr, Tr] = [range(R), range(unroll), range(rows), range(4)];
    const LU = lanes * unroll;
    const vecX = xDType === 'f32';
    const x4 = (m: string, k4: string) =>
      vecX ? `x[${m} * K4 + ${k4}]` : `vec4<f32>(load_x(${m} * u.K + ${k4} * 4u), load_x(${m} * u.K + ${k4} * 4u + 1u), load_x(${m} * u.K + ${k4} * 4u + 2u), load_x(${m} * u.K + ${k4} * 4u + 3u))`;
    // codes: vec4<u32> of unit g + j * lanes + lane for each output row r into registers p<r>_<j>
    const loads = (p: string, g: string, decl: string) =>
      Ur.map((j) => `let g${p}${j} = min(${g} + ${j * lanes}u + lane, cl);`)
        .concat(Rr.flatMap((r) => Ur.map((j) => `${decl}${p}${r}_${j} = codes[rs${r} + g${p}${j}];`)))
        .join('\n    ');
    // x staging: element e = lid.x + i * threads of [rows][LU * V] blocks, each 16 x (4 vec4) quantized into one vec4<u32> and a scale
    const total = rows * LU * V;
    const E = range(Math.ceil(total / threads));
    const guard = (i: number) => ((i + 1) * threads <= total ? '' : ` && lid.x + ${i * threads}u < ${total}u`);
    const xload = (p: string, g: string) =>
      E.map(
        (i) => `{ let e = lid.x + ${i * threads}u; let m = e / ${LU * V}u; let k4 = (${g} * ${V}u + e % ${LU * V}u) * 4u;
      ${Tr.map((t) => `${p}${i}_${t} = select(vec4<f32>(0.0), ${x4('m', `min(k4 + ${t}u, K4 - 1u)`)}, k4 + ${t}u < K4${guard(i)});`).join(' ')} }`,
      ).join('\n    ');
    const q = (v: string) => `vec4<i32>(round(${v} * inv))`;
    // 4 bits: word t of a unit holds codes 8t..8t+7; its even codes meet x (8t, 8t+2, 8t+4, 8t+6), its odd ones the rest
    const pack = (p: string, i: number) =>
      bits === 8
        ? `vec4<u32>(${Tr.map((t) => `pack4xI8Clamp(${q(`${p}${i}_${t}`)})`).join(', ')})`
        : `vec4<u32>(${[0, 2].flatMap((t) => [`pack4xI8Clamp(${q(`vec4<f32>(${p}${i}_${t}.xz, ${p}${i}_${t + 1}.xz)`)})`, `pack4xI8Clamp(${q(`vec4<f32>(${p}${i}_${t}.yw, ${p}${i}_${t + 1}.yw)`)})`]).join(', ')})`;
    const slotOf = (ii: string) => (S === 1 ? ii : `${ii} / ${V}u * ${S}u + ${ii} % ${V}u`);
    // a block's scale: max |x| / 127 (1 for a block of zeros), and its x quantized by it
    const xstore = (p: string) =>
      E.map((i) => {
        const a = (t: number) => `abs(${p}${i}_${t})`;
        const st = `{ let e = lid.x + ${i * threads}u; let at = e / ${LU * V}u * ${xSlots}u + ${slotOf(`(e % ${LU * V}u)`)};
      let mx4 = max(max(${a(0)}, ${a(1)}), max(${a(2)}, ${a(3)})); let mx = max(max(mx4.x, mx4.y), max(mx4.z, mx4.w));
      let scale = select(1.0, mx / 127.0, mx > 0.0); let inv = 1.0 / scale;
      xw[at] = ${pack(p, i)}; xsc[at] = scale; }`;
        return guard(i) ? `if (lid.x + ${i * threads}u < ${total}u) ${st}` : st;
      }).join('\n    ');
    const xdecl = (p: string) => E.flatMap((i) => Tr.map((t) => `var ${p}${i}_${t}: vec4<f32>;`)).join(' ');
    // the products of code word t with block v's packed x (4 bits: block v meets words 2v, 2v + 1; 8 bits: one block, 4 words)
    const dot = (w: string, t: number, xv: string) =>
      bits === 8
        ? `dot4I8Packed(${w}.${'xyzw'[t]} ^ 0x80808080u, ${xv}.${'xyzw'[t]})`
        : `dot4I8Packed(${w}.${'xyzw'[t]} & 0x0f0f0f0fu, ${xv}.${'xyzw'[(t & 1) * 2]}) + dot4I8Packed((${w}.${'xyzw'[t]} >> 4u) & 0x0f0f0f0fu, ${xv}.${'xyzw'[(t & 1) * 2 + 1]})`;
    const words = (v: number) => (bits === 8 ? Tr : [2 * v, 2 * v + 1]);
    // 4 bits: the codes are stored + 8, so each block's integer sum loses 8 * (its sum of q)
    const offset = (v: number) => (bits === 4 ? ` - 8 * (dot4I8Packed(0x01010101u, x${v}.x) + dot4I8Packed(0x01010101u, x${v}.y) + dot4I8Packed(0x01010101u, x${v}.z) + dot4I8Packed(0x01010101u, x${v}.w))` : '');
    const compute = Ur.map(
      (j) => `{
      let xb = (${j * lanes}u + lane) * ${S}u;
      ${Mr.map(
        (m) => `${range(V)
          .map(
            (v) => `{
        let x${v} = xw[${m * xSlots}u + xb + ${v}u]; let s${v} = xsc[${m * xSlots}u + xb + ${v}u];${bits === 4 ? ` let o${v} = 0${offset(v)};` : ''}
        ${Rr.map((r) => `acc${m}_${r} = fma(f32(${words(v).map((t) => dot(`w${r}_${j}`, t, `x${v}`)).join(' + ')}${bits === 4 ? ` + o${v}` : ''}), s${v}, acc${m}_${r});`).join('\n        ')}
      }`,
          )
          .join('\n      ')}`,
      ).join('\n      ')}
    }`,
    ).join('\n    ');
    const body = sliceLoop({ LU, xdecl, xload, xstore, loads, compute, swap: `${Rr.flatMap((r) => Ur.map((j) => `w${r}_${j} = n${r}_${j};`)).join(' ')}\n    ${E.flatMap((i) => Tr.map((t) => `xr${i}_${t} = xn${i}_${t};`)).join(' ')}` });
    const reduce = laneReduce({ rows, mPass, R, threads, lanes, apply: ep.apply }, (m, r) => `acc${m}_${r}`);
    return program({
      name: 'packedLinear',
      inputs: { x: xDType, codes: 'u8', ...ep.inputs },
      outputs: { out: 'f32' },
      views: { codes: 'vec4<u32>', ...(vecX ? { x: 'vec4<f32>' } : {}) },
      uniforms: { N: 'u32', K: 'u32' },
      workgroupSize: threads,
      helpers: `var<workgroup> xw: array<vec4<u32>, ${rows * xSlots}>;
var<workgroup> xsc: array<f32, ${rows * xSlots}>;
var<workgroup> sh: array<vec4<f32>, ${mPass * red}>;`,
      main: `${gemvPrelude(rowsPerGroup, lanes, R, codes)}
  ${Mr.flatMap((m) => Rr.map((r) => `var acc${m}_${r} = 0.0;`)).join(' ')}
  var g0 = 0u;
  ${loads('w', 'g0', 'var ')}
  ${body}
  ${reduce}`,
    });
  });
}

/** The GEMV of rows that start anywhere in a word (K not a multiple of the group's codes). */
function unalignedGemvProgram(xDType: DType, post: PackedEpilogue, rows: number, shape: PackedGemvShape): Program {
  const ep = epilogue(post);
  const { rowsPerGroup, lanes } = shape;
  return cached(`quantizer:gemv:${xDType}:${ep.key}:${rows}:any:${rowsPerGroup}x${lanes}`, () => {
    const threads = rowsPerGroup * lanes;
    const R = range(rows);
    const laneSum = gemvLaneSum(rows, threads, lanes, ep.apply);
    return program({
      name: 'packedLinear',
      inputs: { x: xDType, codes: 'u8', ...ep.inputs },
      outputs: { out: 'f32' },
      views: { codes: 'u32' },
      uniforms: { N: 'u32', K: 'u32', bits: 'u32' },
      workgroupSize: threads,
      helpers: `${laneSum.decl}\n${CODE_AT}`,
      main: `  let r = lid.x / ${lanes}u;
  let lane = lid.x % ${lanes}u;
  let n = (wid.x + wid.y * nwg.x) * ${rowsPerGroup}u + r;
  ${R.map((m) => `var acc${m} = 0.0;`).join(' ')}
  if (n < u.N) {
    let rowBit = n * u.K * u.bits;
    for (var k = lane; k < u.K; k += ${lanes}u) {
      let q = code(rowBit + k * u.bits);
      ${R.map((m) => `acc${m} += q * load_x(${m}u * u.K + k);`).join(' ')}
    }
  }
  ${laneSum.store}`,
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
  if (attrs.int8Activations) {
    // the caller checked the case (quantizedLinear); the wide default fits it
    const shape = shapes.gemv ?? defaultPackedGemv(bits, K, M, N);
    await backend.run(packedInt8GemvProgram(x.dtype, post, bits, M, K, shape), inputs, [out], { N, K }, grid1d(N, shape.rowsPerGroup, backend.limits.maxComputeWorkgroupsPerDimension));
    return;
  }
  if (M <= PACKED_GEMV_MAX_ROWS) {
    const tried = alignedRows(K, bits) && shapes.gemv;
    // a shape to try applies to the aligned path (the benchmark's shapes), without its wide loads where they
    // cannot read these rows (one --packed-gemv for every width); the other path keeps its default
    const shape = (tried && (tried.wide && wideRefusal(bits, K) ? { ...tried, wide: false } : tried)) || defaultPackedGemv(bits, K, M, N);
    const prog = packedGemvProgram(x.dtype, post, bits, M, K, shape);
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
  verify: (_inputs, attrs: PackedLinearAttrs, backend: WebGPUBackend) => {
    const { M, N, K, bits } = attrs;
    const max = backend.limits.maxComputeWorkgroupsPerDimension!;
    const gemv = M <= PACKED_GEMV_MAX_ROWS;
    if (attrs.int8Activations) return (gemv && int8ActivationRefusal(attrs.bits, K) === undefined) || `int8 activations take the aligned GEMV at 4 or 8 bits (got ${M} x ${K} at ${attrs.bits} bits)`;
    // the paths that address codes by bit position hold it in a u32
    if (!(gemv && alignedRows(K, bits)) && N * K * bits > 2 ** 32) return `${N} x ${K} codes of ${bits} bits exceed 2^32 bits`;
    if (gemv) return Math.ceil(N / defaultPackedGemv(bits, K, M, N).rowsPerGroup) <= max * max || `grid too large for ${N} rows`;
    return (Math.ceil(M / DEFAULT_PACKED_TILE.BM) <= max && Math.ceil(N / DEFAULT_PACKED_TILE.BN) <= max) || `grid too large for ${M} x ${N}`;
  },
});

import { InputError, ShapeError, type Tensor, assertFloat, formatShape, tensor } from '@phalanx/core';

/**
 * A rotation of a matrix's input dimension K (QuaRot / SpinQuant style), y = W x = (W R)(R^T x):
 * R = I_(K/block) (x) R_block, block-diagonal, `block` a power of two dividing K, and
 * R_block = D H / sqrt(block) with H the Sylvester Hadamard matrix (H[i][j] = (-1)^popcount(i & j)) and D
 * the diagonal of `hadamardSigns(block, seed)` (none when seed is null: R_block = H / sqrt(block), symmetric,
 * its own inverse). R is orthonormal: R^T undoes it. The signs keep structure of trained weights that lines
 * up with H's rows (constant or head-periodic patterns) from landing in single columns as new outliers.
 */
export interface HadamardRotation {
  kind: 'hadamard';
  block: number;
  seed: number | null;
}

/** `quantize`'s and `quantizeModel`'s rotation settings: the block (default: the largest power of two dividing K) and the signs' seed (default 0; null: none). */
export interface HadamardOptions {
  block?: number;
  seed?: number | null;
}

const isPowerOfTwo = (n: number) => Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0;

/**
 * The rotation for `cols` inputs: `block` a power of two >= 2 dividing cols or, by default, the largest
 * power of two dividing cols (all of K when K is a power of two; 32 for K = 288 = 32 * 9). An odd K has no
 * block and is refused with a ShapeError naming `name`; a bad block or seed is an InputError.
 */
export function hadamardRotation(op: string, name: string, cols: number, options: HadamardOptions = {}): HadamardRotation {
  const { block = cols & -cols, seed = 0 } = options;
  if (seed !== null && !(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32)) throw new InputError(`${op}: the Hadamard seed must be an integer in [0, 2^32) or null, got ${seed}`);
  if (options.block === undefined && block < 2) throw new ShapeError(`${op}: ${name} has ${cols} inputs, which no power-of-two Hadamard block >= 2 divides (K must be 2^a * m with a >= 1)`);
  if (!isPowerOfTwo(block) || block < 2) throw new InputError(`${op}: the Hadamard block must be a power of two >= 2, got ${block}`);
  if (cols % block !== 0) throw new ShapeError(`${op}: ${name} has ${cols} inputs, not a multiple of the Hadamard block ${block}`);
  return { kind: 'hadamard', block, seed };
}

/**
 * The orthonormal fast Walsh-Hadamard transform, in place, of each run of `block` values of v (block a power
 * of two dividing v.length; default all of v): v_b <- H_block v_b / sqrt(block), O(n log block) in float64.
 * H is symmetric, so for a row-major matrix whose row length is a multiple of `block` this is W -> W H; applied
 * twice it gives v back.
 */
export function hadamardTransform(v: Float64Array, block = v.length): Float64Array {
  if (!isPowerOfTwo(block)) throw new InputError(`hadamardTransform: block must be a power of two, got ${block}`);
  if (v.length % block !== 0) throw new ShapeError(`hadamardTransform: ${v.length} values are not a whole number of blocks of ${block}`);
  for (let start = 0; start < v.length; start += block) {
    for (let h = 1; h < block; h *= 2) {
      for (let i = start; i < start + block; i += 2 * h) {
        for (let j = i; j < i + h; j++) {
          const a = v[j]!;
          const b = v[j + h]!;
          v[j] = a + b;
          v[j + h] = a - b;
        }
      }
    }
  }
  const norm = 1 / Math.sqrt(block);
  for (let i = 0; i < v.length; i++) v[i]! *= norm;
  return v;
}

/**
 * The signs D of `HadamardRotation` (part of the artifact format): xorshift32 (shifts 13, 17, 5) from the
 * state (seed ^ 0x9e3779b9) or 1 if that is 0; entry i is -1 when the top bit of the (i+1)-th state is set.
 */
export function hadamardSigns(block: number, seed: number): Int8Array {
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return Int8Array.from({ length: block }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s >>> 31 ? -1 : 1;
  });
}

/**
 * In place: each run of `rotation.block` values of v times R_block (v's rows -> rows times R, for rows whose
 * length is a multiple of the block), or times R_block^T with `inverse` (undoing it).
 */
export function rotateRows(v: Float64Array, rotation: HadamardRotation, inverse = false): Float64Array {
  const { block, seed } = rotation;
  const signs = seed === null ? null : hadamardSigns(block, seed);
  const flip = () => {
    for (let i = 0; i < v.length; i++) v[i]! *= signs![i % block]!;
  };
  if (signs && !inverse) flip(); // x D H / sqrt(b)
  hadamardTransform(v, block);
  if (signs && inverse) flip(); // x H D / sqrt(b)
  return v;
}

/** The [cols, cols] symmetric matrix m rotated on both sides, R^T m R: the Hessian of the rotated inputs x R. */
export function rotateSymmetric(m: ArrayLike<number>, cols: number, rotation: HadamardRotation): Float64Array {
  const a = rotateRows(Float64Array.from(m), rotation); // m R
  return rotateRows(transpose(a, cols, cols), rotation); // (m R)^T R = R^T m R
}

function transpose(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c]!;
  return t;
}

export interface FoldedPair {
  /** R^T W_prev [K, in]: the previous layer's output rows mixed, so it emits x2 R. */
  prev: Tensor;
  /** R^T b_prev [K], when a bias was given. */
  bias: Tensor | null;
  /** W_next R [out, K]: quantize it without `rotate`; it reads the rotated x2 directly. */
  next: Tensor;
  rotation: HadamardRotation;
}

/**
 * Folds the rotation of `next`'s input into the linear that produces it (SpinQuant's placement): for
 * x2 = W_prev x + b_prev and y = W_next x2, returns R^T W_prev, R^T b_prev and W_next R, so that
 * (W_next R)(R^T W_prev x + R^T b_prev) = y with no rotation at run time. Valid only where what sits between
 * the two commutes with R: nothing; attention between v_proj and o_proj (it mixes positions, not features,
 * within a head: pass a `block` dividing the head size, so R stays inside heads; a per-head gate also
 * commutes); not an elementwise nonlinearity (up -> down: rotate x at run time there), and not an RMSNorm
 * with a non-uniform weight until that weight is folded into the next linear (its normalization is
 * rotation-invariant, the weight is not). Computed in float64, returned as f32 on the CPU.
 *
 * @example
 * const { prev, next } = await foldHadamard(vProj, oProj, { block: headDim });
 * const q = await quantize(next, { bits: 4, clipSigmas: 2.5 }); // no runtime rotation: prev already emits x2 R
 */
export async function foldHadamard(prev: Tensor, next: Tensor, options: HadamardOptions & { bias?: Tensor | null } = {}): Promise<FoldedPair> {
  const { bias = null, ...rotate } = options;
  for (const [role, t] of [['prev', prev], ['next', next], ['bias', bias]] as const) if (t) assertFloat('foldHadamard', t, role);
  const [prevName, nextName] = [prev.name ?? 'prev', next.name ?? 'next'];
  if (prev.rank !== 2 || next.rank !== 2) throw new ShapeError(`foldHadamard: ${prevName} ${formatShape(prev.shape)} and ${nextName} ${formatShape(next.shape)} must be [out, in]`);
  const [K, inputs] = prev.shape as [number, number];
  const out = next.shape[0]!;
  if (next.shape[1] !== K) throw new ShapeError(`foldHadamard: ${nextName} ${formatShape(next.shape)} must read the ${K} outputs of ${prevName} ${formatShape(prev.shape)}`);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== K)) throw new ShapeError(`foldHadamard: bias ${bias.name ?? 'bias'} ${formatShape(bias.shape)} must be [${K}] to match ${prevName}`);
  const rotation = hadamardRotation('foldHadamard', `${nextName} ${formatShape(next.shape)}`, K, rotate);
  // R^T W_prev = (W_prev^T R)^T: the rows of W_prev^T rotated
  const rotatedPrev = transpose(rotateRows(transpose(await prev.data(), K, inputs), rotation), inputs, K);
  const f32 = (v: Float64Array, shape: number[], name?: string) => tensor(Float32Array.from(v), shape, { name });
  return {
    prev: f32(rotatedPrev, [K, inputs], prev.name),
    bias: bias && f32(rotateRows(Float64Array.from(await bias.data()), rotation), [K], bias.name),
    next: f32(rotateRows(Float64Array.from(await next.data()), rotation), [out, K], next.name),
    rotation,
  };
}

import { InputError, ShapeError, type Tensor, assertFloat, formatShape } from '@phalanx/core';
import { quantizeValue } from './sdclip.js';

/**
 * A running sum of X^T X over calibration batches, for one linear layer's input X (rows = tokens,
 * columns = the layer's input features). GPTQ uses the mean over batches, H = (1/batches) * sum X^T X,
 * as the reference does (the scale of H does not change GPTQ's result).
 */
export interface Hessian {
  readonly columns: number;
  /** sum of X^T X, row-major [columns, columns], float64. */
  readonly sum: Float64Array;
  /** Batches accumulated so far. */
  batches: number;
}

export function createHessian(columns: number): Hessian {
  if (!Number.isInteger(columns) || columns < 1) throw new InputError(`createHessian: columns must be a positive integer, got ${columns}`);
  return { columns, sum: new Float64Array(columns * columns), batches: 0 };
}

/**
 * Adds one calibration batch: x is [..., columns] (any float dtype, any backend; read back to the CPU).
 * Accumulates in float64.
 */
export async function accumulateHessian(h: Hessian, x: Tensor): Promise<void> {
  assertFloat('accumulateHessian', x, 'x');
  const n = h.columns;
  if (x.rank < 1 || x.shape[x.rank - 1] !== n) throw new ShapeError(`accumulateHessian: ${x.name ?? 'x'} ${formatShape(x.shape)} must end in ${n} (the Hessian's columns)`);
  const data = await x.data();
  const rows = x.size / n;
  const row = new Float64Array(n);
  for (let t = 0; t < rows; t++) {
    for (let i = 0; i < n; i++) row[i] = data[t * n + i]!;
    for (let i = 0; i < n; i++) {
      const xi = row[i]!;
      if (xi === 0) continue;
      // Upper triangle only; mirrored below.
      for (let j = i; j < n; j++) h.sum[i * n + j] = h.sum[i * n + j]! + xi * row[j]!;
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) h.sum[i * n + j] = h.sum[j * n + i]!;
  h.batches++;
}

/** The mean Hessian (1/batches) * sum X^T X as a new row-major array. */
export function hessianMatrix(h: Hessian): Float64Array {
  if (h.batches === 0) throw new InputError('hessianMatrix: no batch accumulated yet');
  return h.sum.map((v) => v / h.batches);
}

export interface GptqOptions {
  blockSize: number;
  damping: number;
  actOrder: boolean;
}

/**
 * GPTQ in the reference's full-Hessian act-order form, in float64. `w` is row-major [rows, cols] (not
 * modified), `scales` the per-row scales, `hessian` row-major [cols, cols]. Returns the codes, row-major.
 */
export function gptqCodes(w: ArrayLike<number>, rows: number, cols: number, scales: Float64Array, R: number, hessian: ArrayLike<number>, options: GptqOptions): Int8Array {
  const H = Float64Array.from(hessian);
  // 1. Dead columns (no activation ever reached them): H_jj = 1 and the weights zeroed.
  const dead = new Uint8Array(cols);
  for (let j = 0; j < cols; j++) {
    if (H[j * cols + j] === 0) {
      dead[j] = 1;
      H[j * cols + j] = 1;
    }
  }
  // 2. Damping, relative to the mean diagonal.
  let meanDiag = 0;
  for (let j = 0; j < cols; j++) meanDiag += H[j * cols + j]!;
  const damp = (options.damping * meanDiag) / cols;
  for (let j = 0; j < cols; j++) H[j * cols + j] = H[j * cols + j]! + damp;
  // 3. Act-order: columns with the largest diagonal (most activation energy) are quantized first.
  const perm = Array.from({ length: cols }, (_, j) => j);
  if (options.actOrder) perm.sort((a, b) => H[b * cols + b]! - H[a * cols + a]! || a - b);
  const Hp = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) Hp[i * cols + j] = H[perm[i]! * cols + perm[j]!]!;
  const W = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) W[r * cols + j] = dead[perm[j]!] ? 0 : w[r * cols + perm[j]!]!;
  // 4. U = chol(H^-1), upper: U[j, j:] carries column j's error to the columns after it.
  const U = upperCholeskyOfInverse(Hp, cols);

  // 5-6. Quantize column by column; the error feeds forward inside the block at once and to later blocks lazily.
  const Q = new Int8Array(rows * cols);
  const { blockSize } = options;
  for (let b0 = 0; b0 < cols; b0 += blockSize) {
    const b1 = Math.min(b0 + blockSize, cols);
    const width = b1 - b0;
    const Err = new Float64Array(rows * width);
    for (let j = b0; j < b1; j++) {
      const ujj = U[j * cols + j]!;
      for (let r = 0; r < rows; r++) {
        const row = r * cols;
        const s = scales[r]!;
        const q = quantizeValue(W[row + j]!, s, R);
        Q[row + j] = q;
        const err = (W[row + j]! - q * s) / ujj;
        Err[r * width + j - b0] = err;
        for (let k = j + 1; k < b1; k++) W[row + k] = W[row + k]! - err * U[j * cols + k]!;
      }
    }
    for (let r = 0; r < rows; r++) {
      const row = r * cols;
      for (let j = b0; j < b1; j++) {
        const err = Err[r * width + j - b0]!;
        if (err === 0) continue;
        for (let k = b1; k < cols; k++) W[row + k] = W[row + k]! - err * U[j * cols + k]!;
      }
    }
  }
  // 7. Undo the permutation.
  const codes = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) codes[r * cols + perm[j]!] = Q[r * cols + j]!;
  return codes;
}

/** Lower Cholesky factor L (H = L L^T) of a symmetric n x n matrix, row-major. */
function cholesky(a: Float64Array, n: number, what: string): Float64Array {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j]!;
      for (let k = 0; k < j; k++) s -= L[i * n + k]! * L[j * n + k]!;
      if (i === j) {
        if (!(s > 0)) throw new InputError(`gptq: ${what} is not positive definite (pivot ${i} is ${s}); raise damping`);
        L[i * n + i] = Math.sqrt(s);
      } else {
        L[i * n + j] = s / L[j * n + j]!;
      }
    }
  }
  return L;
}

/** Upper U with U^T U = H^-1: H^-1 = L^-T L^-1 from chol(H), then the Cholesky factor of that, transposed. */
function upperCholeskyOfInverse(H: Float64Array, n: number): Float64Array {
  const L = cholesky(H, n, 'the damped Hessian');
  // Linv = L^-1 (lower), by forward substitution column by column.
  const Linv = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    Linv[c * n + c] = 1 / L[c * n + c]!;
    for (let i = c + 1; i < n; i++) {
      let s = 0;
      for (let k = c; k < i; k++) s += L[i * n + k]! * Linv[k * n + c]!;
      Linv[i * n + c] = -s / L[i * n + i]!;
    }
  }
  // Hinv = Linv^T Linv (symmetric).
  const Hinv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = i; k < n; k++) s += Linv[k * n + i]! * Linv[k * n + j]!;
      Hinv[i * n + j] = s;
      Hinv[j * n + i] = s;
    }
  }
  const L2 = cholesky(Hinv, n, 'the inverse Hessian');
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) U[j * n + i] = L2[i * n + j]!;
  return U;
}

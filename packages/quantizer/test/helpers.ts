import { Rng, type Tensor, tensor } from '@phalanx/core';

/** Seeded standard-normal values times `std`. */
export function normals(n: number, seed: number, std = 1): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => std * rng.normal());
}

export function matrix(rows: number, cols: number, seed: number, name?: string): Tensor {
  return tensor(normals(rows * cols, seed), [rows, cols], { name });
}

/**
 * Calibration activations with correlated columns of unequal energy, as a layer's inputs have:
 * X = Z A diag(d), Z standard normal [n, k], A random [k, k], d spread over two decades.
 */
export function activations(n: number, k: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const z = Array.from({ length: n * k }, () => rng.normal());
  const a = Array.from({ length: k * k }, () => rng.normal() / Math.sqrt(k) + (rng.uniform() < 0.1 ? 1 : 0));
  const d = Array.from({ length: k }, () => 10 ** (2 * rng.uniform() - 1));
  const x = new Float32Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let m = 0; m < k; m++) s += z[i * k + m]! * a[m * k + j]!;
      x[i * k + j] = s * d[j]!;
    }
  }
  return x;
}

/** ||X W^T - X V^T||_F for X [n, k] and W, V [rows, k], in float64. */
export function outputError(x: ArrayLike<number>, n: number, k: number, w: ArrayLike<number>, v: ArrayLike<number>, rows: number): number {
  let ss = 0;
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < rows; r++) {
      let d = 0;
      for (let j = 0; j < k; j++) d += x[i * k + j]! * (w[r * k + j]! - v[r * k + j]!);
      ss += d * d;
    }
  }
  return Math.sqrt(ss);
}

/**
 * Scalar activations shared by kernels in several packages: float64 versions for CPU references and WGSL
 * functions for WebGPU kernels, so a fused kernel elsewhere (e.g. the state cell's MLP) computes exactly what
 * the ops here compute.
 */

/** erf from the all-positive series of Abramowitz-Stegun 7.1.6 (no cancellation); it is ±1 in float64 past |x| = 6. */
export function erf(x: number): number {
  if (Math.abs(x) >= 6) return Math.sign(x);
  const x2 = 2 * x * x;
  let term = x;
  let sum = x;
  for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
    term *= x2 / (2 * n + 1);
    sum += term;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}

/** GELU with erf, in float64. */
export const geluErf64 = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

/** SiLU in float64. */
export const silu64 = (x: number): number => x / (1 + Math.exp(-x));

/** WGSL `silu(x)`, `tanh_safe(x)`, `erfc_approx(x)` and `gelu(x, tanh_form)` (tanh_form 0: the exact erf form). */
export const ACTIVATIONS_WGSL = /* wgsl */ `
fn silu(x: f32) -> f32 { return x / (1.0 + exp(-x)); }
// tanh(±10) is ±1 in f32; clamping keeps drivers whose tanh divides exponentials from overflowing to NaN
fn tanh_safe(x: f32) -> f32 { return tanh(clamp(x, -10.0, 10.0)); }
// erfc with relative error < 1.2e-7 everywhere (the Chebyshev fit erfcc of Numerical Recipes)
fn erfc_approx(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807
        + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  let r = t * exp(p - z * z);
  return select(2.0 - r, r, x >= 0.0);
}
fn gelu(x: f32, tanh_form: u32) -> f32 {
  if (tanh_form != 0u) { return 0.5 * x * (1.0 + tanh_safe(0.7978845608 * (x + 0.044715 * x * x * x))); }
  // 1 + erf(z) = erfc(-z), which keeps its relative accuracy where x is very negative
  return 0.5 * x * erfc_approx(-0.70710678118654752 * x);
}
`;

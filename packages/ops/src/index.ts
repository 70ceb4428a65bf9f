/**
 * @phalanx/ops: the shared layers every model preset needs, on the CPU (float64 accumulation) and WebGPU.
 * Importing it registers its kernels on both backends.
 */
export { ACTIVATIONS_WGSL, erf, geluErf64, silu64 } from './activations.js';
export * from './linear.js';
export * from './layers.js';
export * from './rope.js';
export * from './sampling.js';
/** WGSL for kernels of other packages built like ops' own (the packed GEMV of @phalanx/quantizer). */
export { gemvLaneSum } from './webgpu/linear.js';

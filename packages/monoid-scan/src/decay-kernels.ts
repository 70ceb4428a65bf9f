/**
 * Kernels of 'monoidLogDecay' (./decay.ts) on the CPU (float64) and WebGPU (f32), registered on import.
 * Both compute logsigmoid(s) = min(s, 0) - log1p(exp(-|s|)) with s = sign * z: every exp argument is <= 0.
 */
import { type Tensor, empty, registerCpuMap, registerKernel } from '@phalanx/core';
import { type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import type { LogDecayAttrs } from './decay.js';

const WG = 256;

/** log a = logsigmoid(sign * z) in float64, clamped to >= floor when set: what 'monoidLogDecay' computes per element. */
export function logGate64(z: number, sign: 1 | -1, floor: number | null): number {
  const s = sign * z;
  const v = Math.min(s, 0) - Math.log1p(Math.exp(-Math.abs(s)));
  return floor === null ? v : Math.max(v, floor);
}

registerCpuMap<LogDecayAttrs>('monoidLogDecay', ([z], i, { sign, floor }) => logGate64(z![i]!, sign, floor));

// WGSL has no log1p, and its log is only accurate to 2^-21 absolute near 1, while log a of a decay near 1 is
// tiny. For e in [0, 1], log1p(e) = 2 atanh(y) with y = e / (2 + e) <= 1/3, and the odd series of atanh to
// y^15 is within 1e-9 relative: no log at all.
const ATANH_SERIES = Array.from({ length: 8 }, (_, k) => (1 / (2 * k + 1)).toPrecision(9)).reduceRight((inner, c) => `${c} + y2 * (${inner})`);
/** WGSL `log_gate(s) -> f32`: logsigmoid(s) = min(s, 0) - log1p(exp(-|s|)), every exp argument <= 0. */
export const LOG_GATE_WGSL = /* wgsl */ `
fn log1p_unit(e: f32) -> f32 {
  let y = e / (2.0 + e);
  let y2 = y * y;
  return 2.0 * y * (${ATANH_SERIES});
}
fn log_gate(s: f32) -> f32 { return min(s, 0.0) - log1p_unit(exp(-abs(s))); }`;

registerKernel({
  op: 'monoidLogDecay',
  backend: 'webgpu',
  fn: async ([z]: Tensor[], { sign, floor }: LogDecayAttrs, backend: WebGPUBackend) => {
    const out = empty(z!.shape, { backend });
    const clamp = floor !== null;
    const prog = cached(`monoid-scan:logDecay:${z!.dtype}:${clamp}`, () =>
      program({
        name: 'monoidLogDecay',
        inputs: { z: z!.dtype },
        outputs: { out: 'f32' },
        uniforms: clamp ? { n: 'u32', sign: 'f32', floor: 'f32' } : { n: 'u32', sign: 'f32' },
        workgroupSize: WG,
        helpers: LOG_GATE_WGSL,
        main: `  if (idx >= u.n) { return; }
  let v = log_gate(u.sign * load_z(idx));
  store_out(idx, ${clamp ? 'max(v, u.floor)' : 'v'});`,
      }),
    );
    await backend.run(prog, [z!], [out], clamp ? { n: out.size, sign, floor } : { n: out.size, sign }, grid1d(out.size, WG));
    return out;
  },
});

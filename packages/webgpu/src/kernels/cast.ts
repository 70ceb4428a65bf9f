import { type CastAttrs, type DType, type Tensor, empty, registerKernel } from '@phalanx/core';
import type { WebGPUBackend } from '../backend.js';
import { type Program, gpuByteSize, grid1d, program } from '../wgsl.js';
import { cached } from './elementwise.js';

const WG = 256;

/** One invocation writes one output word: a single 32-bit element, or two packed 16-bit ones. */
function castProgram(from: DType, to: DType): Program {
  return cached(`cast:${from}:${to}`, () => {
    let main: string;
    if (to === 'f16' || to === 'bf16') {
      const enc = to === 'f16' ? 'f32_to_f16_bits' : 'f32_to_bf16_bits';
      main = `  if (idx * 2u >= u.n) { return; }
  let lo = ${enc}(load_x(idx * 2u));
  let hi = select(0u, ${enc}(load_x(idx * 2u + 1u)), idx * 2u + 1u < u.n);
  out[idx] = lo | (hi << 16u);`;
    } else {
      // integer -> integer saturates to the target's range; float -> integer uses WGSL's saturating conversion
      const value =
        to === 'f32'
          ? 'load_x(idx)'
          : to === 'i32'
            ? from === 'i32'
              ? 'x[idx]'
              : from === 'u32'
                ? 'i32(min(x[idx], 0x7fffffffu))'
                : 'i32(load_x(idx))'
            : from === 'u32'
              ? 'x[idx]'
              : from === 'i32'
                ? 'u32(max(x[idx], 0))'
                : 'u32(load_x(idx))';
      main = `  if (idx >= u.n) { return; }\n  out[idx] = ${value};`;
    }
    return program({ name: 'cast', inputs: { x: from }, outputs: { out: to }, uniforms: { n: 'u32' }, workgroupSize: WG, main });
  });
}

// Registered on import (the package lists this file under sideEffects).
registerKernel({
  op: 'copy',
  backend: 'webgpu',
  fn: ([x]: Tensor[], _attrs: unknown, backend: WebGPUBackend) => {
    const out = empty(x!.shape, { dtype: x!.dtype, backend });
    backend.copyBuffer(x!, out, gpuByteSize(x!.dtype, x!.size));
    return out;
  },
});
registerKernel({
  op: 'cast',
  backend: 'webgpu',
  fn: async ([x]: Tensor[], { dtype }: CastAttrs, backend: WebGPUBackend) => {
    const out = empty(x!.shape, { dtype, backend });
    const words = dtype === 'f16' || dtype === 'bf16' ? Math.ceil(x!.size / 2) : x!.size;
    await backend.run(castProgram(x!.dtype, dtype), [x!], [out], { n: x!.size }, grid1d(words, WG));
    return out;
  },
});

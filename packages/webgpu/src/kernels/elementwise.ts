import { type BinaryAttrs, type DType, type ScaleAttrs, type Tensor, empty, registerKernel } from '@phalanx/core';
import type { WebGPUBackend } from '../backend.js';
import { type Program, grid1d, program } from '../wgsl.js';

const WG = 256;
/** Broadcast shapes and strides travel as two vec4s each. */
const MAX_RANK = 8;

const programs = new Map<string, Program>();

/** Builds a program once per key (kernels are generated per dtype and rank, and reused). */
export function cached(key: string, build: () => Program): Program {
  let p = programs.get(key);
  if (!p) programs.set(key, (p = build()));
  return p;
}

function binaryProgram(op: 'add' | 'mul', a: DType, b: DType, out: DType, rank: number): Program {
  return cached(`binary:${op}:${a}:${b}:${out}:${rank}`, () => {
    const sym = op === 'add' ? '+' : '*';
    // integer results use the raw i32/u32 arrays; float results go through the upcasting loaders
    const value = out === 'f32' ? `load_a(ia) ${sym} load_b(ib)` : `a[ia] ${sym} b[ib]`;
    const index =
      rank === 0
        ? `let ia = idx; let ib = idx;`
        : `var ia = 0u; var ib = 0u; var rem = idx;
  for (var k = 0u; k < ${rank}u; k++) {
    let d = ${rank - 1}u - k;
    let dim = u.shape[d >> 2u][d & 3u];
    let c = rem % dim;
    rem = rem / dim;
    ia += c * u.aStrides[d >> 2u][d & 3u];
    ib += c * u.bStrides[d >> 2u][d & 3u];
  }`;
    return program({
      name: op,
      inputs: { a, b },
      outputs: { out },
      uniforms: rank === 0 ? { n: 'u32' } : { n: 'u32', shape: 'array<vec4<u32>, 2>', aStrides: 'array<vec4<u32>, 2>', bStrides: 'array<vec4<u32>, 2>' },
      workgroupSize: WG,
      main: `  if (idx >= u.n) { return; }\n  ${index}\n  out[idx] = ${value};`,
    });
  });
}

function binary(op: 'add' | 'mul') {
  return async ([a, b]: Tensor[], attrs: BinaryAttrs, backend: WebGPUBackend) => {
    const out = empty(attrs.outShape, { dtype: attrs.outDType, backend });
    const rank = attrs.aStrides ? attrs.outShape.length : 0;
    const uniforms: Record<string, number | number[]> = rank === 0 ? { n: out.size } : { n: out.size, shape: attrs.outShape, aStrides: attrs.aStrides!, bStrides: attrs.bStrides! };
    await backend.run(binaryProgram(op, a!.dtype, b!.dtype, attrs.outDType, rank), [a!, b!], [out], uniforms, grid1d(out.size, WG));
    return out;
  };
}

const rankFits = ([a, b]: Tensor[], attrs: BinaryAttrs) => attrs.outShape.length <= MAX_RANK || `broadcast rank ${attrs.outShape.length} > ${MAX_RANK} (a ${a!.rank}, b ${b!.rank})`;

// Registered on import (the package lists this file under sideEffects).
registerKernel({ op: 'add', backend: 'webgpu', fn: binary('add'), verify: rankFits });
registerKernel({ op: 'mul', backend: 'webgpu', fn: binary('mul'), verify: rankFits });
registerKernel({
  op: 'scale',
  backend: 'webgpu',
  fn: async ([x]: Tensor[], { scale, bias }: ScaleAttrs, backend: WebGPUBackend) => {
    const out = empty(x!.shape, { backend });
    const prog = cached(`scale:${x!.dtype}`, () =>
      program({
        name: 'scale',
        inputs: { x: x!.dtype },
        outputs: { out: 'f32' },
        uniforms: { n: 'u32', scale: 'f32', bias: 'f32' },
        workgroupSize: WG,
        main: `  if (idx >= u.n) { return; }\n  store_out(idx, load_x(idx) * u.scale + u.bias);`,
      }),
    );
    await backend.run(prog, [x!], [out], { n: out.size, scale, bias }, grid1d(out.size, WG));
    return out;
  },
});

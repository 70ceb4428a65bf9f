import { type DType, type SumAttrs, type Tensor, empty, registerKernel } from '@phalanx/core';
import type { WebGPUBackend } from '../backend.js';
import { type Program, grid1d, program } from '../wgsl.js';
import { cached } from './elementwise.js';

const WG = 256;

/** One invocation per output, looping over the reduced axis: for many outputs or short rows. */
function sumPerThread(dtype: DType): Program {
  return cached(`sum-thread:${dtype}`, () =>
    program({
      name: 'sum',
      inputs: { x: dtype },
      outputs: { out: 'f32' },
      uniforms: { outputs: 'u32', n: 'u32', inner: 'u32' },
      workgroupSize: WG,
      main: `  if (idx >= u.outputs) { return; }
  let base = (idx / u.inner) * u.n * u.inner + idx % u.inner;
  var acc = 0.0;
  for (var j = 0u; j < u.n; j++) { acc += load_x(base + j * u.inner); }
  store_out(idx, acc);`,
    }),
  );
}

/**
 * `parts` workgroups per output, each reducing a contiguous slice of the axis with a strided loop and a
 * tree in workgroup memory; partial sums are added by a second, per-thread pass.
 */
function sumPerWorkgroup(dtype: DType): Program {
  return cached(`sum-workgroup:${dtype}`, () =>
    program({
      name: 'sum',
      inputs: { x: dtype },
      outputs: { out: 'f32' },
      uniforms: { total: 'u32', n: 'u32', inner: 'u32', parts: 'u32', chunk: 'u32' },
      workgroupSize: WG,
      helpers: `var<workgroup> partial: array<f32, ${WG}>;`,
      main: `  let w = wid.x + wid.y * nwg.x;
  if (w >= u.total) { return; } // workgroup-uniform, so the barriers below stay in uniform control flow
  let o = w / u.parts;
  let part = w % u.parts;
  let base = (o / u.inner) * u.n * u.inner + o % u.inner;
  let end = min(u.n, (part + 1u) * u.chunk);
  var acc = 0.0;
  for (var j = part * u.chunk + lid.x; j < end; j += ${WG}u) { acc += load_x(base + j * u.inner); }
  partial[lid.x] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid.x < s) { partial[lid.x] += partial[lid.x + s]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { store_out(w, partial[0]); }`,
    }),
  );
}

async function sum([x]: Tensor[], { outer, n, inner, outShape }: SumAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const outputs = outer * inner;
  const out = empty(outShape, { backend });
  if (n <= 64 || outputs >= 4096) {
    await backend.run(sumPerThread(x!.dtype), [x!], [out], { outputs, n, inner }, grid1d(outputs, WG));
    return out;
  }
  // enough workgroups to fill the device, each with at least a few thousand elements
  const parts = outputs >= 256 ? 1 : Math.max(1, Math.min(Math.ceil(n / 4096), Math.ceil(512 / outputs)));
  const chunk = Math.ceil(n / parts);
  const workgroups = grid1d(outputs * parts, 1);
  if (parts === 1) {
    await backend.run(sumPerWorkgroup(x!.dtype), [x!], [out], { total: outputs * parts, n, inner, parts, chunk }, workgroups);
    return out;
  }
  const partials = empty([outputs, parts], { backend });
  await backend.run(sumPerWorkgroup(x!.dtype), [x!], [partials], { total: outputs * parts, n, inner, parts, chunk }, workgroups);
  await backend.run(sumPerThread('f32'), [partials], [out], { outputs, n: parts, inner: 1 }, grid1d(outputs, WG));
  partials.dispose();
  return out;
}

// Registered on import (the package lists this file under sideEffects).
registerKernel({ op: 'sum', backend: 'webgpu', fn: sum });

import { type Tensor, empty, registerKernel, tensor } from '@phalanx/core';
import { type Program, type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import { type AttnOutputAttrs, type SmearGateAttrs, XSA_EPS } from './gates.js';

const WG = 64;

/**
 * One invocation per (token, head) row: XSA's projection needs the row's dot product with v and v's norm
 * before any output, and the gate is one dot product of `width` per row, so both fuse into one pass over D.
 */
function attnOutputProgram(a: AttnOutputAttrs, inputs: Tensor[]): Program {
  const names = ['y', ...(a.xsa ? ['v'] : []), ...(a.gate ? ['src', 'weight'] : [])];
  const dtypes = Object.fromEntries(names.map((n, i) => [n, inputs[i]!.dtype]));
  return cached(`gated:attnOutput:${JSON.stringify(dtypes)}`, () =>
    program({
      name: 'attnOutput',
      inputs: dtypes,
      outputs: { out: 'f32' },
      uniforms: { rows: 'u32', H: 'u32', D: 'u32', Hkv: 'u32', C: 'u32', width: 'u32' },
      workgroupSize: WG,
      main: `  if (idx >= u.rows) { return; }
  let n = idx / u.H;
  let h = idx % u.H;
  let at = idx * u.D;
  ${
    a.xsa
      ? `let vAt = (n * u.Hkv + h / (u.H / u.Hkv)) * u.D;
  var dt = 0.0;
  var norm2 = 0.0;
  for (var d = 0u; d < u.D; d++) {
    let vd = load_v(vAt + d);
    dt += load_y(at + d) * vd;
    norm2 += vd * vd;
  }
  let c = dt / max(norm2, ${XSA_EPS ** 2});`
      : ''
  }
  var g = 1.0;
  ${
    a.gate
      ? `var z = 0.0;
  for (var k = 0u; k < u.width; k++) { z += load_weight(h * u.width + k) * load_src(n * u.C + k); }
  g = 2.0 / (1.0 + exp(-z));`
      : ''
  }
  for (var d = 0u; d < u.D; d++) { out[at + d] = g * (load_y(at + d)${a.xsa ? ' - c * load_v(vAt + d)' : ''}); }`,
    }),
  );
}

async function attnOutput(inputs: Tensor[], a: AttnOutputAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const out = empty(a.outShape, { backend });
  const rows = a.N * a.H;
  if (out.size === 0) return out;
  const uniforms = { rows, H: a.H, D: a.D, Hkv: a.Hkv, C: a.C, width: a.width };
  await backend.run(attnOutputProgram(a, inputs), inputs, [out], uniforms, grid1d(rows, WG, backend.limits.maxComputeWorkgroupsPerDimension));
  return out;
}

/** One invocation per element; each recomputes its token's gate (a dot product of `width`, 12 in the seed). */
function smearProgram([x, w, lambda]: Tensor[]): Program {
  return cached(`gated:smear:${x!.dtype}:${w!.dtype}:${lambda!.dtype}`, () =>
    program({
      name: 'smearGate',
      inputs: { x: x!.dtype, w: w!.dtype, lambda: lambda!.dtype, reset: 'u32' },
      outputs: { out: 'f32' },
      uniforms: { n: 'u32', T: 'u32', C: 'u32', width: 'u32' },
      workgroupSize: WG,
      main: `  if (idx >= u.n) { return; }
  let t = idx / u.C % u.T;
  var y = load_x(idx);
  if (t > 0u && reset[t] == 0u) {
    let row = idx - idx % u.C;
    var z = 0.0;
    for (var c = 0u; c < u.width; c++) { z += load_w(c) * load_x(row + c); }
    y += load_lambda(0u) / (1.0 + exp(-z)) * load_x(idx - u.C);
  }
  out[idx] = y;`,
    }),
  );
}

async function smearGate(inputs: Tensor[], a: SmearGateAttrs, backend: WebGPUBackend): Promise<Tensor> {
  const out = empty(a.outShape, { backend });
  if (out.size === 0) return out;
  // one flag per position: 1 where a document starts
  const flags = new Uint32Array(a.T);
  for (const p of a.resetAt) if (p < a.T) flags[p] = 1;
  const reset = tensor(flags, [a.T], { dtype: 'u32', backend });
  await backend.run(smearProgram(inputs), [...inputs, reset], [out], { n: out.size, T: a.T, C: a.C, width: a.width }, grid1d(out.size, WG, backend.limits.maxComputeWorkgroupsPerDimension));
  reset.dispose();
  return out;
}

// Registered on import (listed under sideEffects).
registerKernel({ op: 'attnOutput', backend: 'webgpu', fn: attnOutput });
registerKernel({ op: 'smearGate', backend: 'webgpu', fn: smearGate });

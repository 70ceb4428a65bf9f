import { type Tensor, empty, registerKernel, tensor } from '@phalanx/core';
import { type WebGPUBackend, cached, grid1d, program } from '@phalanx/webgpu';
import type { RopeAttrs, RopePairing } from '../rope.js';

const WG = 256;

/** Where element j (< rot) of a head finds its pair index i and partner, and whether it is the pair's first. */
const PAIRS: Record<RopePairing, string> = {
  half: `let half = u.rot / 2u;
  let i = j % half;
  let first = j < half;
  let partner = select(idx - half, idx + half, first);`,
  interleaved: `let i = j / 2u;
  let first = (j & 1u) == 0u;
  let partner = select(idx - 1u, idx + 1u, first);`,
};

/** cos and sin as f32 tensors [rows, rotaryDim / 2] on the backend. */
function upload({ cos, sin, rotaryDim }: RopeAttrs, backend: WebGPUBackend): [Tensor, Tensor] {
  const shape = [cos.length / (rotaryDim / 2), rotaryDim / 2];
  return [tensor(Float32Array.from(cos), shape, { backend }), tensor(Float32Array.from(sin), shape, { backend })];
}

registerKernel({
  op: 'rope',
  backend: 'webgpu',
  fn: async ([x]: Tensor[], attrs: RopeAttrs, backend: WebGPUBackend) => {
    const { seq, heads, dim, rotaryDim, pairing, batchStride } = attrs;
    const prog = cached(`ops:rope:${x!.dtype}:${pairing}`, () =>
      program({
        name: 'rope',
        inputs: { x: x!.dtype, cosTable: 'f32', sinTable: 'f32' },
        outputs: { out: 'f32' },
        uniforms: { n: 'u32', dim: 'u32', heads: 'u32', seq: 'u32', rot: 'u32', batchStride: 'u32' },
        workgroupSize: WG,
        main: `  if (idx >= u.n) { return; }
  let j = idx % u.dim;
  if (j >= u.rot) { store_out(idx, load_x(idx)); return; }
  let token = idx / (u.dim * u.heads);
  let row = (token / u.seq) * u.batchStride + token % u.seq;
  ${PAIRS[pairing]}
  let c = cosTable[row * (u.rot / 2u) + i];
  let s = sinTable[row * (u.rot / 2u) + i];
  let other = load_x(partner);
  store_out(idx, load_x(idx) * c + select(other, -other, first) * s);`,
      }),
    );
    // the caller's table keeps its upload for the next call; otherwise this call's upload is dropped after it
    const kept = attrs.table?.uploads.get(backend);
    const [cosTable, sinTable] = kept ?? upload(attrs, backend);
    if (!kept) attrs.table?.uploads.set(backend, [cosTable, sinTable]);
    const out = empty(x!.shape, { backend });
    await backend.run(prog, [x!, cosTable, sinTable], [out], { n: out.size, dim, heads, seq, rot: rotaryDim, batchStride }, grid1d(out.size, WG));
    if (!attrs.table) [cosTable, sinTable].forEach((t) => t.dispose());
    return out;
  },
});

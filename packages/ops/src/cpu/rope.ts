import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import type { RopeAttrs } from '../rope.js';

registerKernel({
  op: 'rope',
  backend: 'cpu',
  fn: ([x]: Tensor[], { batch, seq, heads, dim, rotaryDim, pairing, cos, sin, batchStride }: RopeAttrs) => {
    const out = empty(x!.shape, { backend: cpu });
    const o = cpuStorage(out);
    const v = cpuValues(x!);
    const half = rotaryDim / 2;
    // offsets of pair i's two dims within a head
    const first = (i: number) => (pairing === 'half' ? i : 2 * i);
    const second = (i: number) => (pairing === 'half' ? i + half : 2 * i + 1);
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < seq; t++) {
        const table = (b * batchStride + t) * half;
        for (let h = 0; h < heads; h++) {
          const base = ((b * seq + t) * heads + h) * dim;
          for (let i = 0; i < half; i++) {
            const c = cos[table + i]!;
            const s = sin[table + i]!;
            const p = base + first(i);
            const q = base + second(i);
            o[p] = v[p]! * c - v[q]! * s;
            o[q] = v[q]! * c + v[p]! * s;
          }
          for (let j = rotaryDim; j < dim; j++) o[base + j] = v[base + j]!;
        }
      }
    }
    return out;
  },
});

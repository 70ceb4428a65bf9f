import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import { chunkHead } from './chunk.js';
import type { MonoidScanAttrs } from './index.js';
import { type HeadInputs, type HeadOutputs, recurrentHead } from './reference.js';
import { scanHead } from './scan.js';

function solver(a: MonoidScanAttrs): (x: HeadInputs) => HeadOutputs {
  switch (a.mode) {
    case 'chunk':
      return (x) => chunkHead(x, a);
    case 'scan':
      return scanHead;
    default: // 'recurrent', and 'auto': on the CPU the recurrence is the cheapest form
      return recurrentHead;
  }
}

/**
 * Both ops: each (sequence, head) is gathered into float64 rows, solved by the mode's form, and its rows
 * scattered back. Token t of batch b, head h is row (b T + t) H + h of q, k, v and logDecay.
 */
function monoid(inputs: Tensor[], a: MonoidScanAttrs): Tensor[] {
  const { T, H, Dk, Dv, scalarDecay } = a;
  const [q, k, v, logDecay, initial] = inputs.map(cpuValues);
  const output = empty(a.outputShape, { backend: cpu });
  const finalState = empty(a.stateShape, { backend: cpu });
  const out = cpuStorage(output);
  const fin = cpuStorage(finalState);
  const run = solver(a);
  a.sequences.forEach(({ batch, start, end }, n) => {
    const len = end - start;
    for (let h = 0; h < H; h++) {
      const rowOf = (t: number) => (batch * T + start + t) * H + h;
      const rows = (src: ArrayLike<number>, width: number) => {
        const dst = new Float64Array(len * width);
        for (let t = 0; t < len; t++) for (let i = 0; i < width; i++) dst[t * width + i] = src[rowOf(t) * width + i]!;
        return dst;
      };
      const decay = new Float64Array(len * Dk);
      for (let t = 0; t < len; t++) for (let i = 0; i < Dk; i++) decay[t * Dk + i] = scalarDecay ? logDecay![rowOf(t)]! : logDecay![rowOf(t) * Dk + i]!;
      const base = (n * H + h) * Dk * Dv;
      const state = initial ? Float64Array.from({ length: Dk * Dv }, (_, i) => initial[base + i]!) : new Float64Array(Dk * Dv);
      const y = run({ T: len, Dk, Dv, q: rows(q!, Dk), k: rows(k!, Dk), v: rows(v!, Dv), logDecay: decay, state });
      for (let t = 0; t < len; t++) out.set(y.output.subarray(t * Dv, (t + 1) * Dv), rowOf(t) * Dv);
      fin.set(y.state, base);
    }
  });
  return [output, finalState];
}

// Registered on import (listed under sideEffects). CPU only: a WebGPU input has no kernel yet and fails with
// MissingKernelError rather than running here.
registerKernel({ op: 'monoidScan', backend: 'cpu', fn: monoid });
registerKernel({ op: 'monoidStep', backend: 'cpu', fn: monoid });

import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import { chunkHead } from './chunk.js';
import { logGate64 } from './decay-kernels.js';
import { silu64 } from '@phalanx/ops';
import type { MonoidScanAttrs, StepPrologueAttrs } from './index.js';
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
  const [q, k, v, logDecay, initial] = a.prologue ? withPrologue(inputs.map(cpuValues), a, a.prologue) : inputs.map(cpuValues);
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

/**
 * monoidStep's prologue in float64: q, k normed per (token, head) row of Dk values and log a from z, as
 * rmsNorm and logDecay compute them. Returns the inputs with q, k and logDecay replaced.
 */
function withPrologue(values: ArrayLike<number>[], a: MonoidScanAttrs, p: StepPrologueAttrs): ArrayLike<number>[] {
  const [q, k, v, z, initial, qNorm, kNorm] = values as [ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>];
  const { H, Dk } = a;
  const norm = (x: ArrayLike<number>, w: ArrayLike<number>, scale: number, silu: boolean) => {
    const out = new Float64Array(x.length);
    for (let row = 0; row < x.length / Dk; row++) {
      let ss = 0;
      for (let i = 0; i < Dk; i++) ss += x[row * Dk + i]! ** 2;
      const inv = scale / Math.sqrt(ss / Dk + p.eps);
      const w0 = p.perHead ? (row % H) * Dk : 0;
      for (let i = 0; i < Dk; i++) {
        const y = x[row * Dk + i]! * inv * w[w0 + i]!;
        out[row * Dk + i] = silu ? silu64(y) : y;
      }
    }
    return out;
  };
  const logA = Float64Array.from(z, (zi) => logGate64(zi, p.sign, p.floor));
  return [norm(q, qNorm, p.qScale, false), norm(k, kNorm, 1, p.kSilu), v, logA, initial];
}

// Registered on import (listed under sideEffects). CPU only: a WebGPU input has no kernel yet and fails with
// MissingKernelError rather than running here.
registerKernel({ op: 'monoidScan', backend: 'cpu', fn: monoid });
registerKernel({ op: 'monoidStep', backend: 'cpu', fn: monoid });

import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import { chunkLane } from './chunk.js';
import type { HolographicAttrs } from './index.js';
import { type Lane, type LaneOutputs, directLane, normScale, recurrentLane } from './reference.js';
import { pairOffsets } from './rotation.js';

function solver(a: HolographicAttrs): (x: Lane) => LaneOutputs {
  switch (a.mode) {
    case 'chunk':
      return (x) => chunkLane(x, a.chunkSize);
    case 'direct':
      return (x) => directLane(x, a.rotation.angles);
    default: // 'recurrent', and 'auto': on the CPU the recurrence is the cheapest form
      return recurrentLane;
  }
}

/** Each (sequence, complex lane) is gathered into float64, solved by the mode's form, and scattered back. */
function integral([z, initial]: Tensor[], a: HolographicAttrs): Tensor[] {
  const { B, T, D, rotation, offsets, normalize } = a;
  const zv = cpuValues(z!);
  const init = initial ? cpuValues(initial) : undefined;
  const output = empty(a.outputShape, { backend: cpu });
  const finalState = empty(a.stateShape, { backend: cpu });
  const out = cpuStorage(output);
  const fin = cpuStorage(finalState);
  const half = rotation.width / 2;
  const run = solver(a);
  for (let b = 0; b < B; b++) {
    for (let pair = 0; pair < D / 2; pair++) {
      const [re, im] = pairOffsets(pair, rotation);
      const row = (t: number) => (b * T + t) * D;
      const lane = new Float64Array(2 * T);
      for (let t = 0; t < T; t++) lane.set([zv[row(t) + re]!, zv[row(t) + im]!], 2 * t);
      const state: [number, number] = init ? [init[b * D + re]!, init[b * D + im]!] : [0, 0];
      const y = run({ T, z: lane, state, omega: rotation.invFreq[pair % half]!, offset: offsets[b]! });
      for (let t = 0; t < T; t++) {
        const scale = normScale(normalize, offsets[b]! + t);
        out[row(t) + re] = y.output[2 * t]! * scale;
        out[row(t) + im] = y.output[2 * t + 1]! * scale;
      }
      [fin[b * D + re], fin[b * D + im]] = y.state;
    }
  }
  return [output, finalState];
}

// Registered on import (listed under sideEffects).
registerKernel({ op: 'holographicIntegral', backend: 'cpu', fn: integral });

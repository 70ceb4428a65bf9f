import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import type { StateCellAttrs } from './index.js';
import { type ParamValues, cellRow } from './reference.js';

/** Each row of S in float64 through the reference cell. */
function cell([S, ...params]: Tensor[], a: StateCellAttrs): Tensor {
  const p: ParamValues = Object.fromEntries(a.names.map((n, i) => [n, cpuValues(params[i]!)]));
  const s = cpuValues(S!);
  const out = empty(a.outShape, { backend: cpu });
  const o = cpuStorage(out);
  const row = new Float64Array(a.D);
  for (let r = 0; r < a.rows; r++) {
    for (let i = 0; i < a.D; i++) row[i] = s[r * a.D + i]!;
    cellRow(row, p, a);
    o.set(row, r * a.D);
  }
  return out;
}

// Registered on import (listed under sideEffects).
registerKernel({ op: 'stateCell', backend: 'cpu', fn: cell });

import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import { type AttnOutputAttrs, type SmearGateAttrs, XSA_EPS } from './gates.js';

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

/** The literal formulas in float64, one (token, head) row at a time: XSA, then the gate. */
function attnOutput(inputs: Tensor[], { N, H, D, Hkv, xsa, gate, C, width, outShape }: AttnOutputAttrs): Tensor {
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const [y, v, src, weight] = (xsa ? inputs : [inputs[0]!, undefined, ...inputs.slice(1)]).map((t) => (t ? cpuValues(t) : undefined));
  const row = new Float64Array(D);
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < H; h++) {
      const at = (n * H + h) * D;
      for (let d = 0; d < D; d++) row[d] = y![at + d]!;
      if (xsa) {
        const vAt = (n * Hkv + Math.floor(h / (H / Hkv))) * D;
        let [dot, norm2] = [0, 0];
        for (let d = 0; d < D; d++) {
          dot += row[d]! * v![vAt + d]!;
          norm2 += v![vAt + d]! ** 2;
        }
        const c = dot / Math.max(norm2, XSA_EPS ** 2); // (y . v^) v^ = (y . v) v / |v|^2
        for (let d = 0; d < D; d++) row[d] = row[d]! - c * v![vAt + d]!;
      }
      let g = 1;
      if (gate) {
        let z = 0;
        for (let c = 0; c < width; c++) z += weight![h * width + c]! * src![n * C + c]!;
        g = 2 * sigmoid(z);
      }
      for (let d = 0; d < D; d++) o[at + d] = g * row[d]!;
    }
  }
  return out;
}

function smearGate([x, w, lambda]: Tensor[], { B, T, C, width, resetAt, outShape }: SmearGateAttrs): Tensor {
  const out = empty(outShape, { backend: cpu });
  const o = cpuStorage(out);
  const [xv, wv, lv] = [x!, w!, lambda!].map(cpuValues);
  const reset = new Set(resetAt);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const at = (b * T + t) * C;
      let z = 0;
      for (let c = 0; c < width; c++) z += wv![c]! * xv![at + c]!;
      const mixes = t > 0 && !reset.has(t);
      const m = lv![0]! * sigmoid(z);
      for (let c = 0; c < C; c++) o[at + c] = xv![at + c]! + (mixes ? m * xv![at - C + c]! : 0);
    }
  }
  return out;
}

// Registered on import (listed under sideEffects).
registerKernel({ op: 'attnOutput', backend: 'cpu', fn: attnOutput });
registerKernel({ op: 'smearGate', backend: 'cpu', fn: smearGate });

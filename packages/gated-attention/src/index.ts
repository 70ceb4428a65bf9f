/**
 * @phalanx/gated-attention: the parameter-golf gates (spec parcae-golf 3.1 and 3.4), on the CPU (float64) and
 * WebGPU. Importing the package registers both.
 *  - AttnOutGate: each head's output times 2 sigmoid(W x[:width]) (zero W is the identity);
 *  - XSA: each head's output minus its projection on its own token's normalised value;
 *  - SmearGate: x_t + lambda sigmoid(w . x_t[:width]) x_{t-1}, optionally reset at document starts.
 *
 * @example
 * import { randn, zeros } from '@phalanx/core';
 * import { smearGate, xsaOutGate } from '@phalanx/gated-attention';
 * const [T, H, Hkv, D, C] = [16, 8, 4, 64, 512];
 * const x = randn([T, C], { seed: 1 });
 * const e = await smearGate(x, zeros([12]), 0.3, { resetAt: [0, 9] }); // cuSeqlens works as resetAt
 * const y = randn([T, H, D], { seed: 2 }), v = randn([T, Hkv, D], { seed: 3 });
 * const out = await xsaOutGate(y, v, x, zeros([H, 12])); // [T, H, D]
 */
import './reference.js';
import './webgpu.js';

export { type AttnOutputAttrs, type SmearGateAttrs, type SmearGateOptions, XSA_EPS, attnOutGate, smearGate, xsa, xsaOutGate } from './gates.js';

import { hillisSteele } from '@phalanx/core';
import type { HeadInputs, HeadOutputs } from './reference.js';
import { readout } from './reference.js';

/**
 * An element of the monoid (spec 1.4): an accumulated log-decay per key dim and a Dk x Dv state (row-major,
 * row = key dim). A token is (logDecay_t, k_t v_t^T); an initial state h0 is (0, h0).
 */
export interface MonoidElement {
  logDecay: Float64Array;
  state: Float64Array;
}

/** The neutral element (0, 0): no decay, empty state. Padding tokens (k = v = 0, logDecay = 0) are this. */
export function identity(dk: number, dv: number): MonoidElement {
  return { logDecay: new Float64Array(dk), state: new Float64Array(dk * dv) };
}

/** a then b: (la + lb, diag(exp(lb)) A + B). Associative, not commutative. */
export function combine(a: MonoidElement, b: MonoidElement): MonoidElement {
  const dk = a.logDecay.length;
  const dv = a.state.length / dk;
  const logDecay = new Float64Array(dk);
  const state = new Float64Array(dk * dv);
  for (let i = 0; i < dk; i++) {
    logDecay[i] = a.logDecay[i]! + b.logDecay[i]!;
    const decay = Math.exp(b.logDecay[i]!);
    for (let j = 0; j < dv; j++) state[i * dv + j] = decay * a.state[i * dv + j]! + b.state[i * dv + j]!;
  }
  return { logDecay, state };
}

/** Inclusive prefix products of the elements, in log2(n) rounds (core's `hillisSteele` with this monoid). */
export function prefixScan(elements: readonly MonoidElement[]): MonoidElement[] {
  return hillisSteele(elements, combine);
}

/** Mode 'scan': the state after token t is the prefix product (0, h0) + e_1 + ... + e_t. */
export function scanHead({ T, Dk, Dv, q, k, v, logDecay, state }: HeadInputs): HeadOutputs {
  const elements: MonoidElement[] = [{ logDecay: new Float64Array(Dk), state: Float64Array.from(state) }];
  for (let t = 0; t < T; t++) {
    const kv = new Float64Array(Dk * Dv);
    for (let i = 0; i < Dk; i++) for (let j = 0; j < Dv; j++) kv[i * Dv + j] = k[t * Dk + i]! * v[t * Dv + j]!;
    elements.push({ logDecay: logDecay.slice(t * Dk, (t + 1) * Dk), state: kv });
  }
  const prefixes = prefixScan(elements);
  const output = new Float64Array(T * Dv);
  for (let t = 0; t < T; t++) readout(prefixes[t + 1]!.state, q, t, Dk, Dv, output);
  return { output, state: prefixes[T]!.state };
}

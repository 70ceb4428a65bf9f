import { hillisSteele } from '@phalanx/core';

/**
 * An element of the monoid (spec 2.5): a unit rotation rho = e^{i phase} per complex lane and an accumulator
 * J (lanes as (re, im) pairs). The phase is kept rather than rho, as monoid-scan keeps the log-decay: phases
 * add exactly, while a product of rounded unit numbers drifts off the unit circle. A token is
 * (-omega, z_t); a state c entering a sequence is (0, c).
 */
export interface HolographicElement {
  phase: Float64Array;
  state: Float64Array;
}

/** The neutral element (rho = 1, J = 0). A token with z = 0 and phase 0 passes the state through. */
export function identity(lanes: number): HolographicElement {
  return { phase: new Float64Array(lanes), state: new Float64Array(2 * lanes) };
}

/** a then b: (rho_a rho_b, rho_b J_a + J_b). Associative; not commutative (rho_b turns J_a, not J_b). */
export function combine(a: HolographicElement, b: HolographicElement): HolographicElement {
  const n = a.phase.length;
  const phase = new Float64Array(n);
  const state = new Float64Array(2 * n);
  for (let k = 0; k < n; k++) {
    phase[k] = a.phase[k]! + b.phase[k]!;
    const [c, s] = [Math.cos(b.phase[k]!), Math.sin(b.phase[k]!)];
    const [re, im] = [a.state[2 * k]!, a.state[2 * k + 1]!];
    state[2 * k] = c * re - s * im + b.state[2 * k]!;
    state[2 * k + 1] = c * im + s * re + b.state[2 * k + 1]!;
  }
  return { phase, state };
}

/** Inclusive prefix products of the elements, in log2(n) rounds (core's `hillisSteele` with this monoid). */
export function prefixScan(elements: readonly HolographicElement[]): HolographicElement[] {
  return hillisSteele(elements, combine);
}

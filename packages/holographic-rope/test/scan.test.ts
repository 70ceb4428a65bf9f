import { Rng } from '@phalanx/core';
import { describe, expect, it } from 'vitest';
import { type HolographicElement, combine, identity, prefixScan } from '../src/index.js';

const LANES = 4;

function element(rng: Rng): HolographicElement {
  return {
    phase: Float64Array.from({ length: LANES }, () => rng.normal() * 3),
    state: Float64Array.from({ length: 2 * LANES }, () => rng.normal()),
  };
}

/** Elements agree to float64 rounding. */
function expectSame(a: HolographicElement, b: HolographicElement) {
  a.phase.forEach((x, i) => expect(x).toBeCloseTo(b.phase[i]!, 12));
  a.state.forEach((x, i) => expect(x).toBeCloseTo(b.state[i]!, 12));
}

describe('the holographic monoid', () => {
  it('combine is associative', () => {
    const rng = new Rng(1);
    for (let n = 0; n < 20; n++) {
      const [a, b, c] = [element(rng), element(rng), element(rng)];
      expectSame(combine(combine(a, b), c), combine(a, combine(b, c)));
    }
  });

  it('identity is neutral on both sides', () => {
    const a = element(new Rng(2));
    expectSame(combine(identity(LANES), a), a);
    expectSame(combine(a, identity(LANES)), a);
  });

  it('combine is (rho_a rho_b, rho_b J_a + J_b), and not commutative', () => {
    const [a, b] = [element(new Rng(3)), element(new Rng(4))];
    const ab = combine(a, b);
    const [c, s] = [Math.cos(b.phase[1]!), Math.sin(b.phase[1]!)];
    expect(ab.phase[1]).toBeCloseTo(a.phase[1]! + b.phase[1]!, 14);
    expect(ab.state[2]).toBeCloseTo(c * a.state[2]! - s * a.state[3]! + b.state[2]!, 14);
    expect(ab.state[3]).toBeCloseTo(c * a.state[3]! + s * a.state[2]! + b.state[3]!, 14);
    expect(combine(b, a).state[2]).not.toBeCloseTo(ab.state[2]!, 6);
  });

  it.each([1, 2, 7, 16, 33])('prefixScan of %i tokens (-omega, z_t) equals the recurrence c_t = e^{-i omega} c_{t-1} + z_t', (n) => {
    const rng = new Rng(n);
    const omega = Float64Array.from({ length: LANES }, (_, k) => 10000 ** (-(2 * k) / (2 * LANES)));
    const tokens = Array.from({ length: n }, () => ({ phase: omega.map((w) => -w), state: element(rng).state }));
    const c = new Float64Array(2 * LANES);
    prefixScan(tokens).forEach((prefix, t) => {
      for (let k = 0; k < LANES; k++) {
        const [re, im] = [c[2 * k]!, c[2 * k + 1]!];
        c[2 * k] = Math.cos(omega[k]!) * re + Math.sin(omega[k]!) * im + tokens[t]!.state[2 * k]!;
        c[2 * k + 1] = Math.cos(omega[k]!) * im - Math.sin(omega[k]!) * re + tokens[t]!.state[2 * k + 1]!;
      }
      prefix.state.forEach((x, i) => expect(x).toBeCloseTo(c[i]!, 12));
    });
  });
});

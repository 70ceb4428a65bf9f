import { Rng } from '@phalanx/core';
import { describe, expect, it } from 'vitest';
import { type MonoidElement, combine, identity, prefixScan } from '../src/index.js';

const [DK, DV] = [5, 3];

function element(rng: Rng): MonoidElement {
  return {
    logDecay: Float64Array.from({ length: DK }, () => -Math.abs(rng.normal()) * 2),
    state: Float64Array.from({ length: DK * DV }, () => rng.normal()),
  };
}

/** Elements agree to float64 rounding. */
function expectSame(a: MonoidElement, b: MonoidElement) {
  a.logDecay.forEach((x, i) => expect(x).toBeCloseTo(b.logDecay[i]!, 12));
  a.state.forEach((x, i) => expect(x).toBeCloseTo(b.state[i]!, 12));
}

describe('the monoid', () => {
  it('combine is associative', () => {
    const rng = new Rng(1);
    for (let n = 0; n < 20; n++) {
      const [a, b, c] = [element(rng), element(rng), element(rng)];
      expectSame(combine(combine(a, b), c), combine(a, combine(b, c)));
    }
  });

  it('identity is neutral on both sides', () => {
    const a = element(new Rng(2));
    expectSame(combine(identity(DK, DV), a), a);
    expectSame(combine(a, identity(DK, DV)), a);
  });

  it('combine is (la + lb, diag(exp(lb)) A + B), and not commutative', () => {
    const rng = new Rng(3);
    const [a, b] = [element(rng), element(rng)];
    const ab = combine(a, b);
    expect(ab.logDecay[2]).toBeCloseTo(a.logDecay[2]! + b.logDecay[2]!, 14);
    expect(ab.state[2 * DV + 1]).toBeCloseTo(Math.exp(b.logDecay[2]!) * a.state[2 * DV + 1]! + b.state[2 * DV + 1]!, 14);
    expect(combine(b, a).state[2 * DV + 1]).not.toBeCloseTo(ab.state[2 * DV + 1]!, 6);
  });

  it.each([1, 2, 7, 16, 33])('prefixScan of %i elements equals the left fold', (n) => {
    const rng = new Rng(n);
    const elements = Array.from({ length: n }, () => element(rng));
    const prefixes = prefixScan(elements);
    let acc = identity(DK, DV);
    elements.forEach((e, i) => {
      acc = combine(acc, e);
      expectSame(prefixes[i]!, acc);
    });
  });
});

import { describe, expect, it } from 'vitest';
import { hillisSteele } from '../src/index.js';

describe('hillisSteele', () => {
  it('equals a left fold for a non-commutative associative operator, at every length', () => {
    // string concatenation: associative, not commutative, so order mistakes show
    for (let n = 0; n <= 17; n++) {
      const xs = Array.from({ length: n }, (_, i) => String.fromCharCode(97 + i));
      const folded = xs.map((_, i) => xs.slice(0, i + 1).join(''));
      expect(hillisSteele(xs, (a, b) => a + b)).toEqual(folded);
    }
  });
});

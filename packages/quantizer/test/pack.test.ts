import { InputError, Rng } from '@phalanx/core';
import { describe, expect, it } from 'vitest';
import { packBits, packedBytes, unpackBits } from '../src/index.js';
import { unpackRange } from '../src/pack.js';

describe('bit packing', () => {
  it.each([2, 3, 4, 5, 6, 7, 8])('round-trips %i-bit codes over odd lengths', (bits) => {
    const rng = new Rng(bits);
    const half = 2 ** (bits - 1);
    for (const n of [1, 3, 7, 13, 101, 1001]) {
      const codes = Int8Array.from({ length: n }, () => rng.int(2 * half) - half);
      codes[0] = -half;
      codes[n - 1] = half - 1;
      const packed = packBits(codes, bits);
      expect(packed.length).toBe(Math.ceil((n * bits) / 8));
      expect(packed.length).toBe(packedBytes(n, bits));
      expect(unpackBits(packed, bits, n)).toEqual(codes);
    }
  });

  it.each([2, 3, 5, 6, 7])('decodes any run of %i-bit codes from the middle of the stream', (bits) => {
    const rng = new Rng(10 + bits);
    const half = 2 ** (bits - 1);
    const codes = Int8Array.from({ length: 200 }, () => rng.int(2 * half) - half);
    const packed = packBits(codes, bits);
    for (const [start, count] of [[0, 200], [1, 7], [13, 100], [199, 1], [57, 0]] as const) {
      expect(unpackRange(packed, bits, start, new Int8Array(count))).toEqual(codes.subarray(start, start + count));
    }
  });

  it('stores code + 2^(bits-1), least significant bit first', () => {
    expect(Array.from(packBits([-1, 0, 1], 2))).toEqual([0b10_01 | (0b11 << 4)]);
    expect(Array.from(packBits([-32, 31, 0], 6))).toEqual([0b11_000000, 0b0000_1111, 0b10]);
  });

  it('refuses codes out of range and lengths that do not match', () => {
    expect(() => packBits([2], 2)).toThrow(InputError);
    expect(() => packBits([0.5], 4)).toThrow(InputError);
    expect(() => packBits([0], 9)).toThrow(InputError);
    expect(() => unpackBits(new Uint8Array(3), 6, 5)).toThrow(InputError);
  });
});

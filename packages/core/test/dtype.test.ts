import { describe, expect, it } from 'vitest';
import { bf16BitsToF32, decodeHalf, encodeHalf, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, toStorage } from '../src/index.js';

describe('f16', () => {
  it.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [0.1, 0x2e66],
    [65504, 0x7bff], // largest finite
    [65519.99, 0x7bff], // below the halfway point to 2^16 stays finite
    [65520, 0x7c00], // halfway rounds to even: inf
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // halfway between 0 and 2^-24: ties to even (0)
    [3 * 2 ** -25, 0x0002], // halfway between 1 and 2 ulps: ties to even (2)
    [1 + 2 ** -11, 0x3c00], // halfway: ties to even
    [1 + 3 * 2 ** -11, 0x3c02], // halfway: ties to even (up)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway rounds up
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [-0, 0x8000],
    [1e-10, 0x0000],
    [1e10, 0x7c00],
  ])('%d -> 0x%s', (x, bits) => {
    expect(f32ToF16Bits(x)).toBe(bits);
  });

  it('NaN stays NaN', () => {
    expect(f32ToF16Bits(NaN) & 0x7c00).toBe(0x7c00);
    expect(f32ToF16Bits(NaN) & 0x3ff).not.toBe(0);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
  });

  it('decodes every finite pattern exactly and re-encodes it to the same bits', () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16BitsToF32(h);
      if (Number.isNaN(v)) continue;
      expect(f32ToF16Bits(v)).toBe(h);
    }
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
  });
});

describe('bf16', () => {
  it.each([
    [1, 0x3f80],
    [-2, 0xc000],
    [3.140625, 0x4049],
    [1 + 2 ** -8, 0x3f80], // halfway: ties to even
    [1 + 3 * 2 ** -8, 0x3f82], // halfway: ties to even (up)
    [Infinity, 0x7f80],
    [3.4028234663852886e38, 0x7f80], // f32 max rounds to inf in bf16
    [-0, 0x8000],
  ])('%d -> 0x%s', (x, bits) => {
    expect(f32ToBf16Bits(x)).toBe(bits);
  });

  it('NaN stays a quiet NaN', () => {
    expect(f32ToBf16Bits(NaN)).toBe(0x7fc0);
    expect(bf16BitsToF32(0x7fc0)).toBeNaN();
  });

  it('round-trips every finite pattern', () => {
    for (let b = 0; b < 65536; b++) {
      const v = bf16BitsToF32(b);
      if (!Number.isNaN(v)) expect(f32ToBf16Bits(v)).toBe(b);
    }
  });

  it('encodeHalf and decodeHalf agree with the scalar conversions', () => {
    const xs = [0.5, -1.25, 1e-3, 7777, -0.1];
    for (const d of ['f16', 'bf16'] as const) {
      const bits = encodeHalf(d, xs);
      const back = decodeHalf(d, bits);
      bits.forEach((b, i) => expect(back[i]).toBe(d === 'f16' ? f16BitsToF32(b) : bf16BitsToF32(b)));
    }
  });
});

describe('toStorage', () => {
  it('takes a Uint16Array as raw half bits and rounds numbers', () => {
    const raw = new Uint16Array([0x3c00, 0x4000]);
    expect(toStorage(raw, 'f16')).toBe(raw);
    expect(Array.from(toStorage([1, 2], 'f16'))).toEqual([0x3c00, 0x4000]);
    expect(Array.from(toStorage(new Float32Array([1, 2]), 'bf16'))).toEqual([0x3f80, 0x4000]);
  });

  it('refuses non-integers and out-of-range values for integer dtypes, naming the tensor', () => {
    expect(() => toStorage([1.5], 'i32', 'ids')).toThrow(/ids: element 0 is 1.5, not a i32 value/);
    expect(() => toStorage([256], 'u8', 'codes')).toThrow(/codes: element 0 is 256/);
    expect(() => toStorage([-1], 'u32')).toThrow(/DTypeError|not a u32/);
    expect(Array.from(toStorage([-128, 127], 'i8'))).toEqual([-128, 127]);
  });
});

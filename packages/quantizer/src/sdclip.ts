import { InputError, f16BitsToF32, f32ToF16Bits } from '@phalanx/core';

export function assertBits(op: string, bits: number): void {
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new InputError(`${op}: bits must be an integer in 2..8, got ${bits}`);
}

/** The largest code of a `bits`-wide symmetric grid: codes are integers in [-R, R] (no zero point). */
export function clipRange(bits: number): number {
  return 2 ** (bits - 1) - 1;
}

/** Round half to even, as torch.round does (2.5 -> 2, 3.5 -> 4, -2.5 -> -2). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // ties go up
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * One code: clamp(round(w / s), -R, R). The quotient is rounded to f32 first, as the reference computes it
 * in fp32; a tie then rounds exactly as torch.round does. A constant row's scale underflows to fp16 0: its
 * zeros (0/0) get code 0 and other values +-R, so the row dequantizes to 0 either way.
 */
export function quantizeValue(w: number, scale: number, R: number): number {
  const x = Math.fround(w / scale);
  return Number.isNaN(x) ? 0 : Math.min(R, Math.max(-R, roundHalfEven(x)));
}

/**
 * SDClip row scales: s_r = fp16(max(k * std(W_r) / R, 1e-10)) with the unbiased std of each row of the
 * row-major [rows, cols] matrix. Returns the f16 bit patterns (what is stored) and their values.
 */
export function rowScales(w: ArrayLike<number>, rows: number, cols: number, clipSigmas: number, R: number): { bits: Uint16Array; values: Float64Array } {
  const bits = new Uint16Array(rows);
  const values = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let c = 0; c < cols; c++) mean += w[r * cols + c]!;
    mean /= cols;
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += (w[r * cols + c]! - mean) ** 2;
    const std = Math.sqrt(ss / (cols - 1));
    bits[r] = f32ToF16Bits(Math.max((clipSigmas * std) / R, 1e-10));
    values[r] = f16BitsToF32(bits[r]!);
  }
  return { bits, values };
}

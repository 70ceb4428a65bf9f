import { InputError } from '@phalanx/core';
import { assertBits } from './quantize.js';

/** Bytes that `packBits` makes of `count` codes: ceil(count * bits / 8). */
export function packedBytes(count: number, bits: number): number {
  return Math.ceil((count * bits) / 8);
}

/**
 * Packs signed codes in [-2^(bits-1), 2^(bits-1) - 1] into a little-endian bit stream: code i stored as
 * the unsigned `code + 2^(bits-1)` in bits [i*bits, (i+1)*bits), least significant bit first; the last
 * byte is zero-padded.
 */
export function packBits(codes: ArrayLike<number>, bits: number): Uint8Array {
  assertBits('packBits', bits);
  const offset = 2 ** (bits - 1);
  const out = new Uint8Array(packedBytes(codes.length, bits));
  let acc = 0;
  let held = 0;
  let o = 0;
  for (let i = 0; i < codes.length; i++) {
    const u = codes[i]! + offset;
    if (!Number.isInteger(u) || u < 0 || u >= 2 * offset) throw new InputError(`packBits: code ${i} is ${codes[i]}, outside [${-offset}, ${offset - 1}] for ${bits} bits`);
    acc |= u << held;
    held += bits;
    for (; held >= 8; held -= 8) {
      out[o++] = acc & 0xff;
      acc >>>= 8;
    }
  }
  if (held > 0) out[o] = acc & 0xff;
  return out;
}

/** The inverse of `packBits`: `count` signed codes. */
export function unpackBits(bytes: Uint8Array, bits: number, count: number): Int8Array {
  assertBits('unpackBits', bits);
  if (bytes.length !== packedBytes(count, bits)) throw new InputError(`unpackBits: ${count} codes of ${bits} bits take ${packedBytes(count, bits)} bytes, got ${bytes.length}`);
  const offset = 2 ** (bits - 1);
  const mask = 2 * offset - 1;
  const out = new Int8Array(count);
  let acc = 0;
  let held = 0;
  let b = 0;
  for (let i = 0; i < count; i++) {
    while (held < bits) {
      acc |= bytes[b++]! << held;
      held += 8;
    }
    out[i] = (acc & mask) - offset;
    acc >>>= bits;
    held -= bits;
  }
  return out;
}

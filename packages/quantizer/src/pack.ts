import { DTypeError, InputError, ShapeError, sizeOf, tensor } from '@phalanx/core';
import type { QuantizedTensor } from './quantize.js';
import { assertBits } from './sdclip.js';

/** How codes are held: bit-packed (u8, ceil(n*bits/8) bytes) or one int8 per code, as the reference does. */
export type CodeLayout = 'packed' | 'int8';

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
  return unpackRange(bytes, bits, 0, new Int8Array(count));
}

/**
 * Decodes codes [start, start + out.length) of a `packBits` stream into `out`: the one decoder behind
 * `unpackBits` and the CPU packed matmul, which decodes a row of W at a time.
 */
export function unpackRange(bytes: Uint8Array, bits: number, start: number, out: Int8Array): Int8Array {
  if (out.length === 0) return out;
  const offset = 2 ** (bits - 1);
  const mask = 2 * offset - 1;
  const first = start * bits;
  let b = Math.floor(first / 8);
  let acc = bytes[b++]! >>> first % 8;
  let held = 8 - (first % 8);
  for (let i = 0; i < out.length; i++) {
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

/** [rows, cols] of the matrix a quantized tensor holds: rows = shape[0], the rest flattened into cols. */
export function quantizedDims(q: QuantizedTensor): [number, number] {
  const rows = q.shape[0] ?? 1;
  return [rows, rows === 0 ? 0 : sizeOf(q.shape) / rows];
}

/** Whether q's codes are packed (u8 bit stream) or one int8 each; checks the codes tensor's dtype and size. */
export function codeLayout(q: QuantizedTensor): CodeLayout {
  const [rows, cols] = quantizedDims(q);
  const name = q.codes.name ?? 'codes';
  if (q.codes.dtype === 'i8') {
    if (q.codes.size !== rows * cols) throw new ShapeError(`${name}: ${q.codes.size} int8 codes, expected ${rows} x ${cols}`);
    return 'int8';
  }
  if (q.codes.dtype === 'u8') {
    assertBits(name, q.bits);
    const bytes = packedBytes(rows * cols, q.bits);
    if (q.codes.size !== bytes) throw new ShapeError(`${name}: ${q.codes.size} bytes, expected ${bytes} for ${rows} x ${cols} codes of ${q.bits} bits`);
    return 'packed';
  }
  throw new DTypeError(`${name}: codes must be i8 (one per weight) or u8 (packed), got ${q.codes.dtype}`);
}

/** q's codes as one signed integer per weight, row-major (decoded when packed). */
export async function codeValues(q: QuantizedTensor): Promise<ArrayLike<number>> {
  if (codeLayout(q) === 'int8') return q.codes.data();
  const [rows, cols] = quantizedDims(q);
  return unpackBits((await q.codes.rawData()) as Uint8Array, q.bits, rows * cols);
}

/**
 * The packed form of q (the layout the packed kernels read): codes as a u8 [ceil(rows*cols*bits/8)] bit
 * stream on the codes' backend, see `packBits`. The scales tensor is shared with q; a packed q comes back as is.
 */
export async function packQuantized(q: QuantizedTensor): Promise<QuantizedTensor> {
  if (codeLayout(q) === 'packed') return q;
  const bytes = packBits(await q.codes.data(), q.bits);
  return { ...q, codes: tensor(bytes, [bytes.length], { dtype: 'u8', backend: q.codes.backend, name: q.codes.name }) };
}

/** The int8 form of q: codes i8 [rows, cols] on the codes' backend; the scales tensor is shared with q. */
export async function unpackQuantized(q: QuantizedTensor): Promise<QuantizedTensor> {
  if (codeLayout(q) === 'int8') return q;
  const codes = (await codeValues(q)) as Int8Array;
  return { ...q, codes: tensor(codes, quantizedDims(q), { backend: q.codes.backend, name: q.codes.name }) };
}

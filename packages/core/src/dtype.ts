import { DTypeError } from './errors.js';

/** Element types a tensor can hold. f16 and bf16 are storage formats: kernels upcast them to f32. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'u32' | 'i8' | 'u8';

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'u32', 'i8', 'u8'];

/** The typed array a dtype is stored in: f16 and bf16 keep their raw 16-bit patterns. */
export type StorageArray = Float32Array | Uint16Array | Int32Array | Uint32Array | Int8Array | Uint8Array;

/** What `tensor.data()` returns: f16 and bf16 come back widened to f32. */
export type DataArray = Float32Array | Int32Array | Uint32Array | Int8Array | Uint8Array;

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

export function assertDType(x: unknown, what = 'dtype'): DType {
  if (!isDType(x)) throw new DTypeError(`${what}: unknown dtype ${JSON.stringify(x)} (expected one of ${DTYPES.join(', ')})`);
  return x;
}

export function bytesPerElement(dtype: DType): number {
  switch (dtype) {
    case 'f32':
    case 'i32':
    case 'u32':
      return 4;
    case 'f16':
    case 'bf16':
      return 2;
    case 'i8':
    case 'u8':
      return 1;
  }
}

export function isFloat(dtype: DType): boolean {
  return dtype === 'f32' || dtype === 'f16' || dtype === 'bf16';
}

/** Allocates zeroed storage for `size` elements. */
export function allocStorage(dtype: DType, size: number): StorageArray {
  switch (dtype) {
    case 'f32':
      return new Float32Array(size);
    case 'f16':
    case 'bf16':
      return new Uint16Array(size);
    case 'i32':
      return new Int32Array(size);
    case 'u32':
      return new Uint32Array(size);
    case 'i8':
      return new Int8Array(size);
    case 'u8':
      return new Uint8Array(size);
  }
}

/** Views raw bytes as the storage array of `dtype` (copies when unaligned). */
export function storageFromBytes(dtype: DType, bytes: Uint8Array, size: number): StorageArray {
  const nbytes = size * bytesPerElement(dtype);
  let b = bytes;
  if (b.byteOffset % bytesPerElement(dtype) !== 0) b = b.slice(0, nbytes);
  const { buffer, byteOffset } = b;
  switch (dtype) {
    case 'f32':
      return new Float32Array(buffer, byteOffset, size);
    case 'f16':
    case 'bf16':
      return new Uint16Array(buffer, byteOffset, size);
    case 'i32':
      return new Int32Array(buffer, byteOffset, size);
    case 'u32':
      return new Uint32Array(buffer, byteOffset, size);
    case 'i8':
      return new Int8Array(buffer, byteOffset, size);
    case 'u8':
      return new Uint8Array(buffer, byteOffset, size);
  }
}

// ---- f16 / bf16 <-> f32, round to nearest even ----

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds a number to the nearest f16 and returns its bit pattern (round to nearest, ties to even). */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf or quiet NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    // subnormal f16 (or zero): shift the full significand right, rounding to nearest even
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let r = m >>> shift;
    if (rest > half || (rest === half && (r & 1) !== 0)) r += 1;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1) !== 0)) r += 1; // may carry into the exponent: correct, up to inf
  return sign | r;
}

let f16Table: Float32Array | undefined;

/** Decodes an f16 bit pattern to a number (exact). */
export function f16BitsToF32(h: number): number {
  f16Table ??= buildF16Table();
  return f16Table[h & 0xffff]!;
}

function buildF16Table(): Float32Array {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 0x1f) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return t;
}

/** Rounds a number to the nearest bf16 and returns its bit pattern (round to nearest, ties to even). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return ((bits >>> 16) & 0xffff) | 0x40; // quiet NaN
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

/** Encodes numbers as f16 or bf16 bit patterns. */
export function encodeHalf(dtype: 'f16' | 'bf16', values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  const enc = dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
  for (let i = 0; i < values.length; i++) out[i] = enc(values[i]!);
  return out;
}

/** Decodes f16 or bf16 bit patterns to f32. */
export function decodeHalf(dtype: 'f16' | 'bf16', bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  if (dtype === 'f16') {
    f16Table ??= buildF16Table();
    for (let i = 0; i < bits.length; i++) out[i] = f16Table[bits[i]!]!;
  } else {
    const o32 = new Uint32Array(out.buffer);
    for (let i = 0; i < bits.length; i++) o32[i] = bits[i]! << 16;
  }
  return out;
}

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  i32: [-(2 ** 31), 2 ** 31 - 1],
  u32: [0, 2 ** 32 - 1],
  i8: [-128, 127],
  u8: [0, 255],
};

/**
 * Converts user data to the storage array of `dtype`. Numbers are rounded to f16/bf16; a Uint16Array
 * given for f16/bf16 is taken as raw bit patterns. Integer dtypes refuse non-integers and values out of range.
 */
export function toStorage(data: ArrayLike<number>, dtype: DType, name = 'tensor'): StorageArray {
  if (dtype === 'f16' || dtype === 'bf16') {
    return data instanceof Uint16Array ? data : encodeHalf(dtype, data);
  }
  if (dtype === 'f32') return data instanceof Float32Array ? data : Float32Array.from(data);
  const [lo, hi] = INT_RANGE[dtype]!;
  const out = allocStorage(dtype, data.length);
  if (sameArrayType(data, out)) return data as StorageArray;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!Number.isInteger(v) || v < lo || v > hi) {
      throw new DTypeError(`${name}: element ${i} is ${v}, not a ${dtype} value (integers in [${lo}, ${hi}])`);
    }
    out[i] = v;
  }
  return out;
}

function sameArrayType(a: ArrayLike<number>, b: StorageArray): boolean {
  return Object.getPrototypeOf(a) === Object.getPrototypeOf(b);
}

/** Widens raw storage to what `data()` returns (f16/bf16 decoded to f32, others as they are). */
export function storageToData(dtype: DType, raw: StorageArray): DataArray {
  if (dtype === 'f16' || dtype === 'bf16') return decodeHalf(dtype, raw as Uint16Array);
  return raw as DataArray;
}

/**
 * The safetensors format without any I/O: the dtypes, the header validation and the decoding of a tensor's
 * bytes. The file reader (safetensors.ts, Node) and the in-memory reader (memory.ts, any runtime) both go
 * through these functions, so a file is accepted or refused the same way wherever its bytes come from.
 */
import { type Backend, type DType, type StorageArray, CheckpointError, Tensor, cpu, formatShape, storageFromBytes } from '@phalanx/core';

/** The safetensors dtypes this package reads, with their size in bytes and the Phalanx dtype they load as. */
export const SAFETENSORS_DTYPES = {
  F32: { bytes: 4, dtype: 'f32' },
  F16: { bytes: 2, dtype: 'f16' },
  BF16: { bytes: 2, dtype: 'bf16' },
  I32: { bytes: 4, dtype: 'i32' },
  U32: { bytes: 4, dtype: 'u32' },
  I8: { bytes: 1, dtype: 'i8' },
  U8: { bytes: 1, dtype: 'u8' },
  I64: { bytes: 8, dtype: 'i32' }, // narrowed, range-checked
  BOOL: { bytes: 1, dtype: 'u8' },
} as const satisfies Record<string, { bytes: number; dtype: DType }>;

export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPES;

/** The safetensors crate refuses headers above 100 MB; so do we, before allocating anything. */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's entry in a safetensors header. Offsets are absolute positions in the file. */
export interface TensorInfo {
  name: string;
  /** The safetensors dtype as stored (`I64`, `BOOL`, ...). */
  storedDType: SafetensorsDType;
  /** The dtype the tensor loads as. */
  dtype: DType;
  shape: readonly number[];
  /** Absolute byte range [begin, end) in the file. */
  begin: number;
  end: number;
}

export interface ProgressEvent {
  file: string;
  tensor: string;
  bytesDone: number;
  bytesTotal: number;
}

export interface ReadOptions {
  /** Where the tensor is created. Default: the CPU. */
  backend?: Backend;
  /** Refuse a float tensor holding NaN or Infinity (a CheckpointError naming it and the first such element). Default false. */
  checkFinite?: boolean;
  /** Called after every chunk read; `bytesDone`/`bytesTotal` cover this read only. */
  onProgress?: (event: ProgressEvent) => void;
}

export interface Header {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/**
 * Checks the 8-byte little-endian header length (`lengthBytes`: the file's first min(8, fileSize) bytes)
 * against the file size and the limit, and returns it.
 */
export function headerLength(path: string, lengthBytes: Uint8Array, fileSize: number): number {
  if (fileSize < 8) throw new CheckpointError(path, `header length: file is ${fileSize} bytes, too short for the 8-byte header length`);
  const headerLen = new DataView(lengthBytes.buffer, lengthBytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw new CheckpointError(path, `header length: ${headerLen} bytes is above the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(headerLen);
  if (8 + n > fileSize) throw new CheckpointError(path, `header length: ${n} bytes runs past the end of the ${fileSize}-byte file`);
  if (n < 2) throw new CheckpointError(path, `header: ${n} bytes cannot hold a JSON object`);
  return n;
}

/**
 * Parses and validates the JSON header (`header`: the `headerLength` bytes after the length): every check
 * runs before any tensor data is touched.
 */
export function parseHeader(path: string, header: Uint8Array, fileSize: number): Header {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(header));
  } catch (e) {
    throw new CheckpointError(path, `header: not UTF-8 JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new CheckpointError(path, 'header: not a JSON object');

  const dataStart = 8 + header.length;
  const dataSize = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') metadata = parseMetadata(path, entry);
    else tensors.push(parseEntry(path, name, entry, dataStart, dataSize));
  }

  // No two tensors may share bytes (empty tensors occupy none).
  const byOffset = tensors.filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1]!;
    const cur = byOffset[i]!;
    if (cur.begin < prev.end) throw new CheckpointError(path, `tensor '${cur.name}': data_offsets overlap those of '${prev.name}'`);
  }
  tensors.sort((a, b) => a.begin - b.begin || (a.name < b.name ? -1 : 1));
  return { tensors: new Map(tensors.map((t) => [t.name, t])), metadata };
}

function parseMetadata(path: string, entry: unknown): Record<string, string> {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new CheckpointError(path, '__metadata__: not a JSON object');
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== 'string') throw new CheckpointError(path, `__metadata__.${k}: not a string (${JSON.stringify(v)})`);
  }
  return entry as Record<string, string>;
}

function parseEntry(path: string, name: string, entry: unknown, dataStart: number, dataSize: number): TensorInfo {
  const fail = (msg: string) => new CheckpointError(path, `tensor '${name}': ${msg}`);
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw fail('entry is not a JSON object');
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (typeof dtype !== 'string' || !Object.hasOwn(SAFETENSORS_DTYPES, dtype)) {
    throw fail(`dtype ${JSON.stringify(dtype)} is not supported (expected one of ${Object.keys(SAFETENSORS_DTYPES).join(', ')})`);
  }
  const st = SAFETENSORS_DTYPES[dtype as SafetensorsDType];
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw fail(`data_offsets ${JSON.stringify(offsets)} is not [begin, end] with non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw fail(`data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataSize) throw fail(`data_offsets [${begin}, ${end}] run past the end of the data section (${dataSize} bytes; file truncated?)`);
  // Products of dims can exceed 2^53 before the comparison: compare in BigInt.
  const expected = shape.reduce((a: bigint, d: number) => a * BigInt(d), BigInt(st.bytes));
  if (expected !== BigInt(end - begin)) {
    throw fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but shape ${formatShape(shape)} of ${dtype} needs ${expected}`);
  }
  return { name, storedDType: dtype as SafetensorsDType, dtype: st.dtype, shape, begin: dataStart + begin, end: dataStart + end };
}

/**
 * The tensor of one header entry from its raw little-endian bytes (I64 and BOOL checked element by element,
 * floats too with `checkFinite`), named after the checkpoint tensor. On the CPU it keeps `bytes`' memory when
 * aligned: pass bytes no one else writes to.
 */
export function decodeTensor(path: string, info: TensorInfo, bytes: Uint8Array, options: Pick<ReadOptions, 'backend' | 'checkFinite'> = {}): Tensor {
  const { backend = cpu, checkFinite = false } = options;
  if (checkFinite) refuseNonFinite(path, info, bytes);
  const storage = toStorage(path, info, bytes);
  return new Tensor(backend, backend === cpu ? storage : backend.upload(storage, info.dtype), info.shape, info.dtype, info.name);
}

/** Exponent bits of the float dtypes: all set is Infinity (mantissa 0) or NaN. */
const EXPONENT: Partial<Record<SafetensorsDType, { bits: 16 | 32; mask: number; mantissa: number }>> = {
  F32: { bits: 32, mask: 0x7f800000, mantissa: 0x007fffff },
  F16: { bits: 16, mask: 0x7c00, mantissa: 0x03ff },
  BF16: { bits: 16, mask: 0x7f80, mantissa: 0x007f },
};

/** Throws on the first NaN or Infinity of a float tensor's bytes, naming its flat index and coordinates. */
function refuseNonFinite(path: string, info: TensorInfo, bytes: Uint8Array): void {
  const e = EXPONENT[info.storedDType];
  if (!e) return;
  const aligned = bytes.byteOffset % (e.bits / 8) === 0 ? bytes : bytes.slice();
  const words = e.bits === 32 ? new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4) : new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.length / 2);
  let i = 0;
  while (i < words.length && (words[i]! & e.mask) !== e.mask) i++; // a plain loop: this scans every weight
  if (i === words.length) return;
  const w = words[i]!;
  const what = (w & e.mantissa) !== 0 ? 'NaN' : w & (e.bits === 32 ? 0x80000000 : 0x8000) ? '-Infinity' : 'Infinity';
  const at: number[] = [];
  for (let d = info.shape.length - 1, rest = i; d >= 0; d--) {
    at.unshift(rest % info.shape[d]!);
    rest = Math.floor(rest / info.shape[d]!);
  }
  throw new CheckpointError(path, `tensor '${info.name}': element ${i} (at ${formatShape(at)}) is ${what}`);
}

function toStorage(path: string, info: TensorInfo, bytes: Uint8Array): StorageArray {
  const size = bytes.length / SAFETENSORS_DTYPES[info.storedDType].bytes;
  if (info.storedDType === 'I64') {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const out = new Int32Array(size);
    for (let i = 0; i < size; i++) {
      const v = view.getBigInt64(i * 8, true);
      if (v < -2147483648n || v > 2147483647n) throw new CheckpointError(path, `tensor '${info.name}': I64 element ${i} is ${v}, outside the i32 range it loads as`);
      out[i] = Number(v);
    }
    return out;
  }
  if (info.storedDType === 'BOOL') {
    const i = bytes.findIndex((b) => b > 1);
    if (i >= 0) throw new CheckpointError(path, `tensor '${info.name}': BOOL element ${i} is ${bytes[i]}, expected 0 or 1`);
  }
  return storageFromBytes(info.dtype, bytes, size);
}

/** One safetensors file with a validated header, whatever holds its bytes: what a Checkpoint is made of. */
export abstract class SafetensorsShard {
  protected constructor(
    /** The file's path or URL, as errors name it. */
    readonly path: string,
    /** Tensor entries in file order. */
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    /** The `__metadata__` string map (empty when absent). */
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError(this.path, `no tensor '${name}' in this file`);
    return info;
  }

  /** Reads one tensor (I64 narrowed to i32 with a range check, BOOL as u8), named after the checkpoint tensor. */
  abstract read(name: string, options?: ReadOptions): Promise<Tensor>;

  abstract close(): Promise<void>;
}

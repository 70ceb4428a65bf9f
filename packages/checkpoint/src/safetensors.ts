import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { type Backend, type DType, type StorageArray, CheckpointError, Tensor, bytesPerElement, cpu, formatShape, storageFromBytes } from '@phalanx/core';

/** The safetensors dtypes this package reads, with their size in bytes and the Phalanx dtype they load as. */
const SAFETENSORS_DTYPES = {
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

const WRITE_DTYPES: Record<DType, SafetensorsDType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32', u32: 'U32', i8: 'I8', u8: 'U8' };

/** The safetensors crate refuses headers above 100 MB; so do we, before allocating anything. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Tensors are read in chunks of this size, so progress is reported while a large tensor loads. */
const CHUNK_BYTES = 16 << 20;

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
  /** Called after every chunk read; `bytesDone`/`bytesTotal` cover this read only. */
  onProgress?: (event: ProgressEvent) => void;
}

/**
 * An open safetensors file: the header is parsed and validated on `open`, tensors are read on demand.
 * `close()` it when done.
 *
 * @example
 * const f = await SafetensorsFile.open('model.safetensors');
 * const w = await f.read('model.norm.weight');
 * await f.close();
 */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    /** Tensor entries in file order. */
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    /** The `__metadata__` string map (empty when absent). */
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    const handle = await openFile(path);
    try {
      const size = (await handle.stat()).size;
      const { tensors, metadata } = await readHeader(path, handle, size);
      return new SafetensorsFile(path, handle, tensors, metadata);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError(this.path, `no tensor '${name}' in this file`);
    return info;
  }

  /** Reads one tensor (I64 narrowed to i32 with a range check, BOOL as u8), named after the checkpoint tensor. */
  async read(name: string, options: ReadOptions = {}): Promise<Tensor> {
    const info = this.info(name);
    const bytes = allocate(this.path, info); // bounded by the file size, checked in readHeader
    let done = 0;
    while (done < bytes.length) {
      const n = Math.min(CHUNK_BYTES, bytes.length - done);
      const { bytesRead } = await this.handle.read(bytes, done, n, info.begin + done);
      if (bytesRead === 0) throw new CheckpointError(this.path, `tensor '${name}': file ended at byte ${info.begin + done}, expected data up to ${info.end} (truncated since opened?)`);
      done += bytesRead;
      options.onProgress?.({ file: this.path, tensor: name, bytesDone: done, bytesTotal: bytes.length });
    }
    const storage = toStorage(this.path, info, bytes);
    const backend = options.backend ?? cpu;
    // The CPU tensor takes the freshly read array as is: no second copy of a large weight.
    return new Tensor(backend, backend === cpu ? storage : backend.upload(storage, info.dtype), info.shape, info.dtype, name);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

function allocate(path: string, info: TensorInfo): Uint8Array {
  try {
    return new Uint8Array(info.end - info.begin);
  } catch (e) {
    throw new CheckpointError(path, `tensor '${info.name}': cannot allocate ${info.end - info.begin} bytes (${(e as Error).message})`, { cause: e });
  }
}

async function openFile(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (e) {
    throw new CheckpointError(path, `cannot open: ${(e as Error).message}`, { cause: e });
  }
}

async function readExactly(path: string, handle: FileHandle, length: number, position: number, what: string): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new CheckpointError(path, `${what}: file ended at byte ${position + done}`);
    done += bytesRead;
  }
  return buf;
}

/** Reads and validates the header: every check runs before any tensor data is touched. */
async function readHeader(path: string, handle: FileHandle, fileSize: number) {
  if (fileSize < 8) throw new CheckpointError(path, `header length: file is ${fileSize} bytes, too short for the 8-byte header length`);
  const lenBytes = await readExactly(path, handle, 8, 0, 'header length');
  const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw new CheckpointError(path, `header length: ${headerLen} bytes is above the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(headerLen);
  if (8 + n > fileSize) throw new CheckpointError(path, `header length: ${n} bytes runs past the end of the ${fileSize}-byte file`);
  if (n < 2) throw new CheckpointError(path, `header: ${n} bytes cannot hold a JSON object`);

  let json: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(await readExactly(path, handle, n, 8, 'header'));
    json = JSON.parse(text);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(path, `header: not UTF-8 JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new CheckpointError(path, 'header: not a JSON object');

  const dataStart = 8 + n;
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

/** Turns raw little-endian bytes into the storage of the loaded dtype (I64 and BOOL checked element by element). */
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

/**
 * Writes tensors as one safetensors file. The output is deterministic: tensors ordered by element size
 * (largest first, so every tensor starts aligned to its element size) then by name, the header padded with
 * spaces to 8 bytes. Writes to `path.tmp` and renames, so a failed write never leaves a half file at `path`.
 */
export async function writeSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): Promise<void> {
  const names = Object.keys(tensors).sort((a, b) => bytesPerElement(tensors[b]!.dtype) - bytesPerElement(tensors[a]!.dtype) || (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new CheckpointError(path, `__metadata__.${k}: must be a string, got ${typeof v}`);
    }
    header.__metadata__ = Object.fromEntries(Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
  let offset = 0;
  for (const name of names) {
    if (name === '__metadata__' || name === '') throw new CheckpointError(path, `tensor name '${name}' is reserved or empty`);
    const t = tensors[name]!;
    const nbytes = t.size * bytesPerElement(t.dtype);
    header[name] = { dtype: WRITE_DTYPES[t.dtype], shape: t.shape, data_offsets: [offset, offset + nbytes] };
    offset += nbytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);

  const tmp = `${path}.tmp`;
  const handle = await open(tmp, 'w');
  try {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
    await handle.write(len);
    await handle.write(headerBytes);
    for (const name of names) {
      const raw = await tensors[name]!.rawData();
      await handle.write(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
    }
    await handle.close();
    await rename(tmp, path);
  } catch (e) {
    await handle.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
}

import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { type DType, CheckpointError, type Tensor, bytesPerElement } from '@phalanx/core';
import { type ReadOptions, type SafetensorsDType, type TensorInfo, SafetensorsShard, decodeTensor, headerLength, parseHeader } from './format.js';

const WRITE_DTYPES: Record<DType, SafetensorsDType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32', u32: 'U32', i8: 'I8', u8: 'U8' };

/** Tensors are read in chunks of this size, so progress is reported while a large tensor loads. */
const CHUNK_BYTES = 16 << 20;

/**
 * An open safetensors file: the header is parsed and validated on `open`, tensors are read on demand.
 * `close()` it when done.
 *
 * @example
 * const f = await SafetensorsFile.open('model.safetensors');
 * const w = await f.read('model.norm.weight');
 * await f.close();
 */
export class SafetensorsFile extends SafetensorsShard {
  private constructor(
    path: string,
    private readonly handle: FileHandle,
    tensors: ReadonlyMap<string, TensorInfo>,
    metadata: Readonly<Record<string, string>>,
  ) {
    super(path, tensors, metadata);
  }

  static async open(path: string): Promise<SafetensorsFile> {
    const handle = await openFile(path);
    try {
      const size = (await handle.stat()).size;
      const n = headerLength(path, await readExactly(path, handle, Math.min(8, size), 0, 'header length'), size);
      const { tensors, metadata } = parseHeader(path, await readExactly(path, handle, n, 8, 'header'), size);
      return new SafetensorsFile(path, handle, tensors, metadata);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  async read(name: string, options: ReadOptions = {}): Promise<Tensor> {
    const info = this.info(name);
    const bytes = allocate(this.path, info); // bounded by the file size, checked in parseHeader
    let done = 0;
    while (done < bytes.length) {
      const n = Math.min(CHUNK_BYTES, bytes.length - done);
      const { bytesRead } = await this.handle.read(bytes, done, n, info.begin + done);
      if (bytesRead === 0) throw new CheckpointError(this.path, `tensor '${name}': file ended at byte ${info.begin + done}, expected data up to ${info.end} (truncated since opened?)`);
      done += bytesRead;
      options.onProgress?.({ file: this.path, tensor: name, bytesDone: done, bytesTotal: bytes.length });
    }
    // The CPU tensor takes the freshly read array as is: no second copy of a large weight.
    return decodeTensor(this.path, info, bytes, options);
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

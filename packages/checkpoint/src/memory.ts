import { CheckpointError, type Tensor } from '@phalanx/core';
import { Checkpoint } from './checkpoint.js';
import { type ReadOptions, type TensorInfo, SafetensorsShard, decodeTensor, headerLength, parseHeader } from './format.js';

/**
 * A safetensors file held in memory (downloaded, or read by the caller), validated exactly as
 * `SafetensorsFile.open` validates a file. Works in any runtime: no filesystem.
 */
export class SafetensorsBytes extends SafetensorsShard {
  private constructor(
    path: string,
    private bytes: Uint8Array | undefined,
    tensors: ReadonlyMap<string, TensorInfo>,
    metadata: Readonly<Record<string, string>>,
  ) {
    super(path, tensors, metadata);
  }

  /** Validates the header of `bytes`; `path` (a file name or URL) names the file in errors. */
  static parse(bytes: ArrayBuffer | Uint8Array, path: string): SafetensorsBytes {
    const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    const n = headerLength(path, b.subarray(0, 8), b.length);
    const { tensors, metadata } = parseHeader(path, b.subarray(8, 8 + n), b.length);
    return new SafetensorsBytes(path, b, tensors, metadata);
  }

  async read(name: string, options: ReadOptions = {}): Promise<Tensor> {
    const info = this.info(name);
    if (!this.bytes) throw new CheckpointError(this.path, `tensor '${name}': read after close()`);
    // A copy: the tensor must not alias the caller's buffer, nor keep all of it alive.
    const t = decodeTensor(this.path, info, this.bytes.slice(info.begin, info.end), options);
    options.onProgress?.({ file: this.path, tensor: name, bytesDone: info.end - info.begin, bytesTotal: info.end - info.begin });
    return t;
  }

  /** Drops the reference to the bytes. */
  async close(): Promise<void> {
    this.bytes = undefined;
  }
}

/**
 * A Checkpoint over one safetensors file in memory: the header is validated now, and `readAll` gives the
 * tensors with progress, as from a file.
 *
 * @example
 * const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
 * const ckpt = parseSafetensors(bytes, url);
 * const weights = await ckpt.readAll({ onProgress: ({ bytesDone, bytesTotal }) => bar(bytesDone / bytesTotal) });
 */
export function parseSafetensors(bytes: ArrayBuffer | Uint8Array, path = 'model.safetensors'): Checkpoint {
  return Checkpoint.ofFile(SafetensorsBytes.parse(bytes, path));
}

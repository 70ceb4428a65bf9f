import { type Backend, type Tensor, CheckpointError } from '@phalanx/core';
import type { ProgressEvent, SafetensorsShard, TensorInfo } from './format.js';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export interface LoadOptions {
  /** Where tensors are created. Default: the CPU. */
  backend?: Backend;
  /** Refuse a float tensor holding NaN or Infinity (a CheckpointError naming it and the first such element). Default false. */
  checkFinite?: boolean;
  /** Called after every chunk read; `bytesDone`/`bytesTotal` cover the whole `read`/`readAll` call. */
  onProgress?: (event: ProgressEvent) => void;
}

/**
 * A checkpoint of one or more safetensors files (on disk or in memory), seen as one set of named tensors.
 * Every header is validated on open; tensor data is read on demand. `close()` it when done.
 *
 * @example
 * const ckpt = await openCheckpoint('Llama-3.2-1B'); // a folder, a .safetensors file or an index.json
 * const weights = await ckpt.readAll({ onProgress: (e) => console.log(e.bytesDone / e.bytesTotal) });
 * await ckpt.close();
 */
export class Checkpoint {
  constructor(
    /** The file or index the checkpoint was opened from (a path or URL). */
    readonly path: string,
    private readonly files: Map<string, SafetensorsShard>,
    /** Tensor name -> the shard file holding it. */
    private readonly shardOf: Map<string, SafetensorsShard>,
  ) {}

  /** A checkpoint of one file. */
  static ofFile(file: SafetensorsShard): Checkpoint {
    return new Checkpoint(file.path, new Map([[file.path, file]]), new Map(file.names.map((n) => [n, file])));
  }

  get names(): string[] {
    return [...this.shardOf.keys()];
  }

  /** Header entries by name (dtype, shape, file offsets), without reading data. */
  get tensors(): Map<string, TensorInfo> {
    return new Map([...this.shardOf].map(([name, f]) => [name, f.info(name)]));
  }

  /** The `__metadata__` of the first file (shards of one checkpoint carry the same). */
  get metadata(): Readonly<Record<string, string>> {
    return this.files.values().next().value?.metadata ?? {};
  }

  /** The file holding `name`. */
  fileOf(name: string): string {
    return this.shard(name).path;
  }

  async read(name: string, options: LoadOptions = {}): Promise<Tensor> {
    return (await this.readAll({ ...options, names: [name] }))[name]!;
  }

  /** Reads the named tensors (default: all), shard by shard in file order, reporting progress over the total. */
  async readAll(options: LoadOptions & { names?: readonly string[] } = {}): Promise<Record<string, Tensor>> {
    const names = new Set(options.names ?? this.names); // a name asked twice is read once
    const infos = [...names].map((n) => ({ file: this.shard(n), info: this.shard(n).info(n) }));
    infos.sort((a, b) => (a.file.path < b.file.path ? -1 : a.file.path > b.file.path ? 1 : a.info.begin - b.info.begin));
    const bytesTotal = infos.reduce((s, { info }) => s + info.end - info.begin, 0);
    let before = 0;
    const out: Record<string, Tensor> = {};
    try {
      for (const { file, info } of infos) {
        const onProgress = options.onProgress && ((e: ProgressEvent) => options.onProgress!({ ...e, bytesDone: before + e.bytesDone, bytesTotal }));
        out[info.name] = await file.read(info.name, { backend: options.backend, checkFinite: options.checkFinite, onProgress });
        before += info.end - info.begin;
      }
    } catch (e) {
      for (const t of Object.values(out)) t.dispose();
      throw e;
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.files.values()].map((f) => f.close()));
  }

  private shard(name: string): SafetensorsShard {
    const f = this.shardOf.get(name);
    if (!f) throw new CheckpointError(this.path, `no tensor '${name}' in this checkpoint`);
    return f;
  }
}

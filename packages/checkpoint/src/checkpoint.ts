import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { type Backend, type Tensor, CheckpointError } from '@phalanx/core';
import { type ProgressEvent, type TensorInfo, SafetensorsFile } from './safetensors.js';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export interface LoadOptions {
  /** Where tensors are created. Default: the CPU. */
  backend?: Backend;
  /** Called after every chunk read; `bytesDone`/`bytesTotal` cover the whole `read`/`readAll` call. */
  onProgress?: (event: ProgressEvent) => void;
}

/**
 * A checkpoint of one or more safetensors files, seen as one set of named tensors. Every header is
 * validated on open; tensor data is read on demand. `close()` it when done.
 *
 * @example
 * const ckpt = await openCheckpoint('Llama-3.2-1B'); // a folder, a .safetensors file or an index.json
 * const weights = await ckpt.readAll({ onProgress: (e) => console.log(e.bytesDone / e.bytesTotal) });
 * await ckpt.close();
 */
export class Checkpoint {
  constructor(
    /** The file or index the checkpoint was opened from. */
    readonly path: string,
    private readonly files: Map<string, SafetensorsFile>,
    /** Tensor name -> the shard file holding it. */
    private readonly shardOf: Map<string, SafetensorsFile>,
  ) {}

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
        out[info.name] = await file.read(info.name, { backend: options.backend, onProgress });
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

  private shard(name: string): SafetensorsFile {
    const f = this.shardOf.get(name);
    if (!f) throw new CheckpointError(this.path, `no tensor '${name}' in this checkpoint`);
    return f;
  }
}

/**
 * Opens a checkpoint: a `.safetensors` file, a `model.safetensors.index.json` (sharded), or a folder holding
 * either (the index wins). Refuses, with a CheckpointError naming the file and tensor, any malformed header,
 * a missing shard, or a tensor the index lists but its shard lacks.
 */
export async function openCheckpoint(path: string): Promise<Checkpoint> {
  let file = path;
  if (await isDirectory(path)) file = (await exists(join(path, INDEX_FILE))) ? join(path, INDEX_FILE) : join(path, SINGLE_FILE);
  if (file.endsWith('.json')) return openSharded(file);
  const f = await SafetensorsFile.open(file);
  return new Checkpoint(file, new Map([[file, f]]), new Map(f.names.map((n) => [n, f])));
}

async function openSharded(indexPath: string): Promise<Checkpoint> {
  const weightMap = await readWeightMap(indexPath);
  const files = new Map<string, SafetensorsFile>();
  const shardOf = new Map<string, SafetensorsFile>();
  try {
    for (const shardName of new Set(Object.values(weightMap))) {
      const shardPath = join(dirname(indexPath), shardName);
      if (!(await exists(shardPath))) throw new CheckpointError(indexPath, `weight_map: shard '${shardName}' does not exist (${shardPath})`);
      files.set(shardName, await SafetensorsFile.open(shardPath));
    }
    const missing: string[] = [];
    for (const [name, shardName] of Object.entries(weightMap)) {
      const f = files.get(shardName)!;
      if (f.tensors.has(name)) shardOf.set(name, f);
      else missing.push(`'${name}' (in ${shardName})`);
    }
    if (missing.length) throw new CheckpointError(indexPath, `weight_map lists tensors their shard lacks: ${missing.join(', ')}`);
  } catch (e) {
    await Promise.all([...files.values()].map((f) => f.close()));
    throw e;
  }
  return new Checkpoint(indexPath, files, shardOf);
}

async function readWeightMap(indexPath: string): Promise<Record<string, string>> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (e) {
    throw new CheckpointError(indexPath, `not a readable JSON file (${(e as Error).message})`, { cause: e });
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) throw new CheckpointError(indexPath, 'weight_map: missing or not a JSON object');
  for (const [name, shard] of Object.entries(weightMap)) {
    // Shards live next to the index: a path elsewhere is refused rather than followed.
    if (typeof shard !== 'string' || shard === '' || isAbsolute(shard) || basename(shard) !== shard) {
      throw new CheckpointError(indexPath, `weight_map['${name}']: ${JSON.stringify(shard)} is not a file name next to the index`);
    }
  }
  return weightMap as Record<string, string>;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

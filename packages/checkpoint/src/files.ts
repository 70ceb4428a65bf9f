/** The Node side of this package: opening checkpoints and configs from the filesystem. */
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { CheckpointError, ConfigError } from '@phalanx/core';
import { Checkpoint, INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
import { type ModelConfig, type Preset, parseConfig } from './config.js';
import { SafetensorsFile } from './safetensors.js';

/**
 * Opens a checkpoint: a `.safetensors` file, a `model.safetensors.index.json` (sharded), or a folder holding
 * either (the index wins). Refuses, with a CheckpointError naming the file and tensor, any malformed header,
 * a missing shard, or a tensor the index lists but its shard lacks.
 */
export async function openCheckpoint(path: string): Promise<Checkpoint> {
  let file = path;
  if (await isDirectory(path)) file = (await exists(join(path, INDEX_FILE))) ? join(path, INDEX_FILE) : join(path, SINGLE_FILE);
  if (file.endsWith('.json')) return openSharded(file);
  return Checkpoint.ofFile(await SafetensorsFile.open(file));
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

/** Reads `config.json` and parses it; see `parseConfig`. */
export async function loadConfig(path: string, preset?: Preset): Promise<ModelConfig> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(path, '(file)', `not a readable JSON file (${(e as Error).message})`);
  }
  return parseConfig(json, { file: path, preset });
}

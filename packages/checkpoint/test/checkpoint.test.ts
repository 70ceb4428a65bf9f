import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError, tensor } from '@phalanx/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { type ProgressEvent, INDEX_FILE, openCheckpoint, writeSafetensors } from '../src/index.js';
import { tempDir } from './helpers.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

/** A two-shard checkpoint: a and b in the first shard, c in the second. */
async function sharded(name: string, weightMap?: Record<string, string>): Promise<string> {
  const d = join(dir, name);
  await mkdir(d);
  await writeSafetensors(join(d, 'model-00001-of-00002.safetensors'), { a: tensor([1, 2, 3], [3]), b: tensor(new Int32Array([4, 5]), [2]) });
  await writeSafetensors(join(d, 'model-00002-of-00002.safetensors'), { c: tensor([6, 7, 8, 9], [2, 2], { dtype: 'bf16' }) });
  const map = weightMap ?? { a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' };
  await writeFile(join(d, INDEX_FILE), JSON.stringify({ metadata: { total_size: 28 }, weight_map: map }));
  return d;
}

describe('openCheckpoint', () => {
  it('loads a sharded checkpoint from its folder, reporting progress over all shards', async () => {
    const d = await sharded('ok');
    const ckpt = await openCheckpoint(d);
    expect(ckpt.path).toBe(join(d, INDEX_FILE));
    expect(ckpt.names.sort()).toEqual(['a', 'b', 'c']);
    expect(ckpt.fileOf('c')).toBe(join(d, 'model-00002-of-00002.safetensors'));
    expect(ckpt.tensors.get('c')).toMatchObject({ dtype: 'bf16', shape: [2, 2] });

    const events: ProgressEvent[] = [];
    const all = await ckpt.readAll({ onProgress: (e) => events.push(e) });
    expect(Array.from(await all.a!.data())).toEqual([1, 2, 3]);
    expect(Array.from(await all.b!.data())).toEqual([4, 5]);
    expect(Array.from(await all.c!.data())).toEqual([6, 7, 8, 9]);
    expect(all.c!.name).toBe('c');
    expect(events.map((e) => e.bytesDone)).toEqual([12, 20, 28]); // a (f32 x3), b (i32 x2), then the second shard
    expect(events.every((e) => e.bytesTotal === 28)).toBe(true);
    expect(events.map((e) => e.tensor)).toEqual(['a', 'b', 'c']);

    const one = await ckpt.read('b');
    expect(Array.from(await one.data())).toEqual([4, 5]);
    await expect(ckpt.read('zz')).rejects.toThrow(/no tensor 'zz' in this checkpoint/);
    await ckpt.close();
  });

  it('opens a single file, or a folder with model.safetensors', async () => {
    const d = join(dir, 'single');
    await mkdir(d);
    await writeSafetensors(join(d, 'model.safetensors'), { w: tensor([1], [1]) }, { format: 'pt' });
    for (const p of [d, join(d, 'model.safetensors')]) {
      const ckpt = await openCheckpoint(p);
      expect(ckpt.names).toEqual(['w']);
      expect(ckpt.metadata).toEqual({ format: 'pt' });
      await ckpt.close();
    }
  });

  it('refuses a missing shard, naming the index and the shard', async () => {
    const d = await sharded('missing-shard', { a: 'model-00001-of-00002.safetensors', c: 'model-00003-of-00003.safetensors' });
    await expect(openCheckpoint(d)).rejects.toThrow(/model\.safetensors\.index\.json: weight_map: shard 'model-00003-of-00003\.safetensors' does not exist/);
  });

  it('refuses an index listing tensors its shard lacks, all of them in one error', async () => {
    const s1 = 'model-00001-of-00002.safetensors';
    const d = await sharded('missing-tensor', { a: s1, x: s1, y: 'model-00002-of-00002.safetensors' });
    const err = await openCheckpoint(d).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).file).toBe(join(d, INDEX_FILE));
    expect((err as Error).message).toMatch(/weight_map lists tensors their shard lacks: 'x' \(in model-00001-of-00002\.safetensors\), 'y' \(in model-00002-of-00002\.safetensors\)/);
  });

  it('refuses a malformed shard, naming the shard', async () => {
    const d = await sharded('bad-shard');
    await writeFile(join(d, 'model-00002-of-00002.safetensors'), 'garbage');
    await expect(openCheckpoint(d)).rejects.toThrow(/model-00002-of-00002\.safetensors: header length: file is 7 bytes/);
  });

  it('refuses a weight_map pointing outside the folder, and an index that is not JSON', async () => {
    await expect(openCheckpoint(await sharded('escape', { a: '../secret.safetensors' }))).rejects.toThrow(/weight_map\['a'\]: "\.\.\/secret\.safetensors" is not a file name next to the index/);
    const d = join(dir, 'bad-index');
    await mkdir(d);
    await writeFile(join(d, INDEX_FILE), '{ nope');
    await expect(openCheckpoint(d)).rejects.toThrow(/index\.json: not a readable JSON file/);
  });

  it('refuses a folder with no checkpoint', async () => {
    const d = join(dir, 'empty');
    await mkdir(d);
    await expect(openCheckpoint(d)).rejects.toThrow(/model\.safetensors: cannot open/);
  });
});

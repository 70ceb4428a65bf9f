import { join } from 'node:path';
import { CheckpointError, tensor } from '@phalanx/core';
import { describe, expect, it } from 'vitest';
import { type ExpectedTensor, expandLayers, matchTensorNames, openCheckpoint, writeSafetensors } from '../src/index.js';
import { tempDir } from './helpers.js';

const EXPECTED: ExpectedTensor[] = expandLayers(
  [
    { name: 'model.embed_tokens.weight', shape: [10, 4] },
    { name: 'model.layers.{l}.self_attn.q_proj.weight', shape: [4, 4] },
    { name: 'model.layers.{l}.mlp.up_proj.weight', shape: [8, 4] },
    { name: 'model.layers.{l}.self_attn.q_norm.weight', shape: [[2], [4]] }, // per head or per channel
    { name: 'model.norm.weight', shape: [4] },
    { name: 'lm_head.weight', shape: [10, 4], optional: true },
  ],
  2,
);

function shapesOf(entries: Record<string, number[]>): Map<string, { shape: number[] }> {
  return new Map(Object.entries(entries).map(([k, shape]) => [k, { shape }]));
}

const GOOD: Record<string, number[]> = {
  'model.embed_tokens.weight': [10, 4],
  'model.layers.0.self_attn.q_proj.weight': [4, 4],
  'model.layers.1.self_attn.q_proj.weight': [4, 4],
  'model.layers.0.mlp.up_proj.weight': [8, 4],
  'model.layers.1.mlp.up_proj.weight': [8, 4],
  'model.layers.0.self_attn.q_norm.weight': [2],
  'model.layers.1.self_attn.q_norm.weight': [4],
  'model.norm.weight': [4],
};

describe('matchTensorNames', () => {
  it('maps exact names, skipping an absent optional tensor', () => {
    const m = matchTensorNames('ckpt', EXPECTED, shapesOf(GOOD));
    expect(Object.keys(m)).toHaveLength(8);
    expect(m['model.norm.weight']).toBe('model.norm.weight');
  });

  it('maps by dotted suffix when the checkpoint adds or drops a prefix', () => {
    const present = Object.keys(GOOD).map((n) => n.replace(/^model\./, 'base.model.'));
    const m = matchTensorNames('ckpt', EXPECTED, present);
    expect(m['model.norm.weight']).toBe('base.model.norm.weight');
    expect(matchTensorNames('ckpt', [{ name: 'model.norm.weight' }], ['norm.weight'])).toEqual({ 'model.norm.weight': 'norm.weight' });
  });

  it('reports every missing, unexpected and misshapen tensor in ONE error', () => {
    const present = { ...GOOD, 'model.layers.0.mlp.up_proj.weight': [4, 8], 'model.layers.0.self_attn.gate.weight': [4] };
    delete (present as Record<string, unknown>)['model.layers.1.self_attn.q_proj.weight'];
    delete (present as Record<string, unknown>)['model.norm.weight'];
    let err: unknown;
    try {
      matchTensorNames('model.safetensors', EXPECTED, shapesOf(present));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CheckpointError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^model\.safetensors: tensors do not match the model/);
    expect(msg).toMatch(/missing tensors \(2\): model\.layers\.1\.self_attn\.q_proj\.weight \[4, 4\], model\.norm\.weight \[4\]/);
    expect(msg).toMatch(/unexpected tensors \(1\): model\.layers\.0\.self_attn\.gate\.weight/);
    expect(msg).toMatch(/model\.layers\.0\.mlp\.up_proj\.weight has shape \[4, 8\], expected \[8, 4\] \(transposed\?\)/);
  });

  it('names a shape outside the accepted alternatives', () => {
    expect(() => matchTensorNames('f', EXPECTED, shapesOf({ ...GOOD, 'model.layers.0.self_attn.q_norm.weight': [3] }))).toThrow(/q_norm\.weight has shape \[3\], expected \[2\] or \[4\]/);
  });

  it('catches a transposed weight of the same byte count in a real file', async () => {
    const path = join(await tempDir(), 'transposed.safetensors');
    await writeSafetensors(path, { 'proj.weight': tensor(new Float32Array(6), [3, 2]) });
    const ckpt = await openCheckpoint(path);
    expect(() => matchTensorNames(ckpt.path, [{ name: 'proj.weight', shape: [2, 3] }], ckpt.tensors)).toThrow(
      /transposed\.safetensors: tensors do not match the model:\n {2}proj\.weight has shape \[3, 2\], expected \[2, 3\] \(transposed\?\)/,
    );
    await ckpt.close();
  });
});

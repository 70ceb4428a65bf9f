/**
 * Hand-made malformed checkpoints through loadModel, the whole path: each is refused with a typed error that
 * names the file and the tensor or field. (The safetensors reader's own checks are tested case by case in
 * packages/checkpoint; these show they reach the user intact.)
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CheckpointError, ConfigError } from '@phalanx/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRaw } from '../../checkpoint/test/helpers.js';
import { loadModel } from '../src/index.js';
import { RANDOM_LLAMA_CONFIG, writeRandomLlama } from './checkpoint-dir.js';

let dir: string;
/** The random llama's safetensors header and data, to break. */
let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
let data: Uint8Array;
beforeAll(async () => {
  dir = join(tmpdir(), `phalanx-malformed-${process.pid}`);
  await writeRandomLlama(join(dir, 'good'));
  const bytes = await readFile(join(dir, 'good', 'model.safetensors'));
  const n = Number(bytes.readBigUInt64LE(0));
  header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  data = bytes.subarray(8 + n);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const EMBED = 'model.embed_tokens.weight'; // [256, 32] f32, first in the data
const entry = (name: string) => header[name]!;

/** A copy of the good checkpoint with `file` replaced by what `write` writes. */
async function broken(name: string, file: string, write: (path: string) => Promise<unknown>): Promise<string> {
  const d = join(dir, name);
  await writeRandomLlama(d);
  await write(join(d, file));
  return d;
}

type Case = [what: string, file: string, write: (path: string) => Promise<unknown>, type: typeof CheckpointError | typeof ConfigError, message: RegExp];
const withEntry = (name: string, patch: object) => ({ ...header, [name]: { ...entry(name), ...patch } });
const config = (patch: object) => (p: string) => writeFile(p, JSON.stringify({ ...RANDOM_LLAMA_CONFIG, ...patch }));

const CASES: Case[] = [
  ['an empty model.safetensors', 'model.safetensors', (p) => writeFile(p, ''), CheckpointError, /header length: file is 0 bytes/],
  ['a header length past EOF', 'model.safetensors', (p) => writeRaw(p, header, data, 50_000_000n), CheckpointError, /header length: 50000000 bytes runs past the end of the \d+-byte file/],
  ['an absurd header length (2^60)', 'model.safetensors', (p) => writeRaw(p, header, data, 2n ** 60n), CheckpointError, /header length: 1152921504606846976 bytes is above the 100000000-byte limit/],
  ['a header that is not JSON', 'model.safetensors', (p) => writeRaw(p, `{"${EMBED}": {"dtype": "F32",}}`, data), CheckpointError, /header: not UTF-8 JSON/],
  ['offsets past EOF', 'model.safetensors', (p) => writeRaw(p, withEntry(EMBED, { data_offsets: [0, data.length + 4] }), data), CheckpointError, new RegExp(`tensor '${EMBED}': data_offsets \\[0, \\d+\\] run past the end of the data section`)],
  ['a size inconsistent with shape x dtype', 'model.safetensors', (p) => writeRaw(p, withEntry(EMBED, { shape: [255, 32] }), data), CheckpointError, new RegExp(`tensor '${EMBED}': data_offsets \\[0, 32768\\] hold 32768 bytes, but shape \\[255, 32\\] of F32 needs 32640`)],
  ['an unknown dtype', 'model.safetensors', (p) => writeRaw(p, withEntry(EMBED, { dtype: 'F8_E4M3' }), data), CheckpointError, new RegExp(`tensor '${EMBED}': dtype "F8_E4M3" is not supported`)],
  ['a negative shape', 'model.safetensors', (p) => writeRaw(p, withEntry(EMBED, { shape: [-256, -32] }), data), CheckpointError, new RegExp(`tensor '${EMBED}': shape \\[-256,-32\\] is not a list of non-negative integers`)],
  ['truncated data', 'model.safetensors', (p) => writeRaw(p, header, data.subarray(0, data.length - 1)), CheckpointError, /tensor '[\w.]+': data_offsets \[\d+, \d+\] run past the end of the data section \(\d+ bytes; file truncated\?\)/],
  ['a transposed shape with the same byte count', 'model.safetensors', (p) => writeRaw(p, withEntry(EMBED, { shape: [32, 256] }), data), CheckpointError, new RegExp(`${EMBED} has shape \\[32, 256\\], expected \\[256, 32\\] \\(transposed\\?\\)`)],
  ['a missing tensor', 'model.safetensors', (p) => writeRaw(p, Object.fromEntries(Object.entries(header).filter(([n]) => n !== 'model.norm.weight')), data), CheckpointError, /missing tensors \(1\): model\.norm\.weight \[32\]/],
  ['an empty config.json', 'config.json', (p) => writeFile(p, ''), CheckpointError, /not valid JSON/],
  ['a config.json that is not JSON', 'config.json', (p) => writeFile(p, '{"model_type": "llama",'), CheckpointError, /not valid JSON/],
  ['heads not dividing the hidden size', 'config.json', config({ num_attention_heads: 5 }), ConfigError, /num_attention_heads: 5 heads do not divide hidden_size 32/],
  ['a missing hidden size', 'config.json', config({ hidden_size: undefined }), ConfigError, /hidden_size: missing \(required/],
  ['an absurd layer count', 'config.json', config({ num_hidden_layers: 2 ** 31 }), ConfigError, /num_hidden_layers: 2147483648 layers, but .*model\.safetensors holds 20 tensors/],
  ['an unsupported option a preset refuses', 'config.json', config({ mlp_bias: true }), ConfigError, /mlp_bias: true is not supported/],
];

describe('loadModel refuses malformed checkpoints with a typed error naming the file and the tensor or field', () => {
  it.each(CASES)('%s', async (what, file, write, type, message) => {
    const d = await broken(what.replaceAll(/\W+/g, '-'), file, write);
    const error = await loadModel(d, { backend: 'cpu' }).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(type);
    expect((error as CheckpointError).file).toBe(join(d, file));
    expect((error as Error).message).toMatch(message);
  });
});

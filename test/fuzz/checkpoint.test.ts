/**
 * Fuzzing @phalanx/checkpoint from the real files (test/fixtures/* and the tiny llama): every mutated
 * safetensors file or config.json is either read correctly or refused with a CheckpointError / ConfigError
 * naming the file and the field, never another error, never slowly, and an accepted file never allocates
 * more tensor memory than its size justifies. PHALANX_FUZZ_CASES=100000 for a long run.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Checkpoint, type ModelConfig, expandLayers, openCheckpoint, parseConfig, parseSafetensors } from '@phalanx/checkpoint';
import { CheckpointError, ConfigError, type Tensor, bytesPerElement } from '@phalanx/core';
import { PRESETS, type PresetDefinition } from '@phalanx/models';
import { modelPath } from '@phalanx/tiny-models';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mutator, fuzzCases, fuzzTimeout } from './mutate.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
const SEED_DIRS = [...readdirSync(FIXTURES).map((d) => join(FIXTURES, d)), modelPath('llama')];
const SAFETENSORS = SEED_DIRS.map((d) => readFileSync(join(d, 'model.safetensors')));
const CONFIGS = SEED_DIRS.map((d) => JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')) as unknown);

/** A hung or quadratic case shows as a slow one: generous, so a loaded CI machine does not fail it. */
const CASE_MS = 5000;
const SAFETENSORS_CASES = fuzzCases(400);
const CONFIG_CASES = fuzzCases(2000);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phalanx-fuzz-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** What one reader made of a file: its tensors, or the error it threw. */
type Outcome = { ok: true; tensors: Record<string, Tensor> } | { ok: false; error: unknown };

async function readEverything(open: () => Promise<Checkpoint>): Promise<Outcome> {
  try {
    const ckpt = await open();
    try {
      return { ok: true, tensors: await ckpt.readAll() };
    } finally {
      await ckpt.close();
    }
  } catch (error) {
    return { ok: false, error };
  }
}

describe('safetensors', () => {
  it(`every mutated file is read correctly or refused with a CheckpointError naming it (${SAFETENSORS_CASES} cases)`, async () => {
    let accepted = 0;
    for (let seed = 0; seed < SAFETENSORS_CASES; seed++) {
      const m = new Mutator(seed);
      // the tiny llama (5.5 MB) one case in eight: the fixtures are faster to copy and mutate
      const original = m.chance(1 / 8) ? SAFETENSORS.at(-1)! : m.pick(SAFETENSORS.slice(0, -1));
      const bytes = m.safetensors(original);
      const path = join(dir, `case-${seed}.safetensors`);
      await writeFile(path, bytes);
      const t0 = performance.now();
      const before = process.memoryUsage().arrayBuffers;
      const fromMemory = await readEverything(async () => parseSafetensors(bytes, path));
      const grown = process.memoryUsage().arrayBuffers - before;
      const fromFile = await readEverything(() => openCheckpoint(path));
      const ms = performance.now() - t0;
      const where = `seed ${seed}`;
      expect(ms, `${where}: took ${ms.toFixed(0)} ms`).toBeLessThan(CASE_MS);
      for (const outcome of [fromMemory, fromFile]) {
        if (outcome.ok) continue;
        expect(outcome.error, `${where}: ${String(outcome.error)}`).toBeInstanceOf(CheckpointError);
        expect((outcome.error as CheckpointError).file, where).toBe(path);
        expect((outcome.error as Error).message, where).toMatch(/: (header|tensor '|__metadata__)/);
      }
      // the two readers agree, to the message
      expect(fromFile.ok ? 'ok' : String(fromFile.error), where).toBe(fromMemory.ok ? 'ok' : String(fromMemory.error));
      if (!fromMemory.ok || !fromFile.ok) continue;
      accepted++;
      // tensor bytes come from the file: each tensor's size is its byte range's, all of them fit in the file,
      // and reading them grew memory by about that much (the file's bytes are the caller's)
      const ckpt = parseSafetensors(bytes, path);
      let total = 0;
      for (const [name, t] of Object.entries(fromMemory.tensors)) {
        const info = ckpt.tensors.get(name)!;
        expect(t.shape, `${where}: ${name}`).toEqual(info.shape);
        expect(t.size * (info.storedDType === 'I64' ? 8 : bytesPerElement(t.dtype)), `${where}: ${name}`).toBe(info.end - info.begin);
        expect(await t.rawData(), `${where}: ${name}`).toEqual(await fromFile.tensors[name]!.rawData());
        total += info.end - info.begin;
      }
      expect(total, where).toBeLessThanOrEqual(bytes.length);
      expect(grown, `${where}: reading grew array buffers by ${grown} bytes for a ${bytes.length}-byte file`).toBeLessThan(2 * bytes.length + 2 ** 20);
      for (const t of [...Object.values(fromMemory.tensors), ...Object.values(fromFile.tensors)]) t.dispose();
      await rm(path);
    }
    expect(accepted).toBeGreaterThan(0); // the mutations are not all fatal: accepted files are checked too
  }, fuzzTimeout(SAFETENSORS_CASES, 100));
});

describe('config.json', () => {
  it(`every mutated config is parsed or refused with a ConfigError naming the file and field (${CONFIG_CASES} cases)`, () => {
    let accepted = 0;
    for (let seed = 0; seed < CONFIG_CASES; seed++) {
      const m = new Mutator(seed);
      const text = m.json(m.pick(CONFIGS));
      const where = `seed ${seed}: ${text.slice(0, 300)}`;
      const t0 = performance.now();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        continue; // a file that is not JSON never reaches parseConfig: loadModel refuses it (see the models fuzz)
      }
      try {
        const config = parseConfig(json, { file: 'fuzz/config.json' });
        // what loadModel does next with it: the tensor list, which absurd sizes must not blow up
        const preset = PRESETS[config.preset] as PresetDefinition<ModelConfig>;
        const expected = expandLayers(preset.tensors(config), Math.min(config.numHiddenLayers, 4)); // loadModel bounds the layers by the checkpoint's tensors
        expect(expected.length, where).toBeGreaterThan(0);
        accepted++;
      } catch (e) {
        expect(e, `${where}: ${String(e)}`).toBeInstanceOf(ConfigError);
        expect((e as ConfigError).file, where).toBe('fuzz/config.json');
        expect((e as ConfigError).field, where).not.toBe('');
      }
      expect(performance.now() - t0, where).toBeLessThan(CASE_MS);
    }
    expect(accepted).toBeGreaterThan(0);
  }, fuzzTimeout(CONFIG_CASES, 10));
});

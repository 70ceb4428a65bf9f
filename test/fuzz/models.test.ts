/**
 * Fuzzing @phalanx/models' loading from the real files: checkpoint directories (test/fixtures/*) with one
 * mutated file, the tiny llama's tokenizer files, and chat templates. Every case either loads and runs (a
 * forward, two generated tokens, a rendered chat) or is refused with a Phalanx error naming the file; never a
 * TypeError / RangeError / SyntaxError from inside, never slowly. PHALANX_FUZZ_CASES=100000 for a long run.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CheckpointError, ConfigError, InputError, PhalanxError } from '@phalanx/core';
import { type Model, Tokenizer, loadModel } from '@phalanx/models';
import { modelPath } from '@phalanx/tiny-models';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { byteTokenizerJson } from '../../packages/models/test/checkpoint-dir.js';
import { Mutator, fuzzCases, fuzzTimeout } from './mutate.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
const FIXTURE_DIRS = readdirSync(FIXTURES).map((d) => join(FIXTURES, d));
const TINY = modelPath('llama');
const read = (file: string) => readFileSync(join(TINY, file), 'utf8');
const TOKENIZER_FILES = {
  tokenizer: JSON.parse(read('tokenizer.json')) as unknown,
  config: JSON.parse(read('tokenizer_config.json')) as Record<string, unknown>,
  generationConfig: JSON.parse(read('generation_config.json')) as unknown,
};
const TEMPLATE = TOKENIZER_FILES.config.chat_template as string;
/** For the template cases: a byte-level tokenizer with the tiny llama's special token, 50x faster to build than its own. */
const BYTE_TOKENIZER = {
  ...byteTokenizerJson(),
  added_tokens: [{ id: 256, content: '<|endoftext|>', special: true, single_word: false, lstrip: false, rstrip: false, normalized: false }],
};
const CHAT = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi {{ there }} {% raw %}' },
  { role: 'assistant', content: 'Hello.' },
  { role: 'user', content: 'Again?' },
];

/** Jinja that templates in the wild use, and some that loops, recurses, grows or reaches for the host. */
const JINJA = [
  '{{ bos_token }}', '{% for m in messages %}', '{% endfor %}', '{% if add_generation_prompt %}', '{% endif %}', '{% else %}',
  "{{ m['content'] }}", '{{ messages[0].role }}', "{{ raise_exception('no') }}", '{% set x = 1 %}', '{{ x | length }}', '{{ messages | tojson }}',
  '{% for i in range(10**9) %}', '{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}',
  '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}', '{% set ns = namespace(s="ab") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}',
  '{{ process }}', '{{ globalThis }}', "{{ ''.constructor.constructor('return process')() }}", '{{ messages.__proto__ }}', '{{ cycler.__init__.__globals__ }}',
  '{{', '}}', '{%', '%}', '{#', '#}', '(', ')', '[', ']', '|', "'", '"', '~', '*', '**',
];

/** A hung or quadratic case shows as a slow one: generous, so a loaded CI machine does not fail it. */
const CASE_MS = 10_000;
const CASES = { directories: fuzzCases(400), tinyLlama: fuzzCases(10), tokenizers: fuzzCases(200), templates: fuzzCases(300) };

let dir: string;
beforeAll(async () => {
  dir = join(tmpdir(), `phalanx-fuzz-models-${process.pid}`);
  await mkdir(dir, { recursive: true });
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** A directory with `files` written and every other file of `from` linked. */
async function checkpointDir(name: string, from: string, files: Record<string, string | Uint8Array>): Promise<string> {
  const d = join(dir, name);
  await mkdir(d);
  for (const f of await readdir(from)) if (!(f in files)) await symlink(join(from, f), join(d, f));
  for (const [f, content] of Object.entries(files)) await writeFile(join(d, f), content);
  return d;
}

/** Loads `d` and runs it; any error must be a Phalanx one, and a load error must name a file in `d`. */
async function expectLoadsOrRefuses(d: string, where: string, prompt: { inputIds: number[] } | { messages: typeof CHAT }): Promise<'loaded' | 'refused'> {
  const t0 = performance.now();
  let model: Model;
  try {
    model = await loadModel(d, { backend: 'cpu' });
  } catch (e) {
    expect(e, `${where}: ${String(e)}`).toSatisfy((x) => x instanceof CheckpointError || x instanceof ConfigError);
    expect((e as CheckpointError).file.startsWith(d), `${where}: ${String(e)}`).toBe(true);
    return 'refused';
  }
  try {
    // what a loaded model does: a forward, then a short generation (a typed error, e.g. non-finite logits or a context of 1, is fine)
    const { logits } = await model.forward([[0, 1]]);
    logits.dispose();
    await model.generate({ ...prompt, maxNewTokens: 2, seed: 1 }).complete();
  } catch (e) {
    expect(e, `${where}: ${String(e)}`).toBeInstanceOf(PhalanxError);
  } finally {
    model.dispose();
  }
  expect(performance.now() - t0, where).toBeLessThan(CASE_MS);
  return 'loaded';
}

describe('loadModel', () => {
  it(`a checkpoint directory with a mutated config.json, generation_config.json or model.safetensors loads and runs, or is refused naming the file (${CASES.directories} cases)`, async () => {
    const outcomes = { loaded: 0, refused: 0 };
    for (let seed = 0; seed < CASES.directories; seed++) {
      const m = new Mutator(seed);
      const from = m.pick(FIXTURE_DIRS);
      const file = m.pick(readdirSync(from).filter((f) => f !== 'expected.json'));
      const original = readFileSync(join(from, file));
      const mutated = file.endsWith('.safetensors')
        ? m.safetensors(original)
        : m.chance(0.8)
          ? m.json(JSON.parse(original.toString('utf8')))
          : m.bytes(original);
      const d = await checkpointDir(`load-${seed}`, from, { [file]: mutated });
      outcomes[await expectLoadsOrRefuses(d, `seed ${seed} (${file} of ${from})`, { inputIds: [0, 1] })]++;
      await rm(d, { recursive: true });
    }
    expect(outcomes.loaded).toBeGreaterThan(0);
    expect(outcomes.refused).toBeGreaterThan(0);
  }, fuzzTimeout(CASES.directories, 100));

  it(`the tiny llama with a mutated tokenizer file loads and chats, or is refused naming the file (${CASES.tinyLlama} cases)`, async () => {
    const files = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json'];
    for (let seed = 0; seed < CASES.tinyLlama; seed++) {
      const m = new Mutator(seed);
      const file = m.pick(files);
      const d = await checkpointDir(`tok-${seed}`, TINY, { [file]: m.chance(0.8) ? m.json(JSON.parse(read(file))) : m.bytes(new TextEncoder().encode(read(file))) });
      await expectLoadsOrRefuses(d, `seed ${seed} (${file})`, { messages: CHAT });
      await rm(d, { recursive: true });
    }
  }, fuzzTimeout(CASES.tinyLlama, 2000));
});

describe('Tokenizer', () => {
  it(`mutated tokenizer.json / tokenizer_config.json / generation_config.json give a tokenizer that works, or a typed error naming the file (${CASES.tokenizers} cases)`, () => {
    let built = 0;
    for (let seed = 0; seed < CASES.tokenizers; seed++) {
      const m = new Mutator(seed);
      const key = m.pick(['tokenizer', 'config', 'config', 'generationConfig'] as const);
      let mutated: unknown;
      try {
        mutated = JSON.parse(m.json(TOKENIZER_FILES[key]));
      } catch {
        continue; // unparsable JSON is refused before the Tokenizer sees it (readJson, fuzzed through loadModel above)
      }
      const where = `seed ${seed} (${key})`;
      const t0 = performance.now();
      let tok: Tokenizer;
      try {
        tok = new Tokenizer({ ...TOKENIZER_FILES, [key]: mutated }, 'fuzz');
      } catch (e) {
        expect(e, `${where}: ${String(e)}`).toSatisfy((x) => x instanceof CheckpointError || x instanceof ConfigError);
        expect((e as CheckpointError).file, where).toMatch(/^fuzz\/(tokenizer|tokenizer_config|generation_config)\.json$/);
        continue;
      }
      built++;
      const ids = tok.encode('The jury said, "Hello" 123.');
      expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize), where).toBe(true);
      expect(typeof tok.decode(ids), where).toBe('string');
      try {
        expect(typeof tok.applyChatTemplate(CHAT, { addGenerationPrompt: true }), where).toBe('string');
      } catch (e) {
        expect(e, `${where}: ${String(e)}`).toSatisfy((x) => x instanceof InputError || x instanceof ConfigError);
      }
      expect(performance.now() - t0, where).toBeLessThan(CASE_MS);
    }
    expect(built).toBeGreaterThan(0);
  }, fuzzTimeout(CASES.tokenizers, 100));
});

describe('chat templates', () => {
  it(`a mutated template renders, or is refused at load (ConfigError) or render (InputError) (${CASES.templates} cases)`, () => {
    let rendered = 0;
    for (let seed = 0; seed < CASES.templates; seed++) {
      const m = new Mutator(seed);
      const template = m.text(TEMPLATE, JINJA);
      const where = `seed ${seed}: ${JSON.stringify(template).slice(0, 400)}`;
      const t0 = performance.now();
      let tok: Tokenizer;
      try {
        tok = new Tokenizer({ tokenizer: BYTE_TOKENIZER, config: TOKENIZER_FILES.config, chatTemplate: template }, 'fuzz');
      } catch (e) {
        expect(e, `${where}: ${String(e)}`).toBeInstanceOf(ConfigError);
        expect((e as ConfigError).file, where).toBe('fuzz/chat_template.jinja');
        continue;
      }
      try {
        const text = tok.applyChatTemplate(CHAT, { addGenerationPrompt: m.chance(0.5) });
        expect(text.length, where).toBeLessThanOrEqual(2 ** 20);
        expect(text, where).not.toMatch(/\[object |function |native code|process\b.*env/);
        rendered++;
      } catch (e) {
        expect(e, `${where}: ${String(e)}`).toBeInstanceOf(InputError);
      }
      expect(performance.now() - t0, where).toBeLessThan(CASE_MS);
    }
    expect(rendered).toBeGreaterThan(0);
  }, fuzzTimeout(CASES.templates, 50));
});

/** Inputs the fuzzer found that once crashed, hung or named the wrong file, minimized. */
describe('regressions', () => {
  const PARCAE = join(FIXTURES, 'parcae-f32');
  const parcaeConfig = (patch: object) => JSON.stringify({ ...JSON.parse(readFileSync(join(PARCAE, 'config.json'), 'utf8')), ...patch });
  const refusal = async (d: string) => loadModel(d, { backend: 'cpu' }).then(() => undefined, (e: unknown) => e);

  it('num_loops 2^32 (a RangeError building the layer schedule) is a ConfigError', async () => {
    const d = await checkpointDir('num-loops', PARCAE, { 'config.json': parcaeConfig({ num_loops: 2 ** 32 }) });
    expect(await refusal(d)).toEqual(new ConfigError(join(d, 'config.json'), 'num_loops', 'expected an integer from 0 to 1024, got 4294967296'));
  });

  it('local windows of 2^40 tokens (a RangeError allocating the KV ring) load and generate: the ring is at most the capacity', async () => {
    const d = await checkpointDir('window', PARCAE, { 'config.json': parcaeConfig({ local_window_size_early: 2 ** 40, local_window_size_late: 2 ** 40 }) });
    const model = await loadModel(d, { backend: 'cpu' });
    expect((await model.generate({ inputIds: [0, 1], maxNewTokens: 2, seed: 1 }).complete()).tokenIds).toHaveLength(2);
    model.dispose();
  });

  it("a preset's own config check names the checkpoint's config.json, not a bare 'config.json'", async () => {
    const d = await checkpointDir('parallel-start', PARCAE, { 'config.json': parcaeConfig({ parallel_start_layer: 2 }) });
    const error = await refusal(d);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).file).toBe(join(d, 'config.json'));
    expect((error as ConfigError).field).toBe('parallel_start_layer');
  });

  it('a token id of 2^31 in tokenizer.json (a 150 s hang in the tokenizer runtime) is a ConfigError naming it', async () => {
    const tokenizer = JSON.parse(read('tokenizer.json')) as { model: { vocab: Record<string, number> } };
    tokenizer.model.vocab['Ġstatement'] = 2 ** 31;
    const d = await checkpointDir('token-id', TINY, { 'tokenizer.json': JSON.stringify(tokenizer) });
    const t0 = performance.now();
    expect(await refusal(d)).toEqual(new ConfigError(join(d, 'tokenizer.json'), 'model.vocab["Ġstatement"]', '2147483648 is far past the 4100 tokens (ids must be below 9224)'));
    expect(performance.now() - t0).toBeLessThan(CASE_MS);
  });
});

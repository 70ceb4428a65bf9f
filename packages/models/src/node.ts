/** The Node side of loading: checkpoint directories on disk, and preset names (the tiny models). */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Preset, openCheckpoint } from '@phalanx/checkpoint';
import { CheckpointError, InputError } from '@phalanx/core';
import { urlSource } from './fetch.js';
import { type LoadModelOptions, loadFrom } from './load.js';
import type { Model } from './model.js';
import { PRESETS } from './presets/index.js';
import type { CheckpointSource } from './source.js';
import { TOKENIZER_FILE, type Tokenizer, readTokenizer } from './tokenizer.js';

/**
 * Loads a Hugging Face-style checkpoint (config.json, model.safetensors or a sharded index, optional tokenizer
 * files) into its preset on a backend. `source` is a directory; an http(s) URL of one (a string or a URL);
 * a file: URL; or a preset name, for the tiny trained checkpoint of @phalanx/tiny-models.
 *
 * @example
 * const model = await loadModel('spartacus');                       // the embedded tiny model
 * for await (const { text } of model.generate({ prompt: 'The jury said', maxNewTokens: 40 })) process.stdout.write(text);
 */
export async function loadModel(source: string | URL, options: LoadModelOptions = {}): Promise<Model> {
  if (source instanceof URL && source.protocol !== 'file:') return loadFrom(urlSource(source, options), options);
  if (typeof source === 'string' && /^https?:/i.test(source)) return loadFrom(urlSource(new URL(source), options), options);
  const dir = source instanceof URL ? fileURLToPath(source) : await resolveDirectory(source);
  return loadFrom(directorySource(dir), options);
}

/**
 * Reads a checkpoint folder's tokenizer files (see `readTokenizer`); a folder without tokenizer.json is a
 * CheckpointError naming it.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const tokenizer = await readTokenizer(directorySource(dir));
  if (!tokenizer) throw new CheckpointError(join(dir, TOKENIZER_FILE), 'missing');
  return tokenizer;
}

function directorySource(dir: string): CheckpointSource {
  return {
    location: dir,
    file: (name) => join(dir, name),
    async readText(name, required) {
      const path = join(dir, name);
      try {
        return await readFile(path, 'utf8');
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (!required && code === 'ENOENT') return undefined;
        throw new CheckpointError(path, code === 'ENOENT' ? 'missing' : `not readable (${(e as Error).message})`, { cause: e });
      }
    },
    openCheckpoint: () => openCheckpoint(dir),
  };
}

/** A directory as given, or a preset name's tiny checkpoint from @phalanx/tiny-models. */
async function resolveDirectory(source: string): Promise<string> {
  if (typeof source !== 'string' || source.length === 0) throw new InputError('loadModel: pass a checkpoint directory, a URL or a preset name');
  const info = await stat(source).catch(() => null);
  if (info?.isDirectory()) return source;
  if (info) throw new CheckpointError(source, 'is a file; loadModel takes the checkpoint directory (config.json, model.safetensors, tokenizer files)');
  if (!(source in PRESETS)) throw new CheckpointError(source, `no such directory, and not a preset name (${Object.keys(PRESETS).join(', ')})`);
  const name = '@phalanx/tiny-models'; // optional: a variable keeps bundlers and tsc from requiring it
  const tiny = (await import(name).catch(() => {
    throw new CheckpointError(source, `the tiny models are in the optional package @phalanx/tiny-models; install it or pass a checkpoint directory`);
  })) as { modelPath(preset: Preset): string };
  return tiny.modelPath(source as Preset);
}

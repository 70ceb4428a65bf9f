import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type ModelConfig, type Preset, type ProgressEvent, expandLayers, loadConfig, matchTensorNames, openCheckpoint } from '@phalanx/checkpoint';
import { type Backend, CheckpointError, ConfigError, InputError, type Tensor, cast, getBackend } from '@phalanx/core';
import '@phalanx/webgpu'; // registers the 'webgpu' backend for 'auto'
import { Model } from './model.js';
import { type PresetDefinition, Weights } from './network.js';
import { PRESETS } from './presets/index.js';
import { TOKENIZER_FILE, type Tokenizer, loadTokenizer } from './tokenizer.js';

export interface LoadModelOptions {
  /** 'cpu', 'webgpu', 'auto' (the best available; the default) or a Backend. */
  backend?: 'cpu' | 'webgpu' | 'auto' | Backend;
  /**
   * Storage of the projection and embedding matrices on the backend: 'f32' (the default), or 'f16' / 'bf16' to
   * halve their memory and bandwidth (kernels upcast on read; arithmetic stays f32). Other tensors are f32.
   */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** Reading progress over the checkpoint's bytes. */
  onProgress?: (event: ProgressEvent) => void;
}

/** Matrices a linear or embedding kernel reads, which `dtype` may keep in half precision. */
const isMatrix = (name: string, t: Tensor) => t.rank === 2 && /(_proj|lm_head|embed_tokens|token_to_state|state_projection)\.weight$/.test(name);

/**
 * Loads a Hugging Face-style checkpoint directory (config.json, safetensors, optional tokenizer files) into
 * its preset on a backend; or, given a preset name, the tiny trained checkpoint of @phalanx/tiny-models.
 *
 * @example
 * const model = await loadModel('spartacus');                       // the embedded tiny model
 * for await (const { text } of model.generate({ prompt: 'The jury said', maxNewTokens: 40 })) process.stdout.write(text);
 */
export async function loadModel(source: string, options: LoadModelOptions = {}): Promise<Model> {
  const dir = await resolveSource(source);
  const config = await loadConfig(join(dir, 'config.json'));
  const preset = PRESETS[config.preset] as PresetDefinition<ModelConfig> | undefined;
  if (!preset) throw new ConfigError(join(dir, 'config.json'), 'model_type', `preset '${config.preset}' is not built yet`);
  const backend = typeof options.backend === 'object' ? options.backend : await getBackend(options.backend ?? 'auto');
  const dtype = options.dtype ?? 'f32';
  if (!['f32', 'f16', 'bf16'].includes(dtype)) throw new InputError(`loadModel: dtype must be 'f32', 'f16' or 'bf16', got ${JSON.stringify(dtype)}`);

  const ckpt = await openCheckpoint(dir);
  const tensors = new Map<string, Tensor>();
  try {
    const expected = expandLayers(preset.tensors(config), config.numHiddenLayers);
    const names = matchTensorNames(ckpt.path, expected, ckpt.tensors);
    const raw = await ckpt.readAll({ names: Object.values(names), onProgress: options.onProgress });
    for (const [want, have] of Object.entries(names)) {
      const t = raw[have]!;
      const target = isMatrix(want, t) ? dtype : 'f32';
      const converted = t.dtype === target ? t : await cast(t, target);
      const placed = converted.backend === backend ? converted : await converted.to(backend);
      for (const x of new Set([t, converted])) if (x !== placed) x.dispose();
      tensors.set(want, placed);
    }
  } catch (e) {
    for (const t of tensors.values()) t.dispose();
    throw e;
  } finally {
    await ckpt.close();
  }
  const tokenizer = await optionalTokenizer(dir);
  const network = preset.build(config, new Weights(ckpt.path, tensors, backend));
  return new Model(network, tokenizer, preset.maxContext(config), dir);
}

async function optionalTokenizer(dir: string): Promise<Tokenizer | null> {
  const present = await stat(join(dir, TOKENIZER_FILE)).then(
    () => true,
    () => false,
  );
  return present ? loadTokenizer(dir) : null;
}

/** A directory as given, or a preset name's tiny checkpoint from @phalanx/tiny-models. */
async function resolveSource(source: string): Promise<string> {
  if (typeof source !== 'string' || source.length === 0) throw new InputError('loadModel: pass a checkpoint directory or a preset name');
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

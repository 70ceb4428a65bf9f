import { type ModelConfig, expandLayers, matchTensorNames, parseConfig } from '@phalanx/checkpoint/bytes';
import { type Backend, ConfigError, DeviceError, DeviceLostError, InputError, type Tensor, cast, formatShape, getBackend } from '@phalanx/core';
import '@phalanx/webgpu'; // registers the 'webgpu' backend for 'auto'
import type { LinearWeight } from '@phalanx/ops';
import { Model } from './model.js';
import { type PresetDefinition, Weights } from './network.js';
import { PRESETS } from './presets/index.js';
import { type QuantizeOption, isQuantized, quantizeClipSigmas, quantizeInt8 } from './quantize.js';
import { type CheckpointSource, readJson } from './source.js';
import { readTokenizer } from './tokenizer.js';

export interface LoadModelOptions {
  /** 'cpu', 'webgpu', 'auto' (the best available; the default) or a Backend. */
  backend?: 'cpu' | 'webgpu' | 'auto' | Backend;
  /**
   * Storage of the projection and embedding matrices on the backend: 'f32' (the default), or 'f16' / 'bf16' to
   * halve their memory and bandwidth (kernels upcast on read; arithmetic stays f32). Other tensors are f32.
   */
  dtype?: 'f32' | 'f16' | 'bf16';
  /**
   * 'int8' (or `{ bits: 8, clipSigmas }`): the attention and MLP projections and an untied lm_head are held as
   * int8 codes with one f16 scale per output row (round-to-nearest, SDClip scales; ~4x smaller than f32) and
   * run through the int8 kernels of `linear`. Embeddings, norms and other tensors follow `dtype`.
   */
  quantize?: QuantizeOption;
  /**
   * Scan every float weight for NaN and Infinity as it is read, refusing the checkpoint with a CheckpointError
   * naming the tensor and the first bad element. Default false: it costs one more pass over every weight on the CPU.
   */
  checkWeights?: boolean;
  /** Progress over the checkpoint's bytes: downloading them (from a URL), then reading its tensors. */
  onProgress?: (event: LoadProgressEvent) => void;
  /** The fetch used for a URL source (default: globalThis.fetch), e.g. to add headers or a cache. */
  fetch?: (url: URL) => Promise<Response>;
}

export interface LoadProgressEvent {
  /** 'download': a file fetched from a URL; 'read': the tensors read from the checkpoint. */
  stage: 'download' | 'read';
  /** The file's path or URL. */
  file: string;
  /** The tensor being read ('read' only). */
  tensor?: string;
  bytesDone: number;
  /** NaN while downloading from a server that sends no Content-Length. */
  bytesTotal: number;
}

/** Matrices a linear or embedding kernel reads, which `dtype` may keep in half precision. */
const isMatrix = (name: string, t: Tensor) => t.rank === 2 && /(_proj|lm_head|embed_tokens|token_to_state|state_projection)\.weight$/.test(name);

/**
 * Loads a checkpoint from its files (config.json, model.safetensors, optional tokenizer files), wherever
 * they are: the config is checked before the weights are opened, and every tensor name and shape before any
 * tensor is read.
 */
export async function loadFrom(source: CheckpointSource, options: LoadModelOptions): Promise<Model> {
  const configFile = source.file('config.json');
  const config = parseConfig(await readJson(source, 'config.json', true), { file: configFile });
  const preset = PRESETS[config.preset] as PresetDefinition<ModelConfig> | undefined;
  if (!preset) throw new ConfigError(configFile, 'model_type', `preset '${config.preset}' is not built yet`);
  const backend = typeof options.backend === 'object' ? options.backend : await getBackend(options.backend ?? 'auto');
  const dtype = options.dtype ?? 'f32';
  if (!['f32', 'f16', 'bf16'].includes(dtype)) throw new InputError(`loadModel: dtype must be 'f32', 'f16' or 'bf16', got ${JSON.stringify(dtype)}`);
  const clipSigmas = quantizeClipSigmas(options.quantize);

  const tokenizer = await readTokenizer(source); // before the weights: a bad tokenizer file fails fast
  const ckpt = await source.openCheckpoint();
  const tensors = new Map<string, LinearWeight>();
  try {
    // every layer holds tensors: more layers than tensors is a wrong config, refused before listing them all
    if (config.numHiddenLayers > ckpt.names.length) throw new ConfigError(configFile, 'num_hidden_layers', `${config.numHiddenLayers} layers, but ${ckpt.path} holds ${ckpt.names.length} tensors`);
    const expected = expandLayers(preset.tensors(config), config.numHiddenLayers);
    const names = matchTensorNames(ckpt.path, expected, ckpt.tensors);
    const onProgress = options.onProgress && ((e: Omit<LoadProgressEvent, 'stage'>) => options.onProgress!({ stage: 'read', ...e }));
    const raw = await ckpt.readAll({ names: Object.values(names), checkFinite: options.checkWeights, onProgress });
    for (const [want, have] of Object.entries(names)) {
      const t = raw[have]!;
      if (clipSigmas !== null && isQuantized(want)) {
        tensors.set(want, await quantizeInt8(t, clipSigmas, backend));
        t.dispose();
        continue;
      }
      const target = isMatrix(want, t) ? dtype : 'f32';
      const converted = t.dtype === target ? t : await cast(t, target);
      const placed = converted.backend === backend ? converted : await place(converted, backend, ckpt.fileOf(have), have);
      for (const x of new Set([t, converted])) if (x !== placed) x.dispose();
      tensors.set(want, placed);
    }
  } catch (e) {
    new Weights(ckpt.path, tensors, backend).dispose();
    throw e;
  } finally {
    await ckpt.close();
  }
  const network = preset.build(config, new Weights(ckpt.path, tensors, backend));
  try {
    await network.ready?.();
  } catch (e) {
    network.dispose();
    throw e;
  }
  return new Model(network, tokenizer, preset.maxContext(config), source.location);
}

/** `t` on `backend`; a tensor the device cannot hold (e.g. past its largest storage binding) is a DeviceError naming it. */
async function place(t: Tensor, backend: Backend, file: string, name: string): Promise<Tensor> {
  try {
    return await t.to(backend);
  } catch (e) {
    if (!(e instanceof DeviceError) || e instanceof DeviceLostError) throw e;
    throw new DeviceError(`${file}: tensor '${name}' ${formatShape(t.shape)}: ${e.message}`, { cause: e });
  }
}

/**
 * @phalanx/tiny-models: small checkpoints of every preset, trained on the Brown Corpus (tools/reference
 * train_tiny.py), in Hugging Face layout: config.json, model.safetensors (bf16), tokenizer files. They are the
 * embedded default models of `loadModel(presetName)` and the `phalanx` CLI.
 *
 * @example
 * import { modelPath } from '@phalanx/tiny-models';
 * const model = await loadModel(modelPath('spartacus')); // or simply loadModel('spartacus')
 */
import { fileURLToPath } from 'node:url';

export const TINY_MODELS = ['spartacus', 'nanohammer', 'parcae', 'llama'] as const;
export type TinyModel = (typeof TINY_MODELS)[number];

/** URL of a tiny model's directory (for fetch in a browser, or a file: URL in Node). */
export function modelUrl(name: TinyModel): URL {
  if (!TINY_MODELS.includes(name)) throw new Error(`@phalanx/tiny-models: no tiny model '${name}' (${TINY_MODELS.join(', ')})`);
  return new URL(`../models/${name}/`, import.meta.url); // src/ and dist/ both sit one level below the package root
}

/** Filesystem path of a tiny model's directory (Node). */
export function modelPath(name: TinyModel): string {
  return fileURLToPath(modelUrl(name));
}

/**
 * @phalanx/models in a browser (the package's "browser" export condition): the Node entry's API without the
 * filesystem. `loadModel` fetches a checkpoint directory served over HTTP.
 *
 * @example
 * import { loadModel } from '@phalanx/models';
 * const model = await loadModel('/models/spartacus/', { backend: 'webgpu', onProgress: (e) => bar(e.bytesDone / e.bytesTotal) });
 */
import { InputError } from '@phalanx/core';
import { urlSource } from './fetch.js';
import { type LoadModelOptions, loadFrom } from './load.js';
import type { Model } from './model.js';

export * from './api.js';

/**
 * Loads the checkpoint whose directory is at `source`: a URL, or a string resolved against the page's URL
 * (so '/models/llama/' works). It fetches config.json, tokenizer.json, tokenizer_config.json,
 * generation_config.json, chat_template.jinja (the last four optional) and model.safetensors, with download
 * progress.
 */
export async function loadModel(source: string | URL, options: LoadModelOptions = {}): Promise<Model> {
  let url: URL;
  try {
    url = new URL(source, (globalThis as { location?: { href: string } }).location?.href);
  } catch (e) {
    throw new InputError(`loadModel: ${JSON.stringify(String(source))} is not a URL (in a browser, pass the URL of the checkpoint's directory)`, { cause: e });
  }
  return loadFrom(urlSource(url, options), options);
}

/**
 * @phalanx/models: model presets (spartacus, nanohammer, parcae, llama) assembled from the mechanism
 * packages; loading Hugging Face-style checkpoints, generation, scoring, tokenizers (@huggingface/tokenizers)
 * and chat templates (@huggingface/jinja). This is the Node entry; browsers get browser.ts, whose `loadModel`
 * takes URLs.
 *
 * @example
 * import { loadModel } from '@phalanx/models';
 * const model = await loadModel('path/to/checkpoint', { backend: 'auto' });
 * const generation = model.generate({ prompt: 'The jury said', maxNewTokens: 40, temperature: 0.8, seed: 1 });
 * for await (const { text } of generation) process.stdout.write(text);
 * console.log((await generation.summary).decodeTokensPerSecond);
 * const { bitsPerByte } = await model.score(someText, { window: 256, stride: 128 });
 * model.dispose();
 */
export * from './api.js';
export { loadModel, loadTokenizer } from './node.js';

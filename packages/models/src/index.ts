/**
 * @phalanx/models: model presets (spartacus, nanohammer, parcae, llama) assembled from the mechanism
 * packages; loading Hugging Face-style checkpoints, generation, scoring, tokenizers (@huggingface/tokenizers)
 * and chat templates (@huggingface/jinja).
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
export { type GenerateOptions, type GenerateSummary, type TokenEvent, Generation } from './generate.js';
export { type LoadModelOptions, loadModel } from './load.js';
export { Model } from './model.js';
export { type DecodeState, type Network, type NetworkForwardOptions, type PresetDefinition, Weights } from './network.js';
export { PRESETS } from './presets/index.js';
export { type ScoreOptions, type ScoreResult, slidingWindows } from './score.js';
export {
  type ChatMessage,
  type ChatTemplateOptions,
  type TokenizerFiles,
  CHAT_TEMPLATE_FILE,
  GENERATION_CONFIG_FILE,
  TOKENIZER_CONFIG_FILE,
  TOKENIZER_FILE,
  Tokenizer,
  loadTokenizer,
} from './tokenizer.js';
export { type StopCheck, type TextStream, createTextStream, findStop } from './text-stream.js';

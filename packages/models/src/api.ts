/** What both entries (Node: index.ts, browser: browser.ts) export: everything but `loadModel`'s sources. */
export { type GenerateOptions, type GenerateSummary, type TokenEvent, Generation, sampleNextIds } from './generate.js';
export { type LoadModelOptions, type LoadProgressEvent } from './load.js';
export { Model } from './model.js';
export { type DecodeState, type Network, type NetworkForwardOptions, type PresetDefinition, type TokenIds, Weights } from './network.js';
export { PRESETS } from './presets/index.js';
export { type QuantizeOption, INT8_CLIP_SIGMAS, isQuantized } from './quantize.js';
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
} from './tokenizer.js';
export { type StopCheck, type TextStream, createTextStream, findStop } from './text-stream.js';

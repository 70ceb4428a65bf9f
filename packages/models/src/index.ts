/**
 * @phalanx/models: Model presets (spartacus, nanohammer, parcae, llama): loading, tokenizer, chat template, generation and scoring.
 *
 * So far: the text layer. Tokenizers from a checkpoint's tokenizer.json (run by @huggingface/tokenizers), chat
 * templates (rendered by @huggingface/jinja), streaming detokenization and stop strings.
 *
 * @example
 * import { loadTokenizer, createTextStream, findStop } from '@phalanx/models';
 * const tok = await loadTokenizer('Llama-3.2-1B-Instruct');
 * const ids = tok.encode(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true }), { addSpecialTokens: false });
 * const stream = createTextStream(tok);
 * stream.push(someId); // newly completed text
 */
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

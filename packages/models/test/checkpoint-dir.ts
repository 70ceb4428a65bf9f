/**
 * A tiny random llama checkpoint directory with a byte-level tokenizer: it loads and generates text wherever
 * a trained one does (Node, a URL, the browser playground's end-to-end test), without any download.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type LlamaConfig, writeSafetensors } from '@phalanx/checkpoint';
import { cpu } from '@phalanx/core';
import { llama } from '../src/presets/llama.js';
import { configOf, randomWeights } from './harness.js';

/** No eos id: generation always runs to maxNewTokens. */
export const RANDOM_LLAMA_CONFIG = {
  model_type: 'llama', vocab_size: 256, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, rms_norm_eps: 1e-5, max_position_embeddings: 256, tie_word_embeddings: true,
};

/** GPT-2's byte-to-character map: the 256 printable characters byte-level BPE writes bytes as. */
function byteChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : next++));
}

/** A byte-level BPE tokenizer.json without merges: one token per UTF-8 byte, ids 0..255. */
export function byteTokenizerJson(): Record<string, unknown> {
  const vocab = Object.fromEntries(byteChars().map((c, id) => [c, id]));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: byteLevel, post_processor: null, decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  };
}

/** Writes config.json, model.safetensors (random weights from `seed`), tokenizer.json and tokenizer_config.json into `dir`. */
export async function writeRandomLlama(dir: string, seed = 1): Promise<void> {
  await mkdir(dir, { recursive: true });
  const w = randomWeights(llama, configOf<LlamaConfig>(RANDOM_LLAMA_CONFIG), cpu, seed);
  await writeSafetensors(join(dir, 'model.safetensors'), Object.fromEntries(w.names.map((n) => [n, w.get(n)])));
  await writeFile(join(dir, 'config.json'), JSON.stringify(RANDOM_LLAMA_CONFIG));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(byteTokenizerJson()));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ clean_up_tokenization_spaces: false }));
}

import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import reference from 'llama3-tokenizer-js';

export { reference };

/** Meta's Llama-3 pre-tokenizer split, as its tokenizer.json writes it. */
const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Llama-3-Instruct's chat template, verbatim from its tokenizer_config.json. */
export const LLAMA3_CHAT_TEMPLATE =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const FIRST_SPECIAL = 128000;

/**
 * Meta-Llama-3-8B-Instruct's tokenizer.json rebuilt from llama3-tokenizer-js's baked vocabulary and merges
 * (so the tests need no download): the same vocabulary, merge ranks, pre-tokenizer, post-processor and decoder.
 */
export function llama3TokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  reference.vocabById.slice(0, FIRST_SPECIAL).forEach((token, id) => (vocab[token] = id));
  // The reference keys each merge as "left right" with its rank as the value; tokenizer.json lists them by rank.
  const merges = [...reference.merges.entries()].sort((a, b) => a[1] - b[1]).map(([pair]) => pair);
  const added_tokens = reference.vocabById.slice(FIRST_SPECIAL).map((content, i) => ({
    id: FIRST_SPECIAL + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const bos = '<|begin_of_text|>';
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_SPLIT }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: { [bos]: { id: bos, ids: [FIRST_SPECIAL], tokens: [bos] } },
        },
      ],
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges,
    },
  };
}

/** Llama-3-Instruct's tokenizer_config.json fields that matter here. */
export const LLAMA3_TOKENIZER_CONFIG = {
  bos_token: '<|begin_of_text|>',
  eos_token: '<|eot_id|>',
  chat_template: LLAMA3_CHAT_TEMPLATE,
  // Meta ships `true`, which rewrites " ." to "." on decode; off here so decode can be checked against the reference.
  clean_up_tokenization_spaces: false,
  model_max_length: 1000000000000000019884624838656,
  tokenizer_class: 'PreTrainedTokenizerFast',
};

export const LLAMA3_GENERATION_CONFIG = { bos_token_id: 128000, eos_token_id: [128001, 128009], do_sample: true, temperature: 0.6, top_p: 0.9 };

let tokenizerJsonText: string | undefined;

/** A checkpoint folder holding the Llama-3 tokenizer files; `files` overrides or adds files (a string is written as is, `null` leaves one out). */
export async function llama3Dir(files: Record<string, unknown> = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'phalanx-models-'));
  tokenizerJsonText ??= JSON.stringify(llama3TokenizerJson());
  const all: Record<string, unknown> = {
    'tokenizer.json': tokenizerJsonText,
    'tokenizer_config.json': LLAMA3_TOKENIZER_CONFIG,
    'generation_config.json': LLAMA3_GENERATION_CONFIG,
    ...files,
  };
  for (const [name, content] of Object.entries(all)) {
    if (content !== null) await writeFile(join(dir, name), typeof content === 'string' ? content : JSON.stringify(content));
  }
  return dir;
}

/** Text that exercises the pre-tokenizer split and byte-level BPE: accents, CJK, emoji, code, whitespace runs. */
export const TEXTS = [
  'Hello world!',
  "I'm sure they'll say it's fine; WE'VE seen it.",
  'Café crème, naïve façade, Ångström, Straße, ĳ',
  '日本語のテキストと中文混合，한국어도 있습니다。',
  'Emoji: 🦙🔥 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✨',
  'def f(x):\n    return {"a": [1, 2, 3]}[x] ** 2  # comment\n\n\tif x != 0:\n\t\tpass',
  '   leading spaces,\ttabs\t\tand   runs    of  spaces   \n\n\n  and newlines\r\n',
  'Numbers 1234567 3.14159 -42 1e-9 and 0x1F',
  'Special tokens inline: <|start_header_id|>user<|end_header_id|> hi<|eot_id|>',
  '',
];

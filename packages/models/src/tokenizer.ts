import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { CheckpointError, ConfigError, InputError } from '@phalanx/core';
import { renderBounded } from './chat-template.js';
import { type CheckpointSource, fileIn, readJson } from './source.js';

/** One chat turn as chat templates read it; templates may read more fields (tool_calls, name, ...). */
export interface ChatMessage {
  role: string;
  content: string;
  [field: string]: unknown;
}

export interface ChatTemplateOptions {
  /** End with the header of an assistant turn, so generation continues as the assistant. Default false. */
  addGenerationPrompt?: boolean;
  /** Tool definitions (JSON schema objects), passed to the template as `tools`. */
  tools?: object[];
}

/** The JSON of a checkpoint's tokenizer files; `generationConfig` is optional. */
export interface TokenizerFiles {
  tokenizer: unknown;
  config: unknown;
  generationConfig?: unknown;
  /** The contents of chat_template.jinja, which newer transformers write instead of `chat_template`. */
  chatTemplate?: string;
}

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const GENERATION_CONFIG_FILE = 'generation_config.json';
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';

/** Special tokens transformers passes to chat templates by name. */
const TEMPLATE_TOKENS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'];

/**
 * Reads a checkpoint's tokenizer.json and tokenizer_config.json (required once tokenizer.json exists), and
 * generation_config.json and chat_template.jinja (when present); null without tokenizer.json. A missing or
 * unparsable file is a CheckpointError naming it; a bad field is a ConfigError naming the file and the field.
 */
export async function readTokenizer(source: CheckpointSource): Promise<Tokenizer | null> {
  const tokenizer = await readJson(source, TOKENIZER_FILE, false);
  if (tokenizer === undefined) return null;
  const [config, generationConfig, chatTemplate] = await Promise.all([
    readJson(source, TOKENIZER_CONFIG_FILE, true),
    readJson(source, GENERATION_CONFIG_FILE, false),
    source.readText(CHAT_TEMPLATE_FILE, false),
  ]);
  return new Tokenizer({ tokenizer, config, generationConfig, chatTemplate }, source.location);
}

/**
 * A Hugging Face tokenizer (run by @huggingface/tokenizers) with the checkpoint's special ids and chat
 * template (rendered by @huggingface/jinja).
 *
 * @example
 * const tok = await loadTokenizer('Llama-3.2-1B-Instruct');
 * const prompt = tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
 * const ids = tok.encode(prompt, { addSpecialTokens: false }); // the template already wrote <|begin_of_text|>
 * tok.decode(ids, { skipSpecialTokens: true });
 */
export class Tokenizer {
  /** The id `encode` puts first when the tokenizer adds one, or null. */
  readonly bos: number | null;
  /** Ids that end generation: generation_config.json's `eos_token_id` (a list), else tokenizer_config.json's `eos_token`. */
  readonly eos: number[];
  /** One past the largest id, added tokens included: the embedding rows a model needs. */
  readonly vocabSize: number;
  private readonly hf: HfTokenizer;
  private readonly templateTokens: Record<string, string> = {};
  private readonly templates = new Map<string, Template>();
  private readonly templateFile: string;
  /** Each id's bytes (see tokenBytes), worked out on first use. */
  private byteCounts: Int32Array | undefined;
  private readonly byteLevel: boolean;
  private readonly specialIds: Set<number>;

  /** `dir` (a directory or URL) only names the files in errors. */
  constructor(files: TokenizerFiles, dir = '.') {
    const tokFile = fileIn(dir, TOKENIZER_FILE);
    const cfgFile = fileIn(dir, TOKENIZER_CONFIG_FILE);
    const genFile = fileIn(dir, GENERATION_CONFIG_FILE);
    const tokenizer = object(files.tokenizer, tokFile, '(file)');
    object(tokenizer.model, tokFile, 'model');
    if (typeof (tokenizer.model as Record<string, unknown>).type !== 'string') throw new ConfigError(tokFile, 'model.type', 'missing (expected a string such as "BPE")');
    if (tokenizer.added_tokens !== undefined && !Array.isArray(tokenizer.added_tokens)) throw new ConfigError(tokFile, 'added_tokens', 'expected a list');
    checkTokenIds(tokenizer, tokFile);
    const config = object(files.config, cfgFile, '(file)');
    try {
      this.hf = new HfTokenizer(tokenizer, config);
    } catch (e) {
      throw new CheckpointError(tokFile, `the tokenizer runtime refused it: ${(e as Error).message}`, { cause: e });
    }

    const isByteLevel = (part: unknown) => (part as { type?: unknown } | null)?.type === 'ByteLevel';
    const decoder = tokenizer.decoder as { type?: unknown; decoders?: unknown[] } | null | undefined;
    this.byteLevel = isByteLevel(decoder) || (Array.isArray(decoder?.decoders) && decoder.decoders.some(isByteLevel));
    this.specialIds = new Set(((tokenizer.added_tokens ?? []) as { id: number; special?: boolean }[]).filter((t) => t.special).map((t) => t.id));

    let maxId = -1;
    for (const id of this.hf.get_vocab(true).values()) maxId = Math.max(maxId, id); // a loop: 128k spread arguments overflow the stack
    this.vocabSize = maxId + 1;

    // Special tokens are strings, or {"content": ...} objects in configs written by older transformers.
    const tokenIds: Record<string, number | null> = {};
    for (const field of TEMPLATE_TOKENS) {
      const v = config[field];
      if (v === undefined || v === null) continue;
      const content = typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : v;
      if (typeof content !== 'string') throw new ConfigError(cfgFile, field, `expected a string or {"content": string}, got ${JSON.stringify(v)}`);
      this.templateTokens[field] = content;
      tokenIds[field] = this.hf.token_to_id(content) ?? null;
    }
    for (const field of ['bos_token', 'eos_token']) {
      if (tokenIds[field] === null) throw new ConfigError(cfgFile, field, `'${this.templateTokens[field]}' is not in ${TOKENIZER_FILE}'s vocabulary`);
    }

    // generation_config.json wins where it says something: Llama 3 Instruct stops on two ids there, one in tokenizer_config.json.
    const gen = files.generationConfig === undefined ? {} : object(files.generationConfig, genFile, '(file)');
    const id = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) < this.vocabSize;
    const genBos = gen.bos_token_id;
    if (genBos !== undefined && genBos !== null && !id(genBos)) throw new ConfigError(genFile, 'bos_token_id', `expected a token id below ${this.vocabSize}, got ${JSON.stringify(genBos)}`);
    const genEos = gen.eos_token_id;
    const genEosList = Array.isArray(genEos) ? genEos : genEos === undefined || genEos === null ? undefined : [genEos];
    if (genEosList !== undefined && !genEosList.every(id)) throw new ConfigError(genFile, 'eos_token_id', `expected token ids below ${this.vocabSize}, got ${JSON.stringify(genEos)}`);
    this.bos = genBos !== undefined ? (genBos as number | null) : (tokenIds.bos_token ?? null);
    this.eos = genEosList ?? (tokenIds.eos_token === undefined ? [] : [tokenIds.eos_token as number]);

    // A chat_template.jinja file replaces the config's field, as in transformers.
    this.templateFile = files.chatTemplate === undefined ? cfgFile : fileIn(dir, CHAT_TEMPLATE_FILE);
    const source = files.chatTemplate ?? config.chat_template;
    if (typeof source === 'string') this.addTemplate('default', source, 'chat_template');
    else if (Array.isArray(source)) {
      // Several named templates: [{ name: 'default', template }, { name: 'tool_use', template }].
      source.forEach((t: { name?: unknown; template?: unknown }, i) => {
        if (typeof t?.name !== 'string' || typeof t.template !== 'string') throw new ConfigError(cfgFile, `chat_template[${i}]`, 'expected {"name": string, "template": string}');
        this.addTemplate(t.name, t.template, `chat_template[${i}]`);
      });
    } else if (source !== undefined && source !== null) throw new ConfigError(cfgFile, 'chat_template', 'expected a string or a list of {"name", "template"}');
  }

  /** Token ids of `text`; `addSpecialTokens` (default true) adds what the post-processor adds, e.g. BOS. */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /**
   * Text of `ids`. `skipSpecialTokens` (default false) drops special tokens; `cleanUpSpaces` (default: the
   * config's `clean_up_tokenization_spaces`) joins spaces before punctuation as transformers does.
   */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean; cleanUpSpaces?: boolean } = {}): string {
    const bad = ids.findIndex((i) => !Number.isSafeInteger(i) || i < 0 || i >= this.vocabSize);
    if (bad >= 0) throw new InputError(`token id ${ids[bad]} at position ${bad} is outside the vocabulary (size ${this.vocabSize})`);
    if (ids.length === 0) return ''; // the runtime refuses an empty list
    return this.hf.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false, clean_up_tokenization_spaces: options.cleanUpSpaces });
  }

  /**
   * UTF-8 bytes of text that token `id` stands for, the denominator of bits per byte: 0 for special tokens;
   * for a byte-level BPE one byte per character of the token (each character is one byte); otherwise 1 for a
   * byte-fallback token <0xNN>, else the UTF-8 length of the piece with the SentencePiece space mark as a space.
   */
  tokenBytes(id: number): number {
    if (!this.byteCounts) {
      const utf8 = new TextEncoder();
      this.byteCounts = new Int32Array(this.vocabSize);
      for (let i = 0; i < this.vocabSize; i++) {
        const piece = this.hf.id_to_token(i);
        if (piece === undefined || this.specialIds.has(i)) continue;
        if (this.byteLevel) this.byteCounts[i] = piece.length;
        else this.byteCounts[i] = /^<0x[0-9A-Fa-f]{2}>$/.test(piece) ? 1 : utf8.encode(piece.replaceAll('\u2581', ' ')).length;
      }
    }
    if (!Number.isSafeInteger(id) || id < 0 || id >= this.vocabSize) throw new InputError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
    return this.byteCounts[id]!;
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  /**
   * Renders the chat template with `messages`, `add_generation_prompt`, `tools` and the special tokens
   * (`bos_token`, `eos_token`, ...). With `tools` a template named "tool_use" is used if there is one. The
   * template's `raise_exception(msg)` (jinja's built-in) and other render failures become an InputError
   * carrying the message, as does a template past CHAT_TEMPLATE_LIMITS (too much work or too long a string: a
   * loop, recursion or growth that would hang); no template is a ConfigError.
   */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    const template = (options.tools && this.templates.get('tool_use')) ?? this.templates.get('default');
    if (!template) {
      const why = this.templates.size ? `no template named "default" (has ${[...this.templates.keys()].join(', ')})` : 'missing: this tokenizer has no chat template';
      throw new ConfigError(this.templateFile, 'chat_template', why);
    }
    try {
      const inputChars = JSON.stringify(messages).length + (options.tools ? JSON.stringify(options.tools).length : 0);
      const items = {
        ...this.templateTokens,
        messages,
        ...(options.tools && { tools: options.tools }), // absent, not undefined: templates test `tools is defined`
        add_generation_prompt: options.addGenerationPrompt ?? false,
      };
      return renderBounded(template, items, inputChars);
    } catch (e) {
      // The template's own raise_exception(msg) throws a plain Error(msg), as does a runtime failure on these messages.
      throw new InputError(`chat template: ${(e as Error).message}`, { cause: e });
    }
  }

  private addTemplate(name: string, source: string, field: string): void {
    try {
      this.templates.set(name, new Template(source));
    } catch (e) {
      throw new ConfigError(this.templateFile, field, `not a template @huggingface/jinja can parse: ${(e as Error).message}`);
    }
  }
}

/**
 * Refuses a token id that is not a non-negative integer, or is far past the number of tokens (more than twice
 * as many, plus 1024): the runtime allocates by the largest id, so one absurd id would hang loading.
 */
function checkTokenIds(tokenizer: Record<string, unknown>, file: string): void {
  const { vocab } = tokenizer.model as { vocab?: unknown };
  const added = (tokenizer.added_tokens ?? []) as unknown[];
  const ids: [string, unknown][] = added.map((t, i) => [`added_tokens[${i}].id`, (t as { id?: unknown } | null)?.id]);
  let count = added.length;
  if (Array.isArray(vocab)) count += vocab.length; // Unigram: ids are positions
  else if (typeof vocab === 'object' && vocab !== null) {
    const entries = Object.entries(vocab);
    count += entries.length;
    for (const [token, id] of entries) ids.push([`model.vocab[${JSON.stringify(token)}]`, id]);
  }
  const limit = 2 * count + 1024;
  for (const [field, id] of ids) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw new ConfigError(file, field, `expected a token id (an integer >= 0), got ${JSON.stringify(id)}`);
    if ((id as number) >= limit) throw new ConfigError(file, field, `${id} is far past the ${count} tokens (ids must be below ${limit})`);
  }
}

function object(v: unknown, file: string, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(file, field, `expected a JSON object, got ${Array.isArray(v) ? 'a list' : JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

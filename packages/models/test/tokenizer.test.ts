import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError, ConfigError, InputError } from '@phalanx/core';
import { beforeAll, describe, expect, test } from 'vitest';
import { type Tokenizer, loadTokenizer } from '../src/index.js';
import { LLAMA3_TOKENIZER_CONFIG, TEXTS, llama3Dir, reference } from './llama3.js';

let tok: Tokenizer;
beforeAll(async () => {
  tok = await loadTokenizer(await llama3Dir());
});

describe('Llama-3 tokenizer.json against llama3-tokenizer-js', () => {
  test.each(TEXTS)('encode and decode %j', (text) => {
    expect(tok.encode(text)).toEqual(reference.encode(text, { bos: true, eos: false }));
    const ids = tok.encode(text, { addSpecialTokens: false });
    expect(ids).toEqual(reference.encode(text, { bos: false, eos: false }));
    expect(tok.decode(ids)).toBe(reference.decode(ids));
    expect(tok.decode(ids)).toBe(text);
  });

  test('special ids and vocabulary', () => {
    expect(tok.bos).toBe(128000);
    expect(tok.eos).toEqual([128001, 128009]); // generation_config.json's list
    expect(tok.vocabSize).toBe(128256);
    expect(tok.idToToken(128009)).toBe('<|eot_id|>');
    expect(tok.tokenToId('<|begin_of_text|>')).toBe(128000);
    expect(tok.tokenToId('Hello')).toBe(reference.vocabByString.get('Hello'));
    expect(tok.idToToken(reference.vocabByString.get('ĠWorld')!)).toBe('ĠWorld');
    expect(tok.tokenToId('not a token at all')).toBeUndefined();
  });

  test('without generation_config.json, eos is tokenizer_config.json eos_token', async () => {
    const t = await loadTokenizer(await llama3Dir({ 'generation_config.json': null }));
    expect(t.eos).toEqual([128009]);
    expect(t.bos).toBe(128000);
  });

  test('decode skips special tokens on request and refuses ids outside the vocabulary', () => {
    const ids = [128000, ...tok.encode('Hi there', { addSpecialTokens: false }), 128009];
    expect(tok.decode(ids)).toBe('<|begin_of_text|>Hi there<|eot_id|>');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('Hi there');
    expect(tok.decode([])).toBe('');
    expect(() => tok.decode([1, 128256])).toThrow(InputError);
    expect(() => tok.decode([1, -1])).toThrow(/position 1/);
  });

  test('clean_up_tokenization_spaces follows the config unless asked', async () => {
    const ids = tok.encode('a , b .', { addSpecialTokens: false });
    expect(tok.decode(ids)).toBe('a , b .');
    expect(tok.decode(ids, { cleanUpSpaces: true })).toBe('a, b.');
    const t = await loadTokenizer(await llama3Dir({ 'tokenizer_config.json': { ...LLAMA3_TOKENIZER_CONFIG, clean_up_tokenization_spaces: true } }));
    expect(t.decode(ids)).toBe('a, b.');
  });
});

describe('chat template', () => {
  const conversation = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: '  What is 2+2?\n' },
    { role: 'assistant', content: '4' },
    { role: 'user', content: 'And 3+3?' },
  ];

  test("Llama-3's template renders a conversation", () => {
    expect(tok.applyChatTemplate(conversation.slice(0, 3))).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>',
    );
    expect(tok.applyChatTemplate(conversation, { addGenerationPrompt: true })).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  test('the rendered prompt encodes to the special ids', () => {
    const prompt = tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
    const ids = tok.encode(prompt, { addSpecialTokens: false });
    expect(ids.slice(0, 2)).toEqual([128000, 128006]);
    expect(ids).toEqual(reference.encode(prompt, { bos: false, eos: false }));
  });

  test('raise_exception becomes an InputError; eos_token and tools reach the template', async () => {
    const chat_template =
      "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with the user') }}{% endif %}" +
      "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}{% if tools is defined %}{{ tools | length }} tools{% endif %}";
    const t = await loadTokenizer(await llama3Dir({ 'tokenizer_config.json': { ...LLAMA3_TOKENIZER_CONFIG, chat_template } }));
    expect(() => t.applyChatTemplate([{ role: 'assistant', content: 'x' }])).toThrow(new InputError('chat template: Conversations must start with the user'));
    expect(t.applyChatTemplate([{ role: 'user', content: 'x' }])).toBe('x<|eot_id|>');
    expect(t.applyChatTemplate([{ role: 'user', content: 'x' }], { tools: [{ name: 'a' }, { name: 'b' }] })).toBe('x<|eot_id|>2 tools');
  });

  test('named templates: tool_use is picked when tools are given', async () => {
    const chat_template = [
      { name: 'default', template: 'plain' },
      { name: 'tool_use', template: '{{ tools[0].name }}' },
    ];
    const t = await loadTokenizer(await llama3Dir({ 'tokenizer_config.json': { ...LLAMA3_TOKENIZER_CONFIG, chat_template } }));
    expect(t.applyChatTemplate([])).toBe('plain');
    expect(t.applyChatTemplate([], { tools: [{ name: 'search' }] })).toBe('search');
  });

  test('chat_template.jinja replaces the config field', async () => {
    const t = await loadTokenizer(await llama3Dir({ 'chat_template.jinja': '{{ bos_token }}{{ messages | length }}' }));
    expect(t.applyChatTemplate([{ role: 'user', content: 'x' }])).toBe('<|begin_of_text|>1');
  });
});

describe('bad files are typed errors naming the file and field', () => {
  const rejects = async (files: Record<string, unknown>, type: typeof CheckpointError | typeof ConfigError, file: string, message: RegExp) => {
    const dir = await llama3Dir(files);
    const error = await loadTokenizer(dir).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(type);
    expect((error as CheckpointError).file).toBe(join(dir, file));
    expect((error as Error).message).toMatch(message);
    await rm(dir, { recursive: true });
  };

  test('missing or unparsable files', async () => {
    await rejects({ 'tokenizer.json': null }, CheckpointError, 'tokenizer.json', /missing/);
    await rejects({ 'tokenizer_config.json': null }, CheckpointError, 'tokenizer_config.json', /missing/);
    await rejects({ 'tokenizer.json': '{"model": ' }, CheckpointError, 'tokenizer.json', /not valid JSON/);
    await rejects({ 'generation_config.json': 'nope' }, CheckpointError, 'generation_config.json', /not valid JSON/);
  });

  test('malformed fields', async () => {
    const cfg = LLAMA3_TOKENIZER_CONFIG;
    await rejects({ 'tokenizer.json': [] }, ConfigError, 'tokenizer.json', /\(file\): expected a JSON object, got a list/);
    await rejects({ 'tokenizer.json': { added_tokens: [] } }, ConfigError, 'tokenizer.json', /model: expected a JSON object/);
    await rejects({ 'tokenizer.json': { model: { vocab: {} } } }, ConfigError, 'tokenizer.json', /model\.type: missing/);
    await rejects({ 'tokenizer_config.json': { ...cfg, eos_token: '<|nope|>' } }, ConfigError, 'tokenizer_config.json', /eos_token: '<\|nope\|>' is not in tokenizer.json's vocabulary/);
    await rejects({ 'tokenizer_config.json': { ...cfg, bos_token: 7 } }, ConfigError, 'tokenizer_config.json', /bos_token: expected a string/);
    await rejects({ 'tokenizer_config.json': { ...cfg, chat_template: '{% for %}' } }, ConfigError, 'tokenizer_config.json', /chat_template: not a template/);
    await rejects({ 'tokenizer_config.json': { ...cfg, chat_template: [{ name: 'default' }] } }, ConfigError, 'tokenizer_config.json', /chat_template\[0\]/);
    await rejects({ 'generation_config.json': { eos_token_id: [128009, 999999] } }, ConfigError, 'generation_config.json', /eos_token_id: expected token ids below 128256/);
    await rejects({ 'generation_config.json': { bos_token_id: 'x' } }, ConfigError, 'generation_config.json', /bos_token_id/);
  });

  test('no chat template is a ConfigError when one is asked for', async () => {
    const { chat_template: _, ...noTemplate } = LLAMA3_TOKENIZER_CONFIG;
    const dir = await llama3Dir({ 'tokenizer_config.json': noTemplate });
    const t = await loadTokenizer(dir);
    expect(() => t.applyChatTemplate([])).toThrow(new ConfigError(join(dir, 'tokenizer_config.json'), 'chat_template', 'missing: this tokenizer has no chat template'));
    await writeFile(join(dir, 'tokenizer.json'), '{}'); // the loaded tokenizer keeps working from memory
    expect(t.encode('ok', { addSpecialTokens: false })).toEqual([564]);
  });
});

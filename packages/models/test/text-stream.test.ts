import { InputError } from '@phalanx/core';
import { beforeAll, describe, expect, test } from 'vitest';
import { type Tokenizer, createTextStream, findStop, loadTokenizer } from '../src/index.js';
import { TEXTS, llama3Dir } from './llama3.js';

let tok: Tokenizer;
beforeAll(async () => {
  tok = await loadTokenizer(await llama3Dir());
});

/** Pushes every id, returning each push's text and the flush. */
function stream(ids: number[], options?: { skipSpecialTokens?: boolean }): { chunks: string[]; rest: string } {
  const s = createTextStream(tok, options);
  const chunks = ids.map((id) => s.push(id));
  return { chunks, rest: s.flush() };
}

describe('createTextStream', () => {
  test('an emoji split across byte-level tokens comes out whole, once complete', () => {
    const llama = tok.encode('🦙', { addSpecialTokens: false });
    expect(llama.length).toBeGreaterThan(1); // 4 UTF-8 bytes in several tokens
    expect(tok.decode(llama.slice(0, 1))).toContain('\uFFFD');
    const ids = tok.encode('Hi 🦙!', { addSpecialTokens: false });
    const { chunks, rest } = stream(ids);
    expect(chunks.join('') + rest).toBe('Hi 🦙!');
    expect(chunks.some((c) => c.includes('\uFFFD'))).toBe(false);
    expect(chunks.find((c) => c.includes('🦙'))).toBe(' 🦙'); // the token completing it emits the whole character
    expect(chunks.filter((c) => c === '').length).toBe(llama.length - 1);
    expect(rest).toBe('');
  });

  test.each(TEXTS)('chunks add up to decode(ids) for %j', (text) => {
    const ids = tok.encode(text);
    const { chunks, rest } = stream(ids);
    expect(chunks.join('') + rest).toBe(tok.decode(ids));
    expect(chunks.join('')).not.toContain('\uFFFD');
  });

  test('flush returns an unfinished character as U+FFFD', () => {
    const ids = tok.encode('ok 🦙', { addSpecialTokens: false });
    const { chunks, rest } = stream(ids.slice(0, -1));
    expect(chunks.join('')).toBe('ok');
    expect(rest).toMatch(/^ \uFFFD+$/);
  });

  test('special tokens are skipped on request', () => {
    const ids = [128000, ...tok.encode('Hello', { addSpecialTokens: false }), 128009];
    expect(stream(ids).chunks).toEqual(['<|begin_of_text|>', 'Hello', '<|eot_id|>']);
    const { chunks, rest } = stream(ids, { skipSpecialTokens: true });
    expect(chunks.join('') + rest).toBe('Hello');
  });
});

describe('findStop', () => {
  test('cuts at the earliest stop string', () => {
    expect(findStop('Answer: 4\nUser: hi', ['\nUser:', 'hi'])).toEqual({ text: 'Answer: 4', stop: '\nUser:', held: '' });
    expect(findStop('abcabc', ['c', 'bc'])).toEqual({ text: 'a', stop: 'bc', held: '' });
    expect(findStop('stop', ['stop'])).toEqual({ text: '', stop: 'stop', held: '' });
  });

  test('holds back the longest suffix that could still become a stop string', () => {
    expect(findStop('Answer: 4\nUs', ['\nUser:'])).toEqual({ text: 'Answer: 4', held: '\nUs' });
    expect(findStop('x <|e', ['<|eot|>', '<|end|>', 'e!'])).toEqual({ text: 'x ', held: '<|e' });
    expect(findStop('plain text', ['###'])).toEqual({ text: 'plain text', held: '' });
    expect(findStop('', ['a'])).toEqual({ text: '', held: '' });
    expect(findStop('abc', [])).toEqual({ text: 'abc', held: '' });
  });

  test('finds a stop string split across pushes', () => {
    const stops = ['<END>'];
    let pending = '';
    let out = '';
    let stopped: string | undefined;
    for (const piece of ['Hello <', 'EN', 'D> ignored']) {
      const { text, stop, held } = findStop(pending + piece, stops);
      out += text;
      pending = held;
      stopped = stop;
      if (stop) break;
    }
    expect(out).toBe('Hello ');
    expect(stopped).toBe('<END>');
  });

  test('an empty stop string is refused', () => {
    expect(() => findStop('abc', ['x', ''])).toThrow(InputError);
  });
});

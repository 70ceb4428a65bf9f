import { InputError } from '@phalanx/core';
import type { Tokenizer } from './tokenizer.js';

export interface TextStream {
  /** Adds one generated id; returns the text it completes ('' while a character is still partial). */
  push(id: number): string;
  /** Ends the stream: returns whatever is left, an unfinished character as U+FFFD. */
  flush(): string;
}

/**
 * Turns generated ids into text as they come. Byte-level tokens can end partway through a UTF-8 character,
 * which decodes to U+FFFD; such text is held until a later token completes it. Each step decodes a small
 * window that starts one emitted chunk back, so decoders that look at neighbours (spaces, prefixes) see
 * context, as text-generation-inference does. Decoding skips no special tokens unless asked, and never
 * cleans up spaces (that would change text already emitted).
 *
 * @example
 * const stream = createTextStream(tok);
 * for await (const id of ids) process.stdout.write(stream.push(id));
 * process.stdout.write(stream.flush());
 */
export function createTextStream(tokenizer: Tokenizer, options: { skipSpecialTokens?: boolean } = {}): TextStream {
  const ids: number[] = [];
  let prefixStart = 0; // the window starts here: the last emitted chunk, kept as context
  let readStart = 0; // ids before this have been emitted
  const decode = (from: number, to = ids.length) => tokenizer.decode(ids.slice(from, to), { skipSpecialTokens: options.skipSpecialTokens, cleanUpSpaces: false });
  return {
    push(id) {
      ids.push(id);
      const prefix = decode(prefixStart, readStart);
      const text = decode(prefixStart);
      if (text.length <= prefix.length || text.endsWith('\uFFFD')) return '';
      prefixStart = readStart;
      readStart = ids.length;
      return text.slice(prefix.length);
    },
    flush() {
      const rest = decode(prefixStart).slice(decode(prefixStart, readStart).length);
      prefixStart = readStart = ids.length;
      return rest;
    },
  };
}

export interface StopCheck {
  /** Text safe to emit now: before the stop string, or all but the held-back suffix. */
  text: string;
  /** The stop string that ended the text, if one did. */
  stop?: string;
  /** A suffix that could still grow into a stop string: keep it and check it again with the next text. */
  held: string;
}

/**
 * Looks for the earliest stop string in `text`. Without one, holds back the longest suffix that begins a
 * stop string, so a stop split across tokens is neither emitted nor missed.
 *
 * @example
 * let pending = '';
 * for (...) {
 *   const { text, stop, held } = findStop(pending + stream.push(id), ['\nUser:']);
 *   emit(text);
 *   if (stop) break;
 *   pending = held;
 * }
 */
export function findStop(text: string, stops: readonly string[]): StopCheck {
  if (stops.some((s) => s.length === 0)) throw new InputError('stop strings must not be empty');
  let first: { index: number; stop: string } | undefined;
  for (const stop of stops) {
    const index = text.indexOf(stop);
    if (index >= 0 && (!first || index < first.index)) first = { index, stop };
  }
  if (first) return { text: text.slice(0, first.index), stop: first.stop, held: '' };
  let keep = 0;
  for (const stop of stops) {
    for (let k = Math.min(stop.length - 1, text.length); k > keep; k--) {
      if (text.endsWith(stop.slice(0, k))) {
        keep = k;
        break;
      }
    }
  }
  return { text: text.slice(0, text.length - keep), held: text.slice(text.length - keep) };
}

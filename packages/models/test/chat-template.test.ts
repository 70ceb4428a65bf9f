/** Chat templates are code from the checkpoint: they see only the values passed in, and loops, recursion and growth are bounded. */
import { Interpreter } from '@huggingface/jinja';
import { InputError } from '@phalanx/core';
import { describe, expect, it } from 'vitest';
import { CHAT_TEMPLATE_LIMITS } from '../src/chat-template.js';
import { Tokenizer } from '../src/index.js';
import { byteTokenizerJson } from './checkpoint-dir.js';
import { LLAMA3_CHAT_TEMPLATE } from './llama3.js';

const tokenizer = byteTokenizerJson();
const withTemplate = (chatTemplate: string) => new Tokenizer({ tokenizer, config: { bos_token: '!' }, chatTemplate }, 'dir');
const CHAT = [{ role: 'user', content: 'Hi' }];

/** The render's error and how long it took. */
function timed(template: string, messages = CHAT): { error: unknown; ms: number } {
  const t = withTemplate(template);
  const t0 = performance.now();
  try {
    t.applyChatTemplate(messages);
    return { error: undefined, ms: performance.now() - t0 };
  } catch (error) {
    return { error, ms: performance.now() - t0 };
  }
}

describe('chat templates are sandboxed', () => {
  it('reach neither the host nor JS prototypes: those names are undefined and render as nothing', () => {
    const probes = [
      '{{ process }}', '{{ require }}', '{{ globalThis }}', '{{ global }}', '{{ self }}', '{{ this }}', "{{ ''.constructor }}",
      '{{ messages.constructor }}', '{{ messages[0].__proto__ }}', '{{ messages[0].constructor.constructor }}', '{{ range.constructor }}',
      '{{ cycler.__init__.__globals__ }}', '{{ namespace.constructor }}',
    ];
    for (const probe of probes) expect(withTemplate(`[${probe}]`).applyChatTemplate(CHAT), probe).toBe('[]');
    const call = timed("{{ ''.constructor.constructor('return process')() }}").error;
    expect(call).toBeInstanceOf(InputError); // calling undefined
    expect((call as Error).message).toMatch(/not a function/);
  });
});

describe('chat templates are bounded', () => {
  const TIME_MS = 2000; // about 0.4 s here; generous for slow CI machines

  it.each([
    ['a range too long to allocate', '{% for i in range(10**9) %}{% endfor %}', /range\(\) of 1000000000 numbers is over the limit of \d+/],
    ['nested loops', '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}', /stopped after \d+ units of work/],
    ['exponential recursion', '{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}', /stopped after \d+ units of work/],
    ['a string doubled in a loop', '{% set ns = namespace(s="ab") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}', /stopped at a string of \d+ characters, over the limit of \d+/],
    ['a list doubled in a loop', '{% set ns = namespace(a=[1]) %}{% for i in range(64) %}{% set ns.a = ns.a + ns.a %}{% endfor %}', /stopped after \d+ units of work/],
    ['an output past the limit', `{% for i in range(1000) %}{{ messages | tojson }}{% endfor %}`, /stopped at a string of \d+ characters/],
  ])('%s is stopped with an InputError', (_, template, message) => {
    const { error, ms } = timed(template, [{ role: 'user', content: 'x'.repeat(2000) }]);
    expect(error).toBeInstanceOf(InputError);
    expect((error as Error).message).toMatch(message);
    expect(ms).toBeLessThan(TIME_MS);
  });

  it('unbounded recursion is an InputError (the stack overflows before the budget)', () => {
    const { error } = timed('{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}');
    expect(error).toBeInstanceOf(InputError);
  });

  it("a real template's budget grows with the conversation: Llama-3's renders 3,000 messages", () => {
    const messages = Array.from({ length: 3000 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `Message ${i}: ${'words '.repeat(100)}` }));
    const text = withTemplate(LLAMA3_CHAT_TEMPLATE).applyChatTemplate(messages, { addGenerationPrompt: true });
    expect(text.length).toBeGreaterThan(CHAT_TEMPLATE_LIMITS.length); // longer than the fixed part of the length limit
    expect(text.endsWith('<|start_header_id|>assistant<|end_header_id|>\n\n')).toBe(true);
  });

  it('leaves @huggingface/jinja as it was, after a render and after a stopped one', () => {
    const evaluate = Interpreter.prototype.evaluate;
    withTemplate('{{ messages | length }}').applyChatTemplate(CHAT);
    timed('{% for i in range(10**9) %}{% endfor %}');
    expect(Interpreter.prototype.evaluate).toBe(evaluate);
  });
});

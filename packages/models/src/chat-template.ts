/**
 * Rendering a chat template, which is code from the checkpoint, within bounds. @huggingface/jinja gives a
 * template no file, network or host access: it sees only the values passed to it, converted to its own
 * runtime values (no JS prototypes, no `process`, `require` or `globalThis`). But it has no budget, so a loop
 * over range(10**9), an exponential recursion or a string doubled in a loop would hang or exhaust memory.
 * The library takes no hook, so for the length of one (synchronous) render `Interpreter.prototype.evaluate`
 * is wrapped to count the work done and to cap the length of every string a step gives (the output's
 * included), and `range` is bounded before it allocates. Work is one unit per expression or statement
 * evaluated, per item of a list it gives (a for loop's iterations cost nothing else) and per KiB of a string
 * it gives (string operations cost about a thousandth of a jinja step per character).
 */
import { type Environment, Interpreter, type Template } from '@huggingface/jinja';

export const CHAT_TEMPLATE_LIMITS = {
  /** Work units per render (0.4 s of jinja on one core here; real chat templates use hundreds to thousands), plus `workPerChar` per character of the messages and tools. */
  work: 100_000,
  workPerChar: 4,
  /** Characters of any string (the output included) and numbers of a range, plus twice the messages' and tools' characters. */
  length: 2 ** 20,
};

type RuntimeValue = ReturnType<Interpreter['evaluate']>;
/** The runtime's function values (its class is not exported): `value(args, scope)`. */
type FunctionValue = RuntimeValue & { value: (args: RuntimeValue[], scope: Environment) => RuntimeValue };

/**
 * `template.render(items)` within CHAT_TEMPLATE_LIMITS scaled by `inputChars` (the size of the messages and
 * tools as JSON). Going past a limit throws an Error saying which, as other render failures do.
 */
export function renderBounded(template: Template, items: Record<string, unknown>, inputChars: number): string {
  const maxWork = CHAT_TEMPLATE_LIMITS.work + CHAT_TEMPLATE_LIMITS.workPerChar * inputChars;
  const maxLength = CHAT_TEMPLATE_LIMITS.length + 2 * inputChars;
  const evaluate = Interpreter.prototype.evaluate;
  let work = 0;
  const spend = (units: number) => {
    work += units;
    if (work > maxWork) throw new Error(`stopped after ${maxWork} units of work (a loop or recursion too long for a chat template)`);
  };
  Interpreter.prototype.evaluate = function (this: Interpreter, statement, environment) {
    if (work === 0) boundRange(environment, maxLength); // the first step runs the program in the global scope
    spend(1);
    const result = evaluate.call(this, statement, environment);
    const v = (result as { value: unknown }).value;
    if (typeof v === 'string') {
      if (v.length > maxLength) throw new Error(`stopped at a string of ${v.length} characters, over the limit of ${maxLength}`);
      spend(v.length / 1024);
    } else if (Array.isArray(v)) spend(v.length);
    return result;
  };
  try {
    return template.render(items);
  } finally {
    Interpreter.prototype.evaluate = evaluate;
  }
}

/** Replaces the global `range` with one that refuses more than `max` numbers before allocating them. */
function boundRange(global: Environment, max: number): void {
  const builtin = global.variables.get('range') as FunctionValue;
  const make = builtin.constructor as new (fn: FunctionValue['value']) => FunctionValue;
  global.setVariable(
    'range',
    new make((args, scope) => {
      const [a, b, step = 1] = args.map((x) => (x as { value: unknown }).value as number);
      const [start, stop] = b === undefined ? [0, a!] : [a!, b];
      const n = Math.ceil((stop - start) / step);
      if (n > max) throw new Error(`range() of ${n} numbers is over the limit of ${max}`);
      return builtin.value(args, scope);
    }),
  );
}

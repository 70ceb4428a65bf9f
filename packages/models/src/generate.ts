import { InputError, NumericsError, Rng, type Tensor } from '@phalanx/core';
import { type SampleOptions, readIds, sampleIds } from '@phalanx/ops';
import type { Network } from './network.js';
import { createTextStream, findStop } from './text-stream.js';
import type { ChatMessage, Tokenizer } from './tokenizer.js';

export interface GenerateOptions {
  /** The prompt as ids (one sequence). One of inputIds, prompt, messages. */
  inputIds?: number[];
  /** The prompt as text (encoded with the tokenizer's special tokens, e.g. BOS). */
  prompt?: string;
  /** A chat, rendered with the checkpoint's chat template and a generation prompt. */
  messages?: ChatMessage[];
  /** Default 64. 0 runs the prefill only. */
  maxNewTokens?: number;
  /** 0 is greedy. Default 1. */
  temperature?: number;
  /** 0 turns it off. Default 0. */
  topK?: number;
  /** 1 turns it off. Default 1. */
  topP?: number;
  /** Seeds the sampler: the same seed gives the same tokens. Default: a random seed. */
  seed?: number;
  /** Stop strings: generation ends before the first one (it is not included in the text). */
  stop?: string[];
  /** Ids that end generation (not emitted). Default: the tokenizer's, else the config's eos ids. */
  eosTokenIds?: number[];
  /** Aborting ends generation after the current token; the summary says 'abort'. */
  signal?: AbortSignal;
}

export interface TokenEvent {
  tokenId: number;
  /** The text this token completes (may be empty while a multi-byte character is incomplete). */
  text: string;
}

export interface GenerateSummary {
  promptTokens: number;
  /** The new ids, eos excluded. */
  tokenIds: number[];
  text: string;
  stopReason: 'eos' | 'stop' | 'length' | 'abort';
  prefillMs: number;
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  /** Bytes of the decode state at the end (KV caches, recurrent states). */
  stateBytes: number;
}

/**
 * A running generation: iterate it for tokens (`for await (const { text } of model.generate(...))`); the
 * summary resolves when it ends. Iterating it twice is refused.
 */
export class Generation implements AsyncIterable<TokenEvent> {
  readonly summary: Promise<GenerateSummary>;
  private resolve!: (s: GenerateSummary) => void;
  private reject!: (e: unknown) => void;
  private started = false;

  constructor(private readonly run: () => AsyncGenerator<TokenEvent, GenerateSummary>) {
    this.summary = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.summary.catch(() => {}); // the iterator rethrows; an unread summary must not be an unhandled rejection
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TokenEvent, GenerateSummary> {
    if (this.started) throw new InputError('generate: this generation was already iterated');
    this.started = true;
    try {
      const summary = yield* this.run();
      this.resolve(summary);
      return summary;
    } catch (e) {
      this.reject(e);
      throw e;
    }
  }

  /** Runs to the end without looking at the tokens. */
  async complete(): Promise<GenerateSummary> {
    for await (const _ of this) {
      // the summary holds the text
    }
    return this.summary;
  }
}

/** The prompt ids of `options`: exactly one of inputIds, prompt, messages. */
export function promptIds(options: GenerateOptions, tokenizer: Tokenizer | null): number[] {
  const given = (['inputIds', 'prompt', 'messages'] as const).filter((k) => options[k] !== undefined);
  if (given.length !== 1) throw new InputError(`generate: pass exactly one of inputIds, prompt, messages (got ${given.length ? given.join(', ') : 'none'})`);
  if (options.inputIds) return options.inputIds;
  if (!tokenizer) throw new InputError(`generate: this checkpoint has no tokenizer (tokenizer.json), so pass inputIds instead of ${given[0]}`);
  if (options.prompt !== undefined) return tokenizer.encode(options.prompt);
  const text = tokenizer.applyChatTemplate(options.messages!, { addGenerationPrompt: true });
  return tokenizer.encode(text, { addSpecialTokens: false }); // the template writes the special tokens itself
}

/**
 * The next token of each sequence from a forward's last logits [B, 1, V] (`lastOnly`), sampled where they live
 * (ops `sampleIds`) and left there as ids [B, 1], the next forward's input: nothing is read back (ops `readIds`
 * does that). Disposes the logits.
 */
export async function sampleNextIds(logits: Tensor, options: SampleOptions): Promise<Tensor> {
  const B = logits.shape[0]!;
  const rows = logits.reshape([B, -1]); // a view: it holds the storage until it is disposed too
  try {
    const drawn = await sampleIds(rows, options);
    const ids = drawn.reshape([B, 1]);
    drawn.dispose();
    return ids;
  } finally {
    rows.dispose();
    logits.dispose();
  }
}

/** Prefill, then one token at a time from the network's decode state. */
export async function* generateTokens(
  network: Network,
  tokenizer: Tokenizer | null,
  defaultEos: number[],
  maxContext: number,
  options: GenerateOptions,
): AsyncGenerator<TokenEvent, GenerateSummary> {
  const prompt = promptIds(options, tokenizer);
  const { maxNewTokens = 64, temperature = 1, topK = 0, topP = 1, stop = [], signal } = options;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new InputError(`generate: maxNewTokens must be an integer >= 0, got ${maxNewTokens}`);
  if (prompt.length === 0) throw new InputError('generate: the prompt is empty; it needs at least one token (e.g. BOS)');
  if (prompt.length + maxNewTokens > maxContext) {
    throw new InputError(`generate: prompt (${prompt.length} tokens) + maxNewTokens (${maxNewTokens}) exceeds the model's context of ${maxContext} tokens`);
  }
  if (stop.length > 0 && !tokenizer) throw new InputError('generate: stop strings need a tokenizer to turn tokens into text');
  const eos = new Set(options.eosTokenIds ?? (tokenizer?.eos.length ? tokenizer.eos : defaultEos));
  const rng = new Rng(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  const stream = tokenizer && createTextStream(tokenizer);

  const state = network.createState(1, prompt.length + maxNewTokens);
  const tokenIds: number[] = [];
  let text = '';
  let pending = '';
  let stopReason: GenerateSummary['stopReason'] = 'length';
  let prefillMs = 0;
  let decodeStart = 0;
  // ids sampled on the device: token t's, and token t + 1's while it is computed ahead (dispose is idempotent)
  const sampled: Tensor[] = [];
  try {
    const sampleNext = async (logits: Tensor): Promise<Tensor> => {
      const ids = await sampleNextIds(logits, { temperature, topK, topP, rng });
      sampled.push(ids);
      return ids;
    };
    /**
     * The id read back (issued now, awaited later); non-finite logits after `consumed` tokens (the sampler marks
     * them) are a NumericsError saying where. Marked handled: a read nobody awaits (generation ended) is no
     * unhandled rejection.
     */
    const readNext = (ids: Tensor, consumed: number): Promise<number> => {
      const read = readIds(ids).then(
        (out) => out[0]!,
        (e: unknown) => {
          if (!(e instanceof NumericsError)) throw e;
          const why = 'the weights hold NaN or Infinity (loadModel with checkWeights finds them), or activations overflowed';
          throw new NumericsError(`generate: non-finite logits after ${consumed} tokens (${e.message}): ${why}`, { cause: e });
        },
      );
      read.catch(() => {});
      return read;
    };
    const t0 = performance.now();
    let ids = await sampleNext(await network.forward([prompt], { state, lastOnly: true }));
    let reading = readNext(ids, prompt.length);
    await reading; // the prefill ends when its token is known
    prefillMs = performance.now() - t0;
    decodeStart = performance.now();
    while (true) {
      // The forward of token t (which may be the last: its value is not known yet) is recorded and submitted
      // before token t is read back, so the GPU computes step t + 1 while the host waits for token t, checks it
      // and yields it. Only a token that can be followed gets one; after an eos, a stop or an abort it is wasted.
      let ahead: { ids: Tensor; reading: Promise<number> } | undefined;
      if (tokenIds.length + 1 < maxNewTokens && !signal?.aborted) {
        let aheadIds: Tensor;
        try {
          aheadIds = await sampleNext(await network.forward(ids, { state, lastOnly: true }));
        } catch (e) {
          await reading; // token t's NumericsError, if any, is the cause (e.g. a preset that checks ids on the host)
          throw e;
        }
        ahead = { ids: aheadIds, reading: readNext(aheadIds, prompt.length + tokenIds.length + 1) };
      }
      const next = await reading;
      sampled.shift()!.dispose(); // token t's ids: read, and their forward recorded
      if (signal?.aborted) {
        stopReason = 'abort';
        break;
      }
      if (tokenIds.length >= maxNewTokens) break;
      if (eos.has(next)) {
        stopReason = 'eos';
        break;
      }
      tokenIds.push(next);
      // text held back by findStop may still turn into a stop string with the next token
      const check = findStop(pending + (stream ? stream.push(next) : ''), stop);
      text += check.text;
      pending = check.held;
      yield { tokenId: next, text: check.text };
      if (check.stop !== undefined) {
        stopReason = 'stop';
        break;
      }
      if (!ahead) break; // maxNewTokens reached
      ({ ids, reading } = ahead);
    }
    if (stream && stopReason !== 'stop') {
      const rest = pending + stream.flush();
      if (rest) {
        text += rest;
        yield { tokenId: tokenIds.at(-1) ?? -1, text: rest };
      }
    }
    const decodeMs = performance.now() - decodeStart;
    const decoded = Math.max(tokenIds.length - 1, 0); // the first new token came from the prefill
    return {
      promptTokens: prompt.length,
      tokenIds,
      text,
      stopReason,
      prefillMs,
      decodeMs,
      prefillTokensPerSecond: prompt.length / (prefillMs / 1000),
      decodeTokensPerSecond: decoded > 0 ? decoded / (decodeMs / 1000) : 0,
      stateBytes: state.bytes,
    };
  } finally {
    for (const t of sampled) t.dispose();
    state.dispose();
  }
}

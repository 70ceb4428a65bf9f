import type { ModelConfig } from '@phalanx/checkpoint';
import { type Backend, InputError, type Tensor } from '@phalanx/core';
import { type GenerateOptions, Generation, generateTokens } from './generate.js';
import { type DecodeState, type Network, type TokenIds, checkIds } from './network.js';
import { type ScoreOptions, type ScoreResult, scoreIds } from './score.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * A loaded preset: its network on one backend, the checkpoint's tokenizer (when it has one), and what users
 * call: forward, generate, score.
 */
export class Model {
  constructor(
    readonly network: Network,
    readonly tokenizer: Tokenizer | null,
    /** Longest sequence the preset supports (Infinity for a constant-state preset without positions). */
    readonly maxContext: number,
    /** The checkpoint directory, or a name for models built in memory. */
    readonly source: string,
  ) {}

  get config(): ModelConfig {
    return this.network.config;
  }

  get preset(): ModelConfig['preset'] {
    return this.network.config.preset;
  }

  get backend(): Backend {
    return this.network.backend;
  }

  /**
   * Logits [B, T, V] (f32, on the model's backend; dispose them) of B whole sequences of equal length. The ids
   * may also be an i32 / u32 tensor [B, T] on the model's backend (`TokenIds`), e.g. from `sampleIds`.
   */
  async forward(inputIds: TokenIds, options: { state?: DecodeState; lastOnly?: boolean } = {}): Promise<{ logits: Tensor }> {
    const [, T] = checkIds(inputIds, this.config.vocabSize, 'inputIds', this.backend);
    const total = (options.state?.position ?? 0) + T;
    if (total > this.maxContext) throw new InputError(`forward: ${total} tokens exceed the model's context of ${this.maxContext}`);
    return { logits: await this.network.forward(inputIds, options) };
  }

  /** A decode state for `batch` sequences of up to `capacity` tokens, to call `forward` with chunk by chunk. */
  createState(batch = 1, capacity = Math.min(this.maxContext, 4096)): DecodeState {
    if (!Number.isInteger(batch) || batch < 1) throw new InputError(`createState: batch must be a positive integer, got ${batch}`);
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > this.maxContext) {
      throw new InputError(`createState: capacity must be an integer in [1, ${this.maxContext}] (the model's context), got ${capacity}`);
    }
    return this.network.createState(batch, capacity);
  }

  /**
   * Generates from one prompt: iterate the result for `{ tokenId, text }` events; `.summary` (or
   * `.complete()`) gives the text, stop reason and prefill/decode tokens per second.
   */
  generate(options: GenerateOptions): Generation {
    return new Generation(() => generateTokens(this.network, this.tokenizer, eosOf(this.config), this.maxContext, options));
  }

  /** Per-token log-likelihoods, loss and bits per byte of a text (or ids) by sliding windows. */
  async score(input: string | number[], options: ScoreOptions = {}): Promise<ScoreResult> {
    const tok = this.tokenizer;
    let ids: number[];
    if (typeof input === 'string') {
      if (!tok) throw new InputError('score: this checkpoint has no tokenizer (tokenizer.json), so pass token ids instead of text');
      ids = tok.encode(input);
    } else {
      checkIds([input], this.config.vocabSize, 'ids');
      ids = input;
    }
    return scoreIds(this.network, ids, this.maxContext, { tokenBytes: tok ? (id) => tok.tokenBytes(id) : undefined, ...options });
  }

  dispose(): void {
    this.network.dispose();
  }
}

function eosOf(config: ModelConfig): number[] {
  return 'eosTokenIds' in config ? config.eosTokenIds : [];
}


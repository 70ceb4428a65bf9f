import type { ExpectedTensor, ModelConfig } from '@phalanx/checkpoint';
import { type Backend, CheckpointError, InputError, Tensor, bytesPerElement } from '@phalanx/core';
import type { LinearWeight } from '@phalanx/ops';

/**
 * What a preset keeps between calls for its sequences: recurrent states, KV caches, the last token's
 * features. Made by `Network.createState`, advanced in place by `Network.forward`.
 */
export interface DecodeState {
  /** Sequences decoded side by side. */
  readonly batch: number;
  /** Tokens each sequence has consumed. */
  position: number;
  /** Bytes of GPU/CPU memory the state holds now: constant in the context length for monoid and holographic states. */
  readonly bytes: number;
  dispose(): void;
}

export interface NetworkForwardOptions {
  /** Continue these sequences (updated in place). Without it, the ids are whole sequences from position 0. */
  state?: DecodeState;
  /** Logits of the last position only ([B, 1, V]): what generation needs, without the head's cost for every position. */
  lastOnly?: boolean;
}

/**
 * Token ids of a forward: rows [B][T] on the host, or an i32 / u32 tensor [B, T] on the network's backend, such
 * as the ids `sampleIds` leaves on the GPU, so that generation records step t + 1 before token t is read back.
 * Ids on the device are not range-checked on the host: an id outside the vocabulary embeds as NaN, which the
 * next sampling reports as a NumericsError.
 */
export type TokenIds = readonly (readonly number[])[] | Tensor;

/**
 * A preset's network on one backend: ids in, logits out. Each preset file builds one from its weights.
 * `forward` takes B rows of equal length T. From a fresh state (position 0) any T is a prefill; a state that
 * has consumed tokens takes T = 1 (decode) unless the preset says otherwise.
 */
export interface Network {
  readonly config: ModelConfig;
  readonly backend: Backend;
  /** The weights it runs on (`weights.bytes`: what they hold on the backend). */
  readonly weights: Weights;
  /** f32 logits [B, T, V] (or [B, 1, V] with lastOnly). */
  forward(ids: TokenIds, options?: NetworkForwardOptions): Promise<Tensor>;
  /** An empty state for `batch` sequences of up to `capacity` tokens (KV caches are sized by it; constant states ignore it). */
  createState(batch: number, capacity: number): DecodeState;
  /** Resolves once the network has read what it needs from its weights (e.g. a variant detected from them), so loading reports a bad checkpoint rather than the first forward. */
  ready?(): Promise<void>;
  dispose(): void;
}

/** A preset: which tensors its checkpoints hold, and how to build its network from them. */
export interface PresetDefinition<C extends ModelConfig = ModelConfig> {
  readonly name: C['preset'];
  /** The tensors a checkpoint of this config holds (names of docs/checkpoint-layouts.md). */
  tensors(config: C): ExpectedTensor[];
  build(config: C, weights: Weights): Network;
  /** Longest sequence it supports: Infinity for a preset without positions. */
  maxContext(config: C): number;
}

/**
 * A checkpoint's tensors on one backend, by their expected (preset) names. A matrix loaded with `quantize` is
 * held as int8 codes and row scales: presets read the matrices they pass to `linear` with `matrix`, which
 * gives either form, and everything else with `get`.
 */
export class Weights {
  /** Per layer, what `layer` and `layerMatrix` found by suffix: a forward asks for the same ones every call. */
  private readonly byLayer: Map<string, LinearWeight>[] = [];

  constructor(
    /** The checkpoint, for errors. */
    readonly file: string,
    private readonly tensors: ReadonlyMap<string, LinearWeight>,
    readonly backend: Backend,
  ) {}

  /** The tensor named `name`; a CheckpointError names it when absent. */
  get(name: string): Tensor {
    const t = this.matrix(name);
    if (!(t instanceof Tensor)) throw new Error(`Weights: ${name} is held as int8 codes (loadModel's quantize); read it with matrix()`);
    return t;
  }

  /** A matrix for `linear`: the tensor, or its int8 codes and row scales. */
  matrix(name: string): LinearWeight {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(this.file, `missing tensor ${name}`);
    return t;
  }

  /** The tensor, or null for an optional one the checkpoint lacks. */
  optional(name: string): Tensor | null {
    return this.tensors.has(name) ? this.get(name) : null;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** `model.layers.{l}.` + suffix. */
  layer(l: number, suffix: string): Tensor {
    const t = this.layerMatrix(l, suffix);
    return t instanceof Tensor ? t : this.get(`model.layers.${l}.${suffix}`);
  }

  /** `model.layers.{l}.` + suffix, as `matrix`. */
  layerMatrix(l: number, suffix: string): LinearWeight {
    const found = (this.byLayer[l] ??= new Map());
    let t = found.get(suffix);
    if (!t) found.set(suffix, (t = this.matrix(`model.layers.${l}.${suffix}`)));
    return t;
  }

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  /** Bytes of all the tensors as they are held (int8 codes: one a weight, plus the scales). */
  get bytes(): number {
    return this.held().reduce((n, t) => n + t.size * bytesPerElement(t.dtype), 0);
  }

  dispose(): void {
    for (const t of this.held()) t.dispose();
  }

  private held(): Tensor[] {
    return [...this.tensors.values()].flatMap((t) => (t instanceof Tensor ? [t] : [t.codes, t.scales]));
  }
}

/**
 * Checks ids: host rows [B][T] must be a non-empty rectangle of integer ids inside the vocabulary, a tensor an
 * i32 / u32 [B, T] with B, T >= 1 on `backend`. Returns [B, T].
 */
export function checkIds(ids: TokenIds, vocabSize: number, what = 'inputIds', backend?: Backend): [number, number] {
  if (ids instanceof Tensor) {
    if (ids.dtype !== 'i32' && ids.dtype !== 'u32') throw new InputError(`${what}: a tensor of ids must be i32 or u32, got ${ids.dtype}`);
    if (ids.rank !== 2 || ids.size === 0) throw new InputError(`${what}: a tensor of ids must be [B, T] with B, T >= 1, got [${ids.shape.join(', ')}]`);
    if (backend && ids.backend !== backend) throw new InputError(`${what}: the ids live on '${ids.backend.name}', the network on '${backend.name}'; move them with await ids.to(backend)`);
    return [ids.shape[0]!, ids.shape[1]!];
  }
  if (!Array.isArray(ids) || ids.length === 0) throw new InputError(`${what} must be a non-empty list of token id rows`);
  const T = ids[0]!.length;
  if (T === 0) throw new InputError(`${what}[0] is empty; a row needs at least one token`);
  ids.forEach((row, b) => {
    if (!Array.isArray(row) || row.length !== T) throw new InputError(`${what}[${b}] has ${row?.length} tokens, row 0 has ${T}; rows must have equal lengths`);
    row.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new InputError(`${what}[${b}][${t}] = ${id} is not a token id of this model (0 <= id < ${vocabSize})`);
    });
  });
  return [ids.length, T];
}

/** Host rows of ids, reading a tensor back (for a preset that needs the values themselves, not just their embeddings). */
export async function hostIdRows(ids: TokenIds): Promise<number[][]> {
  if (!(ids instanceof Tensor)) return ids as number[][];
  const [B, T] = ids.shape as [number, number];
  const flat = await ids.data();
  return Array.from({ length: B }, (_, b) => Array.from(flat.subarray(b * T, (b + 1) * T)));
}

/** Refuses a state of another preset or size. */
export function checkState<S extends DecodeState>(state: DecodeState, kind: new (...args: never[]) => S, batch: number, T: number, continues: 'one token' | 'any'): S {
  if (!(state instanceof kind)) throw new InputError(`forward: the state was made by another preset (expected a ${kind.name})`);
  if (state.batch !== batch) throw new InputError(`forward: the state holds ${state.batch} sequences, the ids ${batch}`);
  if (continues === 'one token' && state.position > 0 && T !== 1) throw new InputError(`forward: a state that has consumed tokens is continued one token at a time (got ${T})`);
  return state;
}

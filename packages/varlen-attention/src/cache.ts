import { type Backend, InputError, ShapeError, type Tensor, assertFloat, cpu, empty, formatShape, runKernel, tensor, zeros } from '@phalanx/core';
import { type ScoreAttrs, type ScoreOptions, checkCount, checkCuSeqlens, checkTensor, label, scoreInputs } from './attention.js';

export interface KvCacheOptions {
  /** Sequences decoded side by side. */
  batch: number;
  /** Key/value heads (Hkv). */
  heads: number;
  dim: number;
  /** Most tokens a sequence may hold. Optional for a windowed cache, whose memory does not depend on it. */
  capacity?: number;
  /** Sliding window of the layer: the cache keeps a ring of window + 1 entries per sequence. */
  window?: number;
  /** Default cpu. */
  backend?: Backend;
}

/**
 * Keys and values of past tokens, preallocated once: [batch, slots, heads, dim] f32, where slots is the
 * capacity, or window + 1 for a windowed layer (position p lives in slot p mod slots, so memory is constant in
 * context length). `appendKv` and `attendStep` write it in place. Dispose it when done.
 */
export class KvCache {
  readonly batch: number;
  readonly heads: number;
  readonly dim: number;
  readonly capacity: number;
  /** Infinity when the layer is global. */
  readonly window: number;
  readonly slots: number;
  readonly k: Tensor;
  readonly v: Tensor;
  /** u32 [batch]: tokens each sequence holds (`lengths`, as the kernels read it). */
  readonly positions: Tensor;
  /** Tokens each sequence holds. */
  readonly lengths: number[];

  /** Use `createKvCache`. */
  constructor(options: KvCacheOptions) {
    const { batch, heads, dim, backend = cpu } = options;
    const op = 'createKvCache';
    for (const [what, value] of [['batch', batch], ['heads', heads], ['dim', dim]] as const) {
      if (!(Number.isInteger(value) && value >= 1)) throw new InputError(`${op}: ${what} must be a positive integer, got ${value}`);
    }
    checkCount(op, 'window', options.window);
    const window = options.window ?? Infinity;
    const capacity = options.capacity ?? (options.window === undefined ? NaN : Infinity);
    if (!(capacity === Infinity || (Number.isInteger(capacity) && capacity >= 1))) throw new InputError(`${op}: capacity must be a positive integer (it may be left out only for a windowed cache), got ${options.capacity}`);
    this.batch = batch;
    this.heads = heads;
    this.dim = dim;
    this.capacity = capacity;
    this.window = window;
    this.slots = Math.min(capacity, window + 1);
    // uninitialised (NaN under debug.poison): the kernels read only slots written since
    this.k = empty([batch, this.slots, heads, dim], { backend, name: 'kvCache.k' });
    this.v = empty([batch, this.slots, heads, dim], { backend, name: 'kvCache.v' });
    this.positions = zeros([batch], { backend, dtype: 'u32', name: 'kvCache.positions' });
    this.lengths = new Array<number>(batch).fill(0);
  }

  get backend(): Backend {
    return this.k.backend;
  }

  dispose(): void {
    this.k.dispose();
    this.v.dispose();
    this.positions.dispose();
  }
}

export function createKvCache(options: KvCacheOptions): KvCache {
  return new KvCache(options);
}

/**
 * Attributes of 'kvAppend'. Inputs: k, v ([tokens, Hkv, D], sequence n's new tokens at rows
 * starts[n]..starts[n + 1]), seqs (u32: the new lengths, then starts), then the cache's k, v and positions,
 * which the kernel updates in place. No outputs.
 */
export interface KvAppendAttrs {
  batch: number;
  slots: number;
  Hkv: number;
  D: number;
  tokens: number;
}

/** Attributes of 'kvAttend'. Inputs: q [batch, Hq, D], the cache's k, v and positions, then the score extras. Output f32 [batch, Hq, D]. */
export interface KvAttendAttrs extends ScoreAttrs {
  batch: number;
  slots: number;
  /** Infinity when the layer is global. */
  window: number;
  /** Most keys any sequence attends to in this step (sizes the split over keys). */
  maxKeys: number;
}

/**
 * Appends tokens to each sequence of the cache: k, v [tokens, Hkv, D], sequence n's at rows
 * cuSeqlens[n]..cuSeqlens[n + 1] (cuSeqlens has batch + 1 entries; it may be left out when batch is 1). A
 * windowed cache keeps only each sequence's last window + 1 tokens.
 */
export async function appendKv(cache: KvCache, inputs: { k: Tensor; v: Tensor }, cuSeqlens?: ArrayLike<number>): Promise<void> {
  const op = 'appendKv';
  const { k, v } = inputs;
  const shape = [k.shape[0] ?? 0, cache.heads, cache.dim];
  checkTensor(op, k, 'k', shape);
  checkTensor(op, v, 'v', shape);
  if (cuSeqlens === undefined && cache.batch !== 1) throw new InputError(`${op}: a cache of ${cache.batch} sequences needs cuSeqlens to say whose tokens are whose`);
  const starts = checkCuSeqlens(op, cuSeqlens ?? [0, shape[0]!], shape[0]!);
  if (starts.length !== cache.batch + 1) throw new InputError(`${op}: cuSeqlens has ${starts.length - 1} sequences; the cache holds ${cache.batch}`);
  await append(op, cache, k, v, starts);
}

async function append(op: string, cache: KvCache, k: Tensor, v: Tensor, starts: number[]): Promise<void> {
  const lengths = cache.lengths.map((n, b) => n + starts[b + 1]! - starts[b]!);
  const full = lengths.findIndex((n) => n > cache.capacity);
  if (full >= 0) throw new InputError(`${op}: sequence ${full} would hold ${lengths[full]} tokens; the cache's capacity is ${cache.capacity}`);
  const seqs = tensor(Uint32Array.from([...lengths, ...starts]), [lengths.length + starts.length], { backend: cache.backend, dtype: 'u32', name: 'kvAppend.seqs' });
  const attrs: KvAppendAttrs = { batch: cache.batch, slots: cache.slots, Hkv: cache.heads, D: cache.dim, tokens: k.shape[0]! };
  try {
    await runKernel('kvAppend', [k, v, seqs, cache.k, cache.v, cache.positions], attrs);
  } finally {
    seqs.dispose();
  }
  lengths.forEach((n, b) => (cache.lengths[b] = n));
}

/**
 * One decode step: appends each sequence's new k, v [batch, Hkv, D] to the cache, then attends q
 * [batch, Hq, D] over the sequence's cached keys (the last window + 1 of them on a windowed layer). Same
 * logit options as `varlenAttention`; stateKv is [batch, Hkv, D]. Returns f32 [batch, Hq, D].
 */
export async function attendStep(cache: KvCache, q: Tensor, k: Tensor, v: Tensor, options: ScoreOptions = {}): Promise<Tensor> {
  const op = 'attendStep';
  const { batch, heads, dim } = cache;
  assertFloat(op, q, 'q');
  if (q.rank !== 3 || q.shape[0] !== batch || q.shape[2] !== dim) throw new ShapeError(`${op}: ${label(q, 'q')} is ${formatShape(q.shape)}; expected [${batch}, Hq, ${dim}] for this cache`);
  checkTensor(op, k, 'k', [batch, heads, dim]);
  checkTensor(op, v, 'v', [batch, heads, dim]);
  const { attrs, extra, owned } = scoreInputs(op, q, heads, options);
  try {
    await append(op, cache, k, v, Array.from({ length: batch + 1 }, (_, b) => b));
    const maxKeys = Math.max(...cache.lengths.map((n) => Math.min(n, cache.window + 1)));
    const full: KvAttendAttrs = { ...attrs, batch, slots: cache.slots, window: cache.window, maxKeys };
    return (await runKernel('kvAttend', [q, cache.k, cache.v, cache.positions, ...extra], full))[0]!;
  } finally {
    owned.forEach((t) => t.dispose());
  }
}

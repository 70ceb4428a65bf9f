import { InputError, ShapeError, Tensor, assertFloat, formatShape, runKernel } from '@phalanx/core';
import './cpu/rope.js';
import './webgpu/rope.js';

/** Frequency scaling of RoPE, as in Hugging Face `rope_scaling`. */
export type RopeScaling =
  | { type: 'default' }
  | {
      /** Llama 3.1: long wavelengths slowed down by `factor`, short ones kept, a smooth blend in between. */
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export interface RopeFrequencyOptions {
  /** Rotated dims per head (even); there are dim/2 frequencies. */
  dim: number;
  /** Base of the geometric progression. Default 10000. */
  theta?: number;
  scaling?: RopeScaling;
}

/**
 * The inverse frequencies of RoPE in float64: invFreq[i] = theta^(-2i/dim) for i < dim/2 (Hugging Face
 * computes the same in f32), then the `scaling`. Llama 3 scaling follows transformers'
 * `_compute_llama3_parameters`: with wavelen = 2 pi / invFreq, lowWavelen = orig / lowFreqFactor and
 * highWavelen = orig / highFreqFactor, wavelen < highWavelen keeps invFreq, wavelen > lowWavelen divides it
 * by `factor`, and in between (bounds included) smooth = (orig / wavelen - low) / (high - low) blends the two:
 * (1 - smooth) * invFreq / factor + smooth * invFreq.
 */
export function ropeFrequencies(options: RopeFrequencyOptions): Float64Array {
  const { dim, theta = 10000, scaling } = options;
  if (!Number.isInteger(dim) || dim <= 0 || dim % 2 !== 0) throw new InputError(`ropeFrequencies: dim must be a positive even integer, got ${dim}`);
  if (!(theta > 0) || !Number.isFinite(theta)) throw new InputError(`ropeFrequencies: theta must be positive and finite, got ${theta}`);
  const inv = Float64Array.from({ length: dim / 2 }, (_, i) => theta ** (-(2 * i) / dim));
  if (!scaling || scaling.type === 'default') return inv;
  if (scaling.type !== 'llama3') throw new InputError(`ropeFrequencies: unknown scaling type ${JSON.stringify((scaling as { type: unknown }).type)} (expected 'default' or 'llama3')`);
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: orig } = scaling;
  if (!(factor > 0) || !(low > 0) || !(high > low) || !(orig > 0)) {
    throw new InputError(`ropeFrequencies: llama3 scaling needs factor > 0, 0 < lowFreqFactor < highFreqFactor and originalMaxPositionEmbeddings > 0, got ${JSON.stringify(scaling)}`);
  }
  const lowWavelen = orig / low;
  const highWavelen = orig / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / factor;
    const smooth = (orig / wavelen - low) / (high - low);
    return ((1 - smooth) * f) / factor + smooth * f;
  });
}

/**
 * How dims pair up for rotation within the first `rotaryDim` dims (r): 'half' pairs i with i + r/2 (Llama,
 * Hugging Face `rotate_half`), 'interleaved' pairs 2i with 2i + 1 (GPT-J). Pair i turns by position * invFreq[i].
 */
export type RopePairing = 'half' | 'interleaved';

export interface RopeOptions {
  /**
   * Integer position of each token: [T] shared by the batch, or [B*T] (any tensor of that size). Default
   * offset + t. A tensor is read on the host, where the angle table is computed.
   */
  positions?: ArrayLike<number> | Tensor;
  /** First position when `positions` is not given (a decode step's cache length). Default 0. */
  offset?: number;
  /** Default 10000. */
  theta?: number;
  /** Rotate the first rotaryDim dims of each head (even, <= D); the rest pass through. Default D. */
  rotaryDim?: number;
  /** Default 'half'. */
  pairing?: RopePairing;
  scaling?: RopeScaling;
  /** Precomputed inverse frequencies (rotaryDim/2 of them), instead of theta and scaling. */
  invFreq?: ArrayLike<number>;
  /**
   * A table made by `ropeTable` (positions and frequencies), instead of positions / offset / theta / scaling /
   * invFreq: shared by several calls, it is computed once and uploaded once per backend.
   */
  table?: RopeTable;
}

/**
 * cos and sin of position * invFreq[i] in float64, [positions, rotaryDim/2], for several `rope` calls with
 * the same positions (q and k of every layer of a forward): computed once, and uploaded once to each backend
 * that runs them (the upload is the table's; `dispose` gives it back).
 */
export class RopeTable {
  /** Uploads of cos and sin by backend, made by the backend's kernel on first use. */
  readonly uploads = new Map<unknown, [Tensor, Tensor]>();
  constructor(
    readonly rotaryDim: number,
    readonly rows: number,
    readonly cos: Float64Array,
    readonly sin: Float64Array,
  ) {}

  dispose(): void {
    for (const pair of this.uploads.values()) for (const t of pair) t.dispose();
    this.uploads.clear();
  }
}

/**
 * The RoPE table of `positions` (integers: [T] shared by a batch, or [B*T]) for heads rotating `rotaryDim`
 * dims, with the frequencies of `theta` and `scaling` (or `invFreq`). Pass it as `rope`'s `table`; dispose it.
 */
export function ropeTable(positions: ArrayLike<number>, options: RopeTableOptions): RopeTable {
  const { rotaryDim } = options;
  if (!Number.isInteger(rotaryDim) || rotaryDim <= 0 || rotaryDim % 2 !== 0) throw new InputError(`ropeTable: rotaryDim must be a positive even integer, got ${rotaryDim}`);
  for (let i = 0; i < positions.length; i++) {
    if (!Number.isSafeInteger(positions[i])) throw new InputError(`ropeTable: positions[${i}] = ${positions[i]} is not an integer`);
  }
  return angleTable('ropeTable', positions, options);
}

export interface RopeTableOptions {
  rotaryDim: number;
  theta?: number;
  scaling?: RopeScaling;
  invFreq?: ArrayLike<number>;
}

/** ropeTable of checked positions; `what` prefixes errors. */
function angleTable(what: string, positions: ArrayLike<number>, options: RopeTableOptions): RopeTable {
  const { rotaryDim } = options;
  const invFreq = frequencies(what, rotaryDim, options);
  const half = rotaryDim / 2;
  const rows = positions.length;
  const cos = new Float64Array(rows * half);
  const sin = new Float64Array(rows * half);
  for (let p = 0; p < rows; p++) {
    for (let i = 0; i < half; i++) {
      const angle = positions[p]! * invFreq[i]!;
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return new RopeTable(rotaryDim, rows, cos, sin);
}

/** Attributes of the 'rope' kernels: x read as [batch, seq, heads, dim]. */
export interface RopeAttrs {
  batch: number;
  seq: number;
  heads: number;
  dim: number;
  rotaryDim: number;
  pairing: RopePairing;
  /** cos and sin of position * invFreq[i] in float64, [rows, rotaryDim/2]: rows = seq, or batch * seq. */
  cos: Float64Array;
  sin: Float64Array;
  /** Table rows from one batch entry to the next: 0 when the batch shares positions, else seq. */
  batchStride: number;
  /** The caller's table, which keeps each backend's upload (absent: the kernel uploads cos / sin for this call). */
  table?: RopeTable;
}

/**
 * Rotary position embedding of x [B, T, H, D] or [T, H, D] (f32, f16 or bf16), returned in f32 with x's
 * shape: each pair (a, b) of the first rotaryDim dims becomes (a cos - b sin, b cos + a sin) with angle
 * position * invFreq[i]. The angles and their cos/sin are computed once on the host in float64 (exact for
 * any position, e.g. 1e5, where an f32 angle would be off by ~1e-2 rad); the GPU kernel reads that table,
 * uploaded as f32, so its error is a few f32 roundings (~1e-7 relative).
 *
 * @example
 * const q = await rope(x, { offset: cacheLength, theta: 500000, scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } });
 */
export async function rope(x: Tensor, options: RopeOptions = {}): Promise<Tensor> {
  const name = x.name ?? 'x';
  if (x.rank !== 3 && x.rank !== 4) throw new ShapeError(`rope ${name}: expected [B, T, H, D] or [T, H, D], got ${formatShape(x.shape)}`);
  assertFloat('rope', x, 'x');
  const [batch, seq, heads, dim] = (x.rank === 3 ? [1, ...x.shape] : x.shape) as [number, number, number, number];
  const { rotaryDim = dim, pairing = 'half' } = options;
  if (!Number.isInteger(rotaryDim) || rotaryDim <= 0 || rotaryDim % 2 !== 0 || rotaryDim > dim) {
    throw new InputError(`rope ${name}: rotaryDim must be a positive even integer <= D = ${dim}, got ${rotaryDim}`);
  }
  if (pairing !== 'half' && pairing !== 'interleaved') throw new InputError(`rope ${name}: pairing must be 'half' or 'interleaved', got ${JSON.stringify(pairing)}`);

  const given = options.table;
  if (given) {
    const extra = (['positions', 'offset', 'theta', 'scaling', 'invFreq'] as const).filter((k) => options[k] !== undefined);
    if (extra.length) throw new InputError(`rope ${name}: a table brings its positions and frequencies; drop ${extra.join(', ')}`);
    if (given.rotaryDim !== rotaryDim) throw new InputError(`rope ${name}: the table rotates ${given.rotaryDim} dims, rotaryDim is ${rotaryDim}`);
    if (given.rows !== seq && given.rows !== batch * seq) throw new ShapeError(`rope ${name}: the table has ${given.rows} positions, expected T = ${seq}${batch > 1 ? ` or B*T = ${batch * seq}` : ''}`);
  }
  const table = given ?? angleTable(`rope ${name}`, await positionList(name, batch, seq, options), { ...options, rotaryDim });
  const attrs: RopeAttrs = { batch, seq, heads, dim, rotaryDim, pairing, cos: table.cos, sin: table.sin, batchStride: table.rows === seq ? 0 : seq, table: given };
  return (await runKernel('rope', [x], attrs))[0]!;
}

function frequencies(what: string, rotaryDim: number, options: RopeTableOptions): ArrayLike<number> {
  const { invFreq, theta, scaling } = options;
  if (!invFreq) return ropeFrequencies({ dim: rotaryDim, theta, scaling });
  if (theta !== undefined || scaling !== undefined) throw new InputError(`${what}: pass invFreq or theta/scaling, not both`);
  if (invFreq.length !== rotaryDim / 2) throw new ShapeError(`${what}: invFreq has ${invFreq.length} values, expected rotaryDim/2 = ${rotaryDim / 2}`);
  return invFreq;
}

async function positionList(name: string, batch: number, seq: number, options: RopeOptions): Promise<ArrayLike<number>> {
  const { positions, offset } = options;
  if (positions === undefined) {
    const start = offset ?? 0;
    if (!Number.isSafeInteger(start)) throw new InputError(`rope ${name}: offset must be an integer, got ${start}`);
    return Float64Array.from({ length: seq }, (_, t) => start + t);
  }
  if (offset !== undefined) throw new InputError(`rope ${name}: pass positions or offset, not both`);
  const values = positions instanceof Tensor ? await positions.data() : positions;
  if (values.length !== seq && values.length !== batch * seq) {
    throw new ShapeError(`rope ${name}: positions has ${values.length} values, expected T = ${seq}${batch > 1 ? ` or B*T = ${batch * seq}` : ''}`);
  }
  for (let i = 0; i < values.length; i++) {
    if (!Number.isSafeInteger(values[i])) throw new InputError(`rope ${name}: positions[${i}] = ${values[i]} is not an integer`);
  }
  return values;
}

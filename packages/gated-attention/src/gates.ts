import { InputError, ShapeError, Tensor, assertFloat, formatShape, runKernel, tensor } from '@phalanx/core';

/**
 * Attributes of 'attnOutput': per row n (token) and query head h of y [N, H, D], optionally XSA then the
 * AttnOutGate. Inputs: y, then v [N, Hkv, D] when `xsa`, then gateSrc [N, C] and weight [H, width] when
 * `gate`. Output f32, y's shape.
 */
export interface AttnOutputAttrs {
  N: number;
  H: number;
  D: number;
  Hkv: number;
  xsa: boolean;
  gate: boolean;
  /** Channels per row of gateSrc (the gate reads the first `width`). */
  C: number;
  width: number;
  outShape: number[];
}

/**
 * Attributes of 'smearGate'. Inputs: x [B, T, C], w [width], lambda [1]. Output f32 [B, T, C]. Token t of a
 * row mixes in token t - 1 unless t is 0 or in `resetAt`.
 */
export interface SmearGateAttrs {
  B: number;
  T: number;
  C: number;
  width: number;
  resetAt: number[];
  outShape: number[];
}

/** The norm floor of XSA's value direction (torch's F.normalize eps): a zero value vector removes nothing. */
export const XSA_EPS = 1e-12;

const label = (t: Tensor, role: string) => `${role} (${t.name ?? 'tensor'})`;

function checkShape(op: string, t: Tensor, role: string, shape: readonly number[]): void {
  assertFloat(op, t, role);
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) throw new ShapeError(`${op}: ${label(t, role)} is ${formatShape(t.shape)}; expected ${formatShape(shape)}`);
}

/** A scalar given as a number, or as a tensor of one element (a learned parameter): always a tensor for the kernel. */
function scalarTensor(op: string, value: number | Tensor, role: string, like: Tensor): { t: Tensor; owned: boolean } {
  if (value instanceof Tensor) {
    assertFloat(op, value, role);
    if (value.size !== 1) throw new ShapeError(`${op}: ${label(value, role)} is ${formatShape(value.shape)}; expected one element`);
    return { t: value, owned: false };
  }
  if (!Number.isFinite(value)) throw new InputError(`${op}: ${role} must be finite, got ${value}`);
  return { t: tensor([value], [1], { backend: like.backend, name: role }), owned: true };
}

async function attnOutput(op: string, y: Tensor, v: Tensor | null, gate: { src: Tensor; weight: Tensor } | null): Promise<Tensor> {
  assertFloat(op, y, 'y');
  if (y.rank < 2) throw new ShapeError(`${op}: ${label(y, 'y')} is ${formatShape(y.shape)}; expected [..., H, D]`);
  const [H, D] = y.shape.slice(-2) as [number, number];
  const lead = y.shape.slice(0, -2);
  const N = lead.reduce((a, b) => a * b, 1);
  const inputs = [y];
  let Hkv = H;
  if (v) {
    assertFloat(op, v, 'v');
    Hkv = v.shape[v.rank - 2] ?? 0;
    checkShape(op, v, 'v', [...lead, Hkv, D]);
    if (Hkv < 1 || H % Hkv !== 0) throw new ShapeError(`${op}: ${H} heads of y are not a multiple of v's ${Hkv} heads`);
    inputs.push(v);
  }
  let [C, width] = [0, 0];
  if (gate) {
    const { src, weight } = gate;
    assertFloat(op, weight, 'weight');
    if (weight.rank !== 2 || weight.shape[0] !== H) throw new ShapeError(`${op}: ${label(weight, 'weight')} is ${formatShape(weight.shape)}; expected [${H}, width]`);
    width = weight.shape[1]!;
    assertFloat(op, src, 'gateSrc');
    C = src.shape[src.rank - 1] ?? 0;
    checkShape(op, src, 'gateSrc', [...lead, C]);
    if (C < width) throw new ShapeError(`${op}: ${label(src, 'gateSrc')} has ${C} channels; the gate reads ${width}`);
    inputs.push(src, weight);
  }
  const attrs: AttnOutputAttrs = { N, H, D, Hkv, xsa: !!v, gate: !!gate, C, width, outShape: [...y.shape] };
  return (await runKernel('attnOutput', inputs, attrs))[0]!;
}

/**
 * AttnOutGate: y[n, h, :] * 2 sigmoid(sum_{c < width} weight[h, c] gateSrc[n, c]), one gate per token and head.
 * y [..., H, D] (the attention output per head); gateSrc [..., C] (the pre-norm block input; the gate reads
 * its first `width` channels); weight [H, width]. Zero weights are the identity. Returns f32, y's shape.
 */
export function attnOutGate(y: Tensor, gateSrc: Tensor, weight: Tensor): Promise<Tensor> {
  return attnOutput('attnOutGate', y, null, { src: gateSrc, weight });
}

/**
 * XSA: removes from each head output its component along its own token's value: y - (y . v^) v^ with
 * v^ = v / max(|v|, 1e-12), query head h using value head floor(h / (H / Hkv)). y [..., H, D], v [..., Hkv, D].
 */
export function xsa(y: Tensor, v: Tensor): Promise<Tensor> {
  return attnOutput('xsa', y, v, null);
}

/** XSA then AttnOutGate in one kernel (the order of the parameter-golf block). */
export function xsaOutGate(y: Tensor, v: Tensor, gateSrc: Tensor, weight: Tensor): Promise<Tensor> {
  return attnOutput('xsaOutGate', y, v, { src: gateSrc, weight });
}

export interface SmearGateOptions {
  /**
   * Positions along T where a new document starts (BOS): the token there does not mix in its predecessor.
   * cuSeqlens works as is (T itself is ignored). Off by default: the seed mixes across documents.
   */
  resetAt?: ArrayLike<number>;
}

/**
 * SmearGate: x_t + lambda * sigmoid(w . x_t[:width]) * x_{t-1}, one scalar gate per token, x_{-1} = 0.
 * x [..., T, C] (leading dims are independent sequences); w [width] with width <= C; lambda a number or a
 * one-element tensor. lambda = 0 is the identity. Returns f32, x's shape.
 */
export async function smearGate(x: Tensor, w: Tensor, lambda: number | Tensor, options: SmearGateOptions = {}): Promise<Tensor> {
  const op = 'smearGate';
  assertFloat(op, x, 'x');
  if (x.rank < 2) throw new ShapeError(`${op}: ${label(x, 'x')} is ${formatShape(x.shape)}; expected [..., T, C]`);
  const [T, C] = x.shape.slice(-2) as [number, number];
  assertFloat(op, w, 'w');
  if (w.rank !== 1 || w.size > C) throw new ShapeError(`${op}: ${label(w, 'w')} is ${formatShape(w.shape)}; expected [width] with width <= ${C}`);
  const resetAt = Array.from(options.resetAt ?? []);
  const bad = resetAt.find((p) => !(Number.isInteger(p) && p >= 0 && p <= T));
  if (bad !== undefined) throw new InputError(`${op}: resetAt position ${bad} is not an integer in [0, ${T}]`);
  const lam = scalarTensor(op, lambda, 'lambda', x);
  const attrs: SmearGateAttrs = { B: x.shape.slice(0, -2).reduce((a, b) => a * b, 1), T, C, width: w.size, resetAt, outShape: [...x.shape] };
  try {
    return (await runKernel(op, [x, w, lam.t], attrs))[0]!;
  } finally {
    if (lam.owned) lam.t.dispose();
  }
}

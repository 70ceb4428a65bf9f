import { type Backend, DTypeError, InputError, Scratch, ShapeError, Tensor, add, assertFloat, formatShape, getKernels, isFloat, runKernel, sameShape } from '@phalanx/core';
import { rmsNorm, swiglu } from './layers.js';
import './cpu/linear.js';
import { GEMV_MAX_ROWS } from './webgpu/linear.js';

/**
 * One batched matrix product: out[b] = a[b] @ op(w[b]) (+ bias), with op(w) = w^T when `transB` (the Hugging
 * Face [out, in] weight layout of `linear`). a is read as [batch, M, K]; w as [K, N], or [N, K] when
 * transposed, shared by every batch when `bShared`.
 */
export interface MatmulAttrs {
  batch: number;
  M: number;
  N: number;
  K: number;
  transB: boolean;
  bShared: boolean;
  hasBias: boolean;
  /** Inputs end with a per-output-row scale [N] (quantized weights: y = (x codes^T) * scale + bias). */
  hasRowScale: boolean;
  /**
   * Inputs end with a residual of the output's shape, added to each output (y = residual + (x W^T + b)). Only
   * `linear` sets it, and only where `fusesLinearResidual` holds (the GEMV case).
   */
  hasResidual?: boolean;
  /** The input's RMSNorm in the kernel (GEMV only): its weight is the last input. See `InputNorm`. */
  norm?: NormAttrs;
  outShape: number[];
}

/**
 * An RMSNorm of the input over its last dim before a product (`linear`, `linears`, `swigluLinear`):
 * x / sqrt(mean(x²) + eps) * (weight + weightOffset), as `rmsNorm` computes it. In decode (the GEMV case) the
 * product's kernel applies it: each row's sum of squares is accumulated by the threads that read x for the
 * product (one dispatch fewer); other shapes run `rmsNorm` first.
 */
export interface InputNorm {
  weight: Tensor;
  eps: number;
  weightOffset?: number;
}

/** The kernels' view of an InputNorm (its weight is an input). */
export interface NormAttrs {
  eps: number;
  weightOffset: number;
}

/**
 * Int8 weights: W[n, k] = codes[n, k] * scales[n]. codes: i8 [out, in]; scales: [out], any float dtype. A
 * @phalanx/quantizer `QuantizedTensor` with int8 codes is one.
 */
export interface Int8Weight {
  codes: Tensor;
  scales: Tensor;
}

/** What `linear` multiplies by: a float matrix [out, in], or int8 codes with one scale per output row. */
export type LinearWeight = Tensor | Int8Weight;

/** The matrix behind a LinearWeight ([out, in]: the tensor, or the codes), for shapes, names and backends. */
export function weightMatrix(weight: LinearWeight): Tensor {
  return weight instanceof Tensor ? weight : weight.codes;
}

/** Options of `linear`. */
export interface LinearOptions {
  /** RMSNorm of x before the product (see `InputNorm`). */
  norm?: InputNorm | null;
  /**
   * A tensor of the output's shape [..., out] added to the product: y = residual + (x W^T + b), the residual
   * stream of a decoder layer (x + o_proj(attention), x + down_proj(mlp)). Any float dtype.
   */
  residual?: Tensor | null;
}

/**
 * Whether `linear` with a `residual` adds it inside the product's kernel for M rows of x by K: the GEMV case
 * (the rule of `fusesSwigluLinear`), on every backend, so CPU and WebGPU compute the same formula for the same
 * shapes. Otherwise the residual is added by a separate `add`.
 */
export function fusesLinearResidual(M: number, K: number): boolean {
  return fusesSwigluLinear(M, K);
}

/** What `linear` checks of x, one weight and its bias (errors prefixed with `op`), and the weight's parts. */
function checkLinear(op: string, x: Tensor, weight: LinearWeight, bias: Tensor | null | undefined): { w: Tensor; rowScale: Tensor | undefined; N: number; K: number; name: string } {
  const w = weightMatrix(weight);
  const rowScale = weight instanceof Tensor ? undefined : weight.scales;
  const name = w.name ?? 'weight';
  assertFloat(op, x, 'input');
  if (rowScale) {
    if (w.dtype !== 'i8') throw new DTypeError(`${op}: codes ${name} must be i8, got ${w.dtype}`);
  } else {
    assertFloat(op, w, 'weight');
  }
  if (w.rank !== 2) throw new ShapeError(`${op}: weight ${name} must be [out, in], got ${formatShape(w.shape)}`);
  const [N, K] = w.shape as [number, number];
  if (x.rank < 1 || x.shape[x.rank - 1] !== K) {
    throw new ShapeError(`${op}: input ${x.name ?? 'x'} ${formatShape(x.shape)} must end in ${K} (weight ${name} is ${formatShape(w.shape)})`);
  }
  for (const [role, t] of [['bias', bias], ['scales', rowScale]] as const) {
    if (!t) continue;
    assertFloat(op, t, role);
    if (t.rank !== 1 || t.shape[0] !== N) throw new ShapeError(`${op}: ${role} ${t.name ?? role} ${formatShape(t.shape)} must be [${N}] to match weight ${name}`);
  }
  return { w, rowScale, N, K, name };
}

/** Checks an InputNorm for x [..., K]: a float weight [K], finite eps and offset. */
function checkNorm(op: string, x: Tensor, K: number, norm: InputNorm): NormAttrs {
  const { weight, eps, weightOffset = 0 } = norm;
  assertFloat(op, weight, 'norm weight');
  if (weight.rank !== 1 || weight.shape[0] !== K) throw new ShapeError(`${op}: norm weight ${weight.name ?? 'weight'} ${formatShape(weight.shape)} must be [${K}] to match input ${x.name ?? 'x'} ${formatShape(x.shape)}`);
  if (!(Number.isFinite(eps) && eps > 0)) throw new InputError(`${op}: norm eps must be a finite number > 0, got ${eps}`);
  if (!Number.isFinite(weightOffset)) throw new InputError(`${op}: norm weightOffset must be finite, got ${weightOffset}`);
  return { eps, weightOffset };
}

/**
 * How an op with an optional InputNorm runs: `fused` (the kernel applies it; its weight goes last in the
 * inputs), or on `x` normed by a separate rmsNorm (`release` disposes that copy), or on x as it is.
 */
async function withNorm(op: string, x: Tensor, K: number, norm: InputNorm | null | undefined, fuses: boolean): Promise<{ x: Tensor; fused?: NormAttrs; release: () => void }> {
  if (!norm) return { x, release: () => {} };
  const attrs = checkNorm(op, x, K, norm);
  if (fuses) return { x, fused: attrs, release: () => {} };
  const normed = await rmsNorm(x, norm.weight, { eps: attrs.eps, weightOffset: attrs.weightOffset });
  return { x: normed, release: () => normed.dispose() };
}

/**
 * y = x W^T + b with W in the Hugging Face layout [out, in]. x: [..., in] (f32, f16 or bf16); W: [out, in]
 * (f32, f16 or bf16, upcast in the kernel); bias: [out]. Returns f32 [..., out]. One row (decode) takes a
 * GEMV kernel that streams W once; more rows take a tiled matrix-product kernel.
 *
 * Int8 weights (`{ codes, scales }`): y = (x codes^T) * scales + b, the scale applied in the kernels'
 * epilogue: they read one byte per weight and never expand W in memory.
 *
 * `options.residual` (the output's shape) gives y = residual + (x W^T + b). In decode (`fusesLinearResidual`:
 * the GEMV case, float or int8 weights) it is added in the kernel's epilogue, in one dispatch (on the CPU in
 * float64, rounded once); other shapes compute add(residual, linear(x, W, b)). `options.norm` (`InputNorm`)
 * multiplies rmsNorm(x) instead of x, in the same kernel in decode.
 */
export async function linear(input: Tensor, weight: LinearWeight, bias?: Tensor | null, options: LinearOptions = {}): Promise<Tensor> {
  const { w, rowScale, N, K, name } = checkLinear('linear', input, weight, bias);
  const residual = options.residual ?? undefined;
  const outShape = [...input.shape]; // not slice(): it is slow on a frozen array
  outShape[outShape.length - 1] = N;
  if (residual) {
    assertFloat('linear', residual, 'residual');
    if (!sameShape(residual.shape, outShape)) {
      throw new ShapeError(`linear: residual ${residual.name ?? 'residual'} ${formatShape(residual.shape)} must be the output's shape ${formatShape(outShape)} (input ${input.name ?? 'x'} ${formatShape(input.shape)}, weight ${name} ${formatShape(w.shape)})`);
    }
  }
  // the GEMV case: the residual and the input norm are applied in the product's kernel
  const gemv = fusesLinearResidual(input.size / K, K);
  const fusedResidual = !!residual && gemv;
  const { x, fused: norm, release } = await withNorm('linear', input, K, options.norm, gemv);
  try {
    const attrs: MatmulAttrs = { batch: 1, M: input.size / K, N, K, transB: true, bShared: true, hasBias: !!bias, hasRowScale: !!rowScale, hasResidual: fusedResidual, norm, outShape };
    const inputs = [x, w, ...(bias ? [bias] : []), ...(rowScale ? [rowScale] : []), ...(fusedResidual ? [residual!] : []), ...(norm ? [options.norm!.weight] : [])];
    const y = (await runKernel('matmul', inputs, attrs))[0]!;
    if (!residual || fusedResidual) return y;
    try {
      return await add(residual, y);
    } finally {
      y.dispose();
    }
  } finally {
    release();
  }
}

/**
 * Batched matrix product a @ b (or a @ b^T with `transposeB`). a: [..., M, K]; b: [..., K, N] with the same
 * leading dims as a, or a plain 2-D [K, N] shared by all of them. Inputs f32, f16 or bf16; output f32.
 */
export async function matmul(a: Tensor, b: Tensor, options: { transposeB?: boolean } = {}): Promise<Tensor> {
  const transB = options.transposeB ?? false;
  assertFloat('matmul', a, 'a');
  assertFloat('matmul', b, 'b');
  if (a.rank < 2 || b.rank < 2) throw new ShapeError(`matmul: a ${formatShape(a.shape)} and b ${formatShape(b.shape)} need at least 2 dims`);
  const [M, K] = a.shape.slice(-2) as [number, number];
  const [bRows, bCols] = b.shape.slice(-2) as [number, number];
  const [bK, N] = transB ? [bCols, bRows] : [bRows, bCols];
  if (bK !== K) throw new ShapeError(`matmul: a ${formatShape(a.shape)} and b ${formatShape(b.shape)}${transB ? ' (transposed)' : ''} disagree on K (${K} vs ${bK})`);
  const lead = a.shape.slice(0, -2);
  const bShared = b.rank === 2;
  if (!bShared && (b.rank !== a.rank || b.shape.slice(0, -2).some((d, i) => d !== lead[i]))) {
    throw new ShapeError(`matmul: b ${formatShape(b.shape)} must have a's leading dims ${formatShape(lead)} or be 2-D`);
  }
  const batch = lead.reduce((p, d) => p * d, 1);
  const attrs: MatmulAttrs = { batch, M, N, K, transB, bShared, hasBias: false, hasRowScale: false, outShape: [...lead, M, N] };
  return (await runKernel('matmul', [a, b], attrs))[0]!;
}

/** Attributes of the fused `swigluLinear` kernels: x read as [M, K]; gate and up [N, K], one dtype. */
export interface SwigluLinearAttrs {
  M: number;
  N: number;
  K: number;
  /** int8 weights: gate's and up's row scales follow the weights, applied to each dot product before silu and the product. */
  hasRowScale: boolean;
  /** The input's RMSNorm in the kernel: its weight is the last input. */
  norm?: NormAttrs;
  outShape: number[];
}

/**
 * Whether `swigluLinear` takes its fused kernel for M rows of x by K: the GEMV case (at most GEMV_MAX_ROWS
 * rows, K a multiple of 4 for its 16-byte loads), with plain weights of one dtype. The rule is the same on
 * every backend, so CPU and WebGPU compute the same formula for the same shapes.
 */
export function fusesSwigluLinear(M: number, K: number): boolean {
  return M >= 1 && M <= GEMV_MAX_ROWS && K % 4 === 0;
}

/**
 * The gate/up half of a SwiGLU MLP: silu(x gate^T) * (x up^T), with gate and up [out, in] of one shape.
 * x: [..., in] (f32, f16 or bf16). Returns f32 [..., out].
 *
 * Decode (a few rows, see `fusesSwigluLinear`) with float weights of one dtype (f32, f16 or bf16), or both int8
 * `{ codes, scales }`, runs one fused kernel: on WebGPU a single GEMV dispatch that streams the gate and up rows
 * in the same loop, reusing each x vector for both, and stores silu(g) * u (int8: silu(g * gate scale) * (u * up
 * scale)); on the CPU both dot products in float64, rounded once. Other inputs (prefill, mixed kinds or dtypes)
 * are computed as swiglu(linear(x, gate), linear(x, up)), as separate ops.
 */
export async function swigluLinear(input: Tensor, gate: LinearWeight, up: LinearWeight, options: { norm?: InputNorm | null } = {}): Promise<Tensor> {
  const op = 'swigluLinear';
  assertFloat(op, input, 'input');
  const [g, u] = ([['gate', gate], ['up', up]] as const).map(([role, weight]) => {
    const w = weightMatrix(weight);
    const name = w.name ?? role;
    if (weight instanceof Tensor ? !isFloat(w.dtype) : w.dtype !== 'i8') {
      throw new DTypeError(`${op}: ${role} ${name} is ${w.dtype}, expected ${weight instanceof Tensor ? 'f32, f16 or bf16' : 'i8 codes'}`);
    }
    if (w.rank !== 2) throw new ShapeError(`${op}: ${role} ${name} must be [out, in], got ${formatShape(w.shape)}`);
    return { w, name };
  }) as [{ w: Tensor; name: string }, { w: Tensor; name: string }];
  if (!sameShape(g.w.shape, u.w.shape)) {
    throw new ShapeError(`${op}: up ${u.name} ${formatShape(u.w.shape)} must have the shape of gate ${g.name} ${formatShape(g.w.shape)}`);
  }
  const [N, K] = g.w.shape as [number, number];
  if (input.rank < 1 || input.shape[input.rank - 1] !== K) {
    throw new ShapeError(`${op}: input ${input.name ?? 'x'} ${formatShape(input.shape)} must end in ${K} (gate ${g.name} and up ${u.name} are ${formatShape(g.w.shape)})`);
  }
  const M = input.size / K;
  const floats = gate instanceof Tensor && up instanceof Tensor && gate.dtype === up.dtype;
  const int8 = !(gate instanceof Tensor) && !(up instanceof Tensor);
  const fuses = (floats || int8) && fusesSwigluLinear(M, K);
  for (const [role, weight] of [['gate', gate], ['up', up]] as const) {
    if (weight instanceof Tensor || !fuses) continue; // the composition checks them through linear
    assertFloat(op, weight.scales, `${role} scales`);
    if (weight.scales.rank !== 1 || weight.scales.shape[0] !== N) throw new ShapeError(`${op}: ${role} scales ${weight.scales.name ?? 'scales'} ${formatShape(weight.scales.shape)} must be [${N}]`);
  }
  const { x, fused: norm, release } = await withNorm(op, input, K, options.norm, fuses);
  const s = new Scratch();
  try {
    if (fuses) {
      const outShape = [...x.shape];
      outShape[outShape.length - 1] = N;
      const inputs = int8 ? [x, g.w, u.w, (gate as Int8Weight).scales, (up as Int8Weight).scales] : [x, g.w, u.w];
      if (norm) inputs.push(options.norm!.weight);
      return (await runKernel(op, inputs, { M, N, K, hasRowScale: int8, norm, outShape } satisfies SwigluLinearAttrs))[0]!;
    }
    return await swiglu(await s.keep(linear(x, gate)), await s.keep(linear(x, up)));
  } finally {
    s.dispose();
    release();
  }
}

/** One matrix of a fused `linears` kernel: its output rows, and which epilogue inputs follow its weight. */
export interface LinearsOutput {
  N: number;
  hasBias: boolean;
  hasRowScale: boolean;
  outShape: number[];
}

/**
 * Attributes of the fused `linears` kernels: x read as [M, K]; the inputs are x, then per matrix its weight
 * [N, K] (float, or i8 codes), its bias if `hasBias`, its row scales if `hasRowScale`; one output per matrix.
 */
export interface LinearsAttrs {
  M: number;
  K: number;
  outputs: LinearsOutput[];
  /** The input's RMSNorm in the kernel: its weight is the last input. */
  norm?: NormAttrs;
}

/**
 * Whether `linears` may compute its products in one fused kernel for M rows of x by K: the GEMV case (the rule
 * of `fusesSwigluLinear`), on every backend. The kernel then takes the weights (float dtypes and int8 codes
 * alike) at least two at a time, as many as the backend's kernel accepts (on WebGPU the bindings must fit the
 * device's maxStorageBuffersPerShaderStage); the rest are separate `linear`s.
 */
export function fusesLinears(M: number, K: number): boolean {
  return fusesSwigluLinear(M, K);
}

/** Whether a kernel of `op` on `backend` takes these inputs (so runKernel stays there rather than moving them). */
function accepted(op: string, inputs: Tensor[], attrs: unknown, backend: Backend): boolean {
  return getKernels(op, backend.name).some((k) => !k.verify || k.verify(inputs, attrs, backend) === true);
}

/**
 * Several linear maps of one input: `linears(x, [W0, W1, ...], [b0, b1, ...])` returns
 * [linear(x, W0, b0), linear(x, W1, b1), ...], each f32 [..., out_i], the same shapes and numerics as those
 * calls. Attention's q/k/v projections of a token are one call. `biases` is optional, as is each entry
 * (null or undefined: no bias); the weights may differ in `out` and kind (float dtype or int8 `{ codes, scales }`)
 * but must share `in`.
 *
 * In decode (`fusesLinears`: one to four rows, K a multiple of 4) the weights are computed together, whatever
 * their kinds: on WebGPU by one GEMV dispatch whose workgroups cover the rows of all of them, each weight bound
 * as it is (no concatenated copy, each read by the loads of its dtype) and each output its own tensor. Weights
 * beyond what the device binds in one dispatch, and every other shape (prefill), are separate `linear` calls.
 */
export async function linears(
  input: Tensor,
  weights: readonly LinearWeight[],
  biases: readonly (Tensor | null | undefined)[] = [],
  options: { norm?: InputNorm | null } = {},
): Promise<Tensor[]> {
  const op = 'linears';
  if (biases.length > weights.length) throw new InputError(`${op}: ${biases.length} biases for ${weights.length} weights`);
  const first = weights[0] && weightMatrix(weights[0]);
  for (const weight of weights) {
    const w = weightMatrix(weight);
    // all weights map the same input: a weight of another width is named before x is blamed
    if (first && first.rank === 2 && w.rank === 2 && w.shape[1] !== first.shape[1]) {
      throw new ShapeError(`${op}: weight ${w.name ?? 'weight'} ${formatShape(w.shape)} must have the in dim ${first.shape[1]} of weight ${first.name ?? 'weight'} ${formatShape(first.shape)}`);
    }
  }
  const checked = weights.map((weight, i) => checkLinear(op, input, weight, biases[i]));
  if (checked.length === 0) return [];
  const K = checked[0]!.K;
  const M = input.size / K;
  const { x, fused: norm, release } = await withNorm(op, input, K, options.norm, fusesLinears(M, K));
  // with the norm fused, every kernel applies it: the linears dispatches and any separate linear
  const normWeight = norm ? [options.norm!.weight] : [];
  const outs: (Tensor | undefined)[] = weights.map(() => undefined);
  try {
    // the weights with rows to compute (an empty output needs no kernel), in order, of any kind
    let rest = fusesLinears(M, K) ? checked.flatMap(({ N }, i) => (N > 0 ? [i] : [])) : [];
    while (rest.length >= 2) {
      // the longest run that a kernel where x lives takes in one go
      let taken = 0;
      for (let n = rest.length; n >= 2 && taken === 0; n--) {
        const run = rest.slice(0, n);
        const inputs = [x];
        const attrs: LinearsAttrs = { M, K, outputs: [], norm };
        for (const i of run) {
          const { w, rowScale, N } = checked[i]!;
          const bias = biases[i] ?? undefined;
          inputs.push(w, ...(bias ? [bias] : []), ...(rowScale ? [rowScale] : []));
          const outShape = [...x.shape];
          outShape[outShape.length - 1] = N;
          attrs.outputs.push({ N, hasBias: !!bias, hasRowScale: !!rowScale, outShape });
        }
        inputs.push(...normWeight);
        if (!accepted(op, inputs, attrs, x.backend)) continue;
        const ys = await runKernel(op, inputs, attrs);
        run.forEach((i, j) => (outs[i] = ys[j]));
        taken = n;
      }
      if (taken === 0) break;
      rest = rest.slice(taken);
    }
    for (let i = 0; i < weights.length; i++) outs[i] ??= await linear(x, weights[i]!, biases[i], { norm: norm ? options.norm : null });
    return outs as Tensor[];
  } catch (e) {
    for (const t of outs) t?.dispose();
    throw e;
  } finally {
    release();
  }
}

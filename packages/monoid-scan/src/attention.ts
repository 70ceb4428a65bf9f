/**
 * MonoidAttention: Spartacus's attention layer (spec 1.3), from its weights. Per token and head:
 *   q = RMSNorm_q(W_q x) / sqrt(Dk)      k = SiLU(RMSNorm_k(W_k x))      v = W_v x
 *   log a = logsigmoid(z) or -softplus(z), z = W_decay x + b (the decay variant, spec 1.3.1)
 *   S_t = diag(a_t) S_{t-1} + k_t v_t^T  from S_0 = h0      o_t = S_t^T q_t      out = W_o concat_h(o_t)
 * Every tensor it makes lives on the weights' backend; intermediates are disposed before a call returns.
 *
 * @example
 * import { MonoidAttention, detectDecayVariant } from '@phalanx/monoid-scan';
 * const config = { heads: 32, headDim: 64 };
 * const decay = await detectDecayVariant(weights.decayProj, weights.decayBias, config);
 * const attn = new MonoidAttention(weights, { ...config, decay });
 * const { output, state } = await attn.forward(x);          // x [B, T, 2048] -> output [B, T, 2048]
 * const next = await attn.step(state, xt);                   // xt [B, 2048]: one token per sequence
 * state.dispose();                                           // step returns a new state
 */
import { ConfigError, InputError, Scratch, ShapeError, type Tensor, add, assertFloat, formatShape, mul, sameShape, zeros } from '@phalanx/core';
import { type InputNorm, type LinearWeight, linear, linears, rmsNorm, silu, weightMatrix } from '@phalanx/ops';
import { DECAY_VARIANTS, type DecayVariant, LOG_DECAY_FLOOR, logDecay } from './decay.js';
import { type MonoidScanOptions, type MonoidStepPrologue, monoidScan, monoidStep } from './index.js';

export { DECAY_BIAS_THRESHOLD, DECAY_VARIANTS, type DecayVariant, LOG_DECAY_FLOOR, type LogDecayAttrs, detectDecayVariant, logDecay } from './decay.js';

/**
 * One layer's weights (spec 1.9 names in brackets), HF layout [out, in]; f32, f16 or bf16. H heads of
 * Dk = headDim. The q/k/v/o projections may also be int8 codes with row scales (an ops `LinearWeight`).
 */
export interface MonoidAttentionWeights {
  /** [H*Dk, hidden] (q_proj.weight). */
  qProj: LinearWeight;
  /** [H*Dk, hidden] (k_proj.weight). */
  kProj: LinearWeight;
  /** [H*Dk, hidden] (v_proj.weight): Dv = Dk. */
  vProj: LinearWeight;
  /** [hidden, H*Dk] (o_proj.weight). */
  oProj: LinearWeight;
  /** [H, hidden] for scalar decay, [H*Dk, hidden] for vector decay (decay_proj.weight). */
  decayProj: Tensor;
  /** [H] or [H*Dk], as decayProj (decay_proj.bias). */
  decayBias: Tensor;
  /**
   * [Dk]: one weight shared by every head, or [H*Dk]: one row per head (q_norm.weight; name and shape
   * unverified, spec 1.9). Either way the norm is over each head's Dk values, as spec 1.3 writes it.
   */
  qNorm: Tensor;
  /** [Dk] or [H*Dk], as qNorm (k_norm.weight). */
  kNorm: Tensor;
  /** [1, H, Dk, Dk]: the learned initial state, broadcast over the batch (h0). */
  h0: Tensor;
}

export interface MonoidAttentionConfig {
  heads: number;
  headDim: number;
  /** Which checkpoint revision's decay (spec 1.3.1); `detectDecayVariant` reads it from the weights. */
  decay: DecayVariant;
  /** eps of the q and k RMSNorms. Default 1e-5 (rms_norm_eps; spec 1.7 [D]). */
  rmsNormEps?: number;
  /**
   * Clamp log a to >= -30 (LOG_DECAY_FLOOR) before the scan: the spec's optional guard (1.7 [D]), not in the
   * original. Default false, so the layer matches the original exactly.
   */
  clampLogDecay?: boolean;
}

/** The scan's options (mode, chunkSize, subChunkSize, cuSeqlens), plus the state to start from. */
export interface MonoidAttentionForwardOptions extends MonoidScanOptions, MonoidAttentionResidual {
  /** [B, H, Dk, Dk] (or [N, ...] with cuSeqlens): start here instead of h0, e.g. to continue a prefill. */
  initialState?: Tensor;
}

export interface MonoidAttentionResidual {
  /**
   * A tensor of the output's shape added to it: a decoder layer's residual stream, x + attention(norm(x)).
   * The output projection adds it in its epilogue (ops `linear`), one dispatch fewer in decode.
   */
  residual?: Tensor;
  /**
   * An RMSNorm of x before the projections (a decoder layer's input norm, ops `InputNorm`): in decode the
   * projections' GEMV applies it, one dispatch fewer.
   */
  norm?: InputNorm;
}

export interface MonoidAttentionResult {
  /** [B, T, hidden] from forward, [B, hidden] from step; f32. */
  output: Tensor;
  /** [B, H, Dk, Dk] (or [N, ...] with cuSeqlens), f32: the state after each sequence's last token. */
  state: Tensor;
}

const OP = 'MonoidAttention';

export class MonoidAttention {
  readonly heads: number;
  readonly headDim: number;
  readonly hidden: number;
  readonly decay: DecayVariant;
  readonly rmsNormEps: number;
  readonly clampLogDecay: boolean;

  constructor(
    readonly weights: MonoidAttentionWeights,
    config: MonoidAttentionConfig,
  ) {
    const { heads, headDim, decay, rmsNormEps = 1e-5, clampLogDecay = false } = config;
    const file = `${OP} config`;
    if (!Number.isInteger(heads) || heads < 1) throw new ConfigError(file, 'heads', `must be a positive integer, got ${heads}`);
    if (!Number.isInteger(headDim) || headDim < 1) throw new ConfigError(file, 'headDim', `must be a positive integer, got ${headDim}`);
    if (!DECAY_VARIANTS.includes(decay)) throw new ConfigError(file, 'decay', `unknown variant '${decay}'; expected ${DECAY_VARIANTS.join(', ')}`);
    if (!Number.isFinite(rmsNormEps) || rmsNormEps <= 0) throw new ConfigError(file, 'rmsNormEps', `must be a finite number > 0, got ${rmsNormEps}`);
    this.heads = heads;
    this.headDim = headDim;
    this.decay = decay;
    this.rmsNormEps = rmsNormEps;
    this.clampLogDecay = clampLogDecay;

    const [H, D] = [heads, headDim];
    const hd = H * D;
    if (!weights.qProj) throw new InputError(`${OP}: weight qProj is missing`);
    const qProj = weightMatrix(weights.qProj);
    if (qProj.rank !== 2) throw new ShapeError(`${OP}: qProj (${qProj.name ?? 'tensor'}) is ${formatShape(qProj.shape)}; expected [${hd}, hidden]`);
    this.hidden = qProj.shape[1]!;
    const hidden = this.hidden;
    const decayOut = decay === 'scalar-logsigmoid' ? H : hd;
    const forDecay = ` for decay '${decay}' (detectDecayVariant reads the variant from the weights)`;
    const expected: Record<keyof MonoidAttentionWeights, [shapes: number[][], why?: string]> = {
      qProj: [[[hd, hidden]]],
      kProj: [[[hd, hidden]]],
      vProj: [[[hd, hidden]]],
      oProj: [[[hidden, hd]]],
      decayProj: [[[decayOut, hidden]], forDecay],
      decayBias: [[[decayOut]], forDecay],
      qNorm: [[[D], [hd]]],
      kNorm: [[[D], [hd]]],
      h0: [[[1, H, D, D]]],
    };
    for (const [role, [shapes, why = '']] of Object.entries(expected)) {
      const w = weights[role as keyof MonoidAttentionWeights];
      if (!w) throw new InputError(`${OP}: weight ${role} is missing`);
      const t = weightMatrix(w);
      if (t === w) assertFloat(OP, t, role); // int8 codes and their scales are linear's to check
      if (!shapes.some((s) => sameShape(t.shape, s))) {
        throw new ShapeError(`${OP}: ${role} (${t.name ?? 'tensor'}) is ${formatShape(t.shape)}; expected ${shapes.map(formatShape).join(' or ')}${why} (heads ${H}, headDim ${D}, hidden ${hidden})`);
      }
      if (t.backend !== qProj.backend) throw new InputError(`${OP}: ${role} (${t.name ?? 'tensor'}) is on ${t.backend.name}, qProj on ${qProj.backend.name}; keep the weights on one backend`);
    }
  }

  /**
   * The whole sequence: x [B, T, hidden] -> output [B, T, hidden], and the state after the last token to
   * decode from. Starts from h0 (or `initialState`); the options choose the scan's form (see monoidScan).
   */
  async forward(x: Tensor, options: MonoidAttentionForwardOptions = {}): Promise<MonoidAttentionResult> {
    this.checkInput(x, 'forward', 3, '[B, T, hidden]');
    const { initialState, residual, norm, ...scanOptions } = options;
    const s = new Scratch();
    try {
      const { q, k, v, logDecay } = await this.project(x, s, norm);
      // one h0 per sequence; a malformed cuSeqlens is monoidScan's to report
      const sequences = scanOptions.cuSeqlens ? Math.max(scanOptions.cuSeqlens.length - 1, 1) : x.shape[0]!;
      const start = initialState ?? (await s.keep(this.initialState(sequences)));
      const { output, finalState } = await monoidScan({ q, k, v, logDecay, initialState: start }, scanOptions);
      return { output: await this.outputProjection(output, s, residual), state: finalState };
    } finally {
      s.dispose();
    }
  }

  /**
   * One token per sequence (O(1) decode, spec 1.6): x [B, hidden] and the state [B, H, Dk, Dk] -> output
   * [B, hidden] and the next state. The state passed in is left alone: dispose it when done.
   */
  async step(state: Tensor, x: Tensor, options: MonoidAttentionResidual = {}): Promise<MonoidAttentionResult> {
    this.checkInput(x, 'step', 2, '[B, hidden]');
    const stateShape = [x.shape[0]!, this.heads, this.headDim, this.headDim];
    if (!sameShape(state.shape, stateShape)) throw new ShapeError(`${OP}.step: state (${state.name ?? 'tensor'}) is ${formatShape(state.shape)}; expected ${formatShape(stateShape)} ([B, H, Dk, Dk])`);
    const s = new Scratch();
    try {
      // the norms and the decay gate run inside the step's dispatch (its prologue): a decode step is
      // the projections, the step and W_o
      const { q, k, v, z } = await this.projections(x, s, options.norm);
      const w = this.weights;
      const prologue: MonoidStepPrologue = { qNorm: w.qNorm, kNorm: w.kNorm, eps: this.rmsNormEps, qScale: this.headDim ** -0.5, kActivation: 'silu', gate: this.gate, floor: this.floor };
      const next = await monoidStep(state, { q, k, v, logDecay: z }, { prologue });
      return { output: await this.outputProjection(next.output, s, options.residual), state: next.state };
    } finally {
      s.dispose();
    }
  }

  /** h0 broadcast over `sequences`: a new f32 [sequences, H, Dk, Dk] tensor, e.g. to decode with no prompt. */
  async initialState(sequences = 1): Promise<Tensor> {
    if (!Number.isInteger(sequences) || sequences < 1) throw new InputError(`${OP}.initialState: sequences must be a positive integer, got ${sequences}`);
    const zero = zeros([sequences, 1, 1, 1], { backend: this.weights.h0.backend });
    try {
      return await add(zero, this.weights.h0); // broadcasts h0 over the first dim
    } finally {
      zero.dispose();
    }
  }

  /** The decay gate of this revision (spec 1.3.1) and log a's optional floor (spec 1.7). */
  private get gate(): 'logsigmoid' | 'neg-softplus' {
    return this.decay === 'vector-neg-softplus' ? 'neg-softplus' : 'logsigmoid';
  }

  private get floor(): number | undefined {
    return this.clampLogDecay ? LOG_DECAY_FLOOR : undefined;
  }

  /**
   * The four projections of x [...lead, hidden] in one dispatch in decode (ops `linears`), as heads: q, k, v
   * [...lead, H, Dk] and z = W_decay x + b ([...lead, H, Dk], or [...lead, H] for scalar decay), before any norm or gate.
   */
  private async projections(x: Tensor, s: Scratch, norm: InputNorm | undefined) {
    const w = this.weights;
    const lead = x.shape.slice(0, -1);
    const [H, D] = [this.heads, this.headDim];
    const projections = await linears(x, [w.qProj, w.kProj, w.vProj, w.decayProj], [null, null, null, w.decayBias], { norm });
    const [q, k, v, z] = await Promise.all(projections.map((t) => s.keep(t)));
    const heads = (t: Tensor, shape: number[]) => s.keep(t.reshape(shape));
    return {
      q: await heads(q!, [...lead, H, D]),
      k: await heads(k!, [...lead, H, D]),
      v: await heads(v!, [...lead, H, D]),
      z: await heads(z!, this.decay === 'scalar-logsigmoid' ? [...lead, H] : [...lead, H, D]),
    };
  }

  /** q, k, v [...lead, H, Dk] and log a ([...lead, H, Dk], or [...lead, H] for scalar decay) of x [...lead, hidden]. */
  private async project(x: Tensor, s: Scratch, norm: InputNorm | undefined) {
    const w = this.weights;
    const { q: qRaw, k: kRaw, v, z } = await this.projections(x, s, norm);
    // q: normed, then scaled by 1/sqrt(Dk) (spec 1.7: after the norm)
    const q = await this.headNorm(qRaw, w.qNorm, s, { scale: this.headDim ** -0.5 });
    // k: normed, then SiLU
    const k = await this.headNorm(kRaw, w.kNorm, s, { activation: 'silu' });
    // log a in f32 from z, stably (spec 1.3.1, 1.7)
    const logA = await s.keep(logDecay(z, { gate: this.gate, floor: this.floor }));
    return { q, k, v, logDecay: logA };
  }

  /**
   * RMSNorm over each head's Dk values of heads [...lead, H, Dk], with a [Dk] weight or one [Dk] row of an
   * [H*Dk] weight per head, then times `scale` and through `activation`. With a [Dk] weight that is all one
   * rmsNorm dispatch.
   */
  private async headNorm(heads: Tensor, weight: Tensor, s: Scratch, post: { scale?: number; activation?: 'silu' }): Promise<Tensor> {
    const [H, D] = [this.heads, this.headDim];
    const eps = this.rmsNormEps;
    if (weight.shape[0] === D) return s.keep(rmsNorm(heads, weight, { eps, ...post }));
    // the per-head weight is a mul after the norm: the scale commutes with it, so stays in the norm; the activation must follow it
    const normed = await s.keep(rmsNorm(heads, null, { eps, scale: post.scale }));
    const weighted = await s.keep(mul(normed, await s.keep(weight.reshape([H, D]))));
    return post.activation ? s.keep(silu(weighted)) : weighted;
  }

  /** W_o over the heads' outputs o [...lead, H, Dk] -> [...lead, hidden] (o is disposed with the scratch). */
  private async outputProjection(o: Tensor, s: Scratch, residual: Tensor | undefined): Promise<Tensor> {
    await s.keep(o);
    const flat = await s.keep(o.reshape([...o.shape.slice(0, -2), this.heads * this.headDim]));
    return linear(flat, this.weights.oProj, null, { residual });
  }

  private checkInput(x: Tensor, method: string, rank: number, layout: string): void {
    assertFloat(`${OP}.${method}`, x, 'x');
    if (x.rank !== rank || x.shape[rank - 1] !== this.hidden) throw new ShapeError(`${OP}.${method}: x (${x.name ?? 'tensor'}) is ${formatShape(x.shape)}; expected ${layout} with hidden = ${this.hidden}`);
  }
}

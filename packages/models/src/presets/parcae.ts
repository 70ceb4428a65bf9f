/**
 * parcae: the parameter-golf #1728 model (spec parcae-golf.md sections 3 and 4, tensor names in
 * docs/checkpoint-layouts.md). Every RMSNorm is weightless; s_l = 1 / sqrt(l + 1) for physical layer l.
 *
 *   e = rms(embed(ids));  x = x0 = e_t + λ σ(w · e_t[:W]) e_{t-1}       SmearGate, e_{-1} = 0
 *   virtual layers [0..a-1] + [a..b] x (num_loops + 1) + [b+1..L-1]; the first half is the encoder:
 *     re-entering layer a:      x = Ā x + B̄ x0                         Parcae: δ = softplus(loop_delta),
 *                                                                     Ā = exp(-δ exp(loop_log_A)), B̄ = δ loop_B
 *     decoder step k < #skips:  x = lerp(w_k s, x, σ(g_k)), s the encoder outputs popped LIFO
 *     block l:  x_in = m0 x + m1 x0
 *               x = x_in + attn_scale attn(s_l rms(x_in));  x = x + mlp_scale down(xielu_l(up(s_l rms(x))))
 *       attn: q, k rms-normed per head, RoPE (all dims on local layers, rope_dims on global ones), q times
 *             q_gain; causal GQA, windowed on local layers; XSA, AttnOutGate 2 σ(W_g x_in[:W]) per head; o_proj
 *     decoder layers from parallel_start_layer: two lanes, attention reading lane 0 and the MLP lane 1 (3.3b),
 *     averaged at the end
 *   logits = softcap(lm_head(rms(x)))
 *
 * A batch row is one sequence: positions run 0..T-1 and the SmearGate starts it from e_{-1} = 0. With
 * `smear_gate_reset` (the #1851 fix) the gate is also off at every BOS inside a row (`bos_token_id`).
 */
import type { ExpectedTensor, ParcaeConfig } from '@phalanx/checkpoint';
import { ConfigError, Scratch, type Tensor, add, mul, scale, tensor } from '@phalanx/core';
import { attnOutGate, smearGate, xsaOutGate } from '@phalanx/gated-attention';
import { XIELU_GOLF_COEFFICIENTS, type XieluCoefficients, lerp, linear, mix, rmsNorm, rope, ropeFrequencies, xielu } from '@phalanx/ops';
import type { KvCache } from '@phalanx/varlen-attention';
import { KvState, attend, embedTokens, lastPosition, logitsHead } from '../blocks.js';
import { type Network, type NetworkForwardOptions, type PresetDefinition, type TokenIds, type Weights, checkIds, checkState, hostIdRows } from '../network.js';
import { attentionTensors, headWeight } from './llama.js';

/** One virtual layer: the physical layer it runs and what happens to the residual stream around it (3.2). */
export interface Step {
  layer: number;
  /** x = Ā x + B̄ x0 first. */
  parcae: boolean;
  /** Decoder steps below the skip count: the skip weights/gates row mixed in first. */
  skip: number | null;
  /** Encoder steps: the output is pushed for a decoder skip. */
  push: boolean;
  /** Decoder steps from parallel_start_layer (0 turns it off): the two-lane block. */
  parallel: boolean;
}

/**
 * The virtual layers in the order the script's forward_logits runs them. As there, Parcae fires on encoder
 * re-entries into loop_start (loop_count > 1) but on every decoder entry; with the golf settings (and
 * whenever the loop starts in the encoder) that is the re-entries alone. Two lanes, once started, must run
 * to the end without a Parcae step, which the script assumes and does not check.
 */
export function parcaeSchedule(c: ParcaeConfig): { steps: Step[]; skips: number } {
  const { loopStart: a, loopEnd: b, numLoops, numHiddenLayers: L, parallelStartLayer: psl } = c;
  const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
  const layers = [...range(0, a), ...Array.from({ length: numLoops + 1 }, () => range(a, b + 1)).flat(), ...range(b + 1, L)];
  const encoder = Math.floor(layers.length / 2);
  const skips = Math.min(encoder, layers.length - encoder);
  let entries = 0;
  let lanes = false;
  const steps = layers.map((layer, v): Step => {
    const inEncoder = v < encoder;
    if (layer === a) entries++;
    const parcae = numLoops > 0 && layer === a && (entries > 1 || !inEncoder);
    const parallel = !inEncoder && psl > 0 && layer >= psl;
    if (lanes && !(parallel && !parcae)) {
      throw new ConfigError(c.file, 'parallel_start_layer', `${psl}: the loop (layers ${a}..${b}) comes back after the two-lane blocks began; it must end before them`);
    }
    lanes ||= parallel;
    return { layer, parcae, skip: !inEncoder && v - encoder < skips ? v - encoder : null, push: inEncoder, parallel };
  });
  return { steps, skips };
}

function parcaeTensors(c: ParcaeConfig): ExpectedTensor[] {
  const [V, C, H, I, L] = [c.vocabSize, c.hiddenSize, c.numAttentionHeads, c.intermediateSize, c.numHiddenLayers];
  const { skips } = parcaeSchedule(c);
  return [
    { name: 'model.embed_tokens.weight', shape: [V, C] },
    { name: 'model.smear_gate.weight', shape: [c.smearGateWidth] },
    { name: 'model.smear_gate.lambda', shape: [1] },
    ...attentionTensors({ ...c, attentionBias: false }),
    { name: 'model.layers.{l}.self_attn.q_gain', shape: [H] },
    { name: 'model.layers.{l}.self_attn.attn_out_gate.weight', shape: [H, c.attnOutGateWidth] },
    { name: 'model.layers.{l}.mlp.up_proj.weight', shape: [I, C] },
    { name: 'model.layers.{l}.mlp.down_proj.weight', shape: [C, I] },
    { name: 'model.layers.{l}.attn_scale', shape: [C] },
    { name: 'model.layers.{l}.mlp_scale', shape: [C] },
    { name: 'model.layers.{l}.resid_mix', shape: [2, C] },
    { name: 'model.skip_weights', shape: [skips, C] },
    { name: 'model.skip_gates', shape: [skips, C] },
    { name: 'model.parallel_post_lambdas', shape: [L, 2, 2] },
    { name: 'model.parallel_resid_lambdas', shape: [L, 2] },
    { name: 'model.loop_log_A', shape: [C] },
    { name: 'model.loop_delta', shape: [C] },
    { name: 'model.loop_B', shape: [C] },
    // a tied checkpoint may still carry lm_head.weight (a copy): accepted either way
    { name: 'lm_head.weight', shape: [V, C], optional: c.tieWordEmbeddings },
  ];
}

/** What sets physical layers apart (3.4, 3.5): local (windowed, full RoPE) or global attention, XSA, xIELU. */
interface LayerKind {
  /** Keys j in [i - window, i] (flash-attention's inclusive (window, 0)); undefined on global layers. */
  window: number | undefined;
  rotaryDim: number;
  /** RoPE's inverse frequencies, negated: the script turns (x1, x2) into (x1 cos + x2 sin, x2 cos - x1 sin), by -θ. */
  invFreq: Float64Array;
  xsa: boolean;
  xielu: XieluCoefficients;
  lnScale: number;
}

function layerKinds(c: ParcaeConfig): LayerKind[] {
  const L = c.numHiddenLayers;
  // the config leaves the coefficients undefined only for the golf table's 11 layers
  const coefficients = c.xieluCoefficients ?? XIELU_GOLF_COEFFICIENTS;
  return Array.from({ length: L }, (_, l) => {
    const global = c.globalAttnLayers.includes(l);
    const rotaryDim = global ? c.ropeDims : c.headDim;
    return {
      window: global ? undefined : l < c.localWindowSplitLayer ? c.localWindowSizeEarly : c.localWindowSizeLate,
      rotaryDim,
      invFreq: ropeFrequencies({ dim: rotaryDim, theta: c.rope.theta, scaling: c.rope.scaling }).map((f) => -f),
      xsa: l >= L - c.xsaLastN,
      xielu: coefficients[l]!,
      lnScale: 1 / Math.sqrt(l + 1),
    };
  });
}

/**
 * The small parameters in the form the forward uses, derived once on the host: sigmoid, softplus and exp of
 * per-channel vectors have no kernels, and rows of [2, C] or [L, 2, 2] tensors are read apart.
 */
interface Controls {
  /** resid_mix [m0, m1] per physical layer. */
  residMix: [Tensor, Tensor][];
  /** Per skip k, [(1 - γ) w, γ] with γ = σ(skip_gates[k]): lerp(w s, x, γ) = mix(s, x, ...). */
  skips: [Tensor, Tensor][];
  /** [Ā, B̄]. */
  parcae: [Tensor, Tensor];
  /** Per two-lane layer: lane j <- resid[j] lane_j + attn[j] a + mlp[j] f, attn[j] = P[0, j] attn_scale, mlp[j] = P[1, j] mlp_scale. */
  lanes: Map<number, { resid: [number, number]; attn: [Tensor, Tensor]; mlp: [Tensor, Tensor] }>;
  /** Every tensor above, for dispose. */
  made: Tensor[];
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));
/** torch's softplus (linear above 20). */
const softplus = (v: number) => (v > 20 ? v : Math.log1p(Math.exp(v)));

async function deriveControls(c: ParcaeConfig, w: Weights, steps: readonly Step[]): Promise<Controls> {
  const C = c.hiddenSize;
  const made: Tensor[] = [];
  const vector = (values: ArrayLike<number>): Tensor => {
    const t = tensor(values, [C], { backend: w.backend });
    made.push(t);
    return t;
  };
  const pair = (f: (j: number) => ArrayLike<number>): [Tensor, Tensor] => [vector(f(0)), vector(f(1))];
  const read = async (name: string) => Float64Array.from(await w.get(name).data());
  const rows = (values: Float64Array) => Array.from({ length: values.length / C }, (_, r) => values.subarray(r * C, (r + 1) * C));
  try {
    const residMix: [Tensor, Tensor][] = [];
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const m = rows(await read(`model.layers.${l}.resid_mix`));
      residMix.push(pair((j) => m[j]!));
    }
    const gates = rows(await read('model.skip_gates')).map((g) => g.map(sigmoid));
    const skips = rows(await read('model.skip_weights')).map((wk, k) => pair((j) => (j === 0 ? wk.map((v, i) => (1 - gates[k]![i]!) * v) : gates[k]!)));
    const [logA, B] = [await read('model.loop_log_A'), await read('model.loop_B')];
    const delta = (await read('model.loop_delta')).map(softplus);
    const parcae = pair((j) => delta.map((d, i) => (j === 0 ? Math.exp(-d * Math.exp(logA[i]!)) : d * B[i]!)));
    const [post, resid] = [await read('model.parallel_post_lambdas'), await read('model.parallel_resid_lambdas')];
    const lanes: Controls['lanes'] = new Map();
    for (const l of new Set(steps.filter((s) => s.parallel).map((s) => s.layer))) {
      const [attnScale, mlpScale] = [await read(`model.layers.${l}.attn_scale`), await read(`model.layers.${l}.mlp_scale`)];
      const P = (from: number, j: number) => post[l * 4 + from * 2 + j]!;
      lanes.set(l, {
        resid: [resid[l * 2]!, resid[l * 2 + 1]!],
        attn: pair((j) => attnScale.map((v) => P(0, j) * v)),
        mlp: pair((j) => mlpScale.map((v) => P(1, j) * v)),
      });
    }
    return { residMix, skips, parcae, lanes, made };
  } catch (e) {
    made.forEach((t) => t.dispose());
    throw e;
  }
}

/**
 * The decode state: one KV cache per virtual layer (a looped layer sees another input on each pass), windowed
 * like its physical layer, and each row's last token id: the SmearGate's e_{t-1} = rms(embed(id_{t-1})).
 */
export class ParcaeState extends KvState {
  lastIds: number[] = [];
}

/** A second handle on t's storage, which outlives the scratch that disposes the first. */
const retain = (t: Tensor) => t.reshape(t.shape);

class ParcaeNetwork implements Network {
  private readonly steps: Step[];
  private readonly kinds: LayerKind[];
  private readonly resetId: number | null;
  /** Derived on the first forward (reading tensors back is asynchronous; build is not). */
  private controls: Promise<Controls> | null = null;

  constructor(
    readonly config: ParcaeConfig,
    private readonly w: Weights,
  ) {
    this.steps = parcaeSchedule(config).steps;
    this.kinds = layerKinds(config);
    this.resetId = config.smearGateReset ? config.bosTokenId : null;
  }

  get backend() {
    return this.w.backend;
  }

  get weights(): Weights {
    return this.w;
  }

  createState(batch: number, capacity: number): ParcaeState {
    const { numKeyValueHeads: heads, headDim: dim } = this.config;
    return new ParcaeState(batch, this.steps.map((s) => ({ heads, dim, window: this.kinds[s.layer]!.window })), capacity, this.backend);
  }

  async forward(tokenIds: TokenIds, options: NetworkForwardOptions = {}): Promise<Tensor> {
    const c = this.config;
    checkIds(tokenIds, c.vocabSize, 'inputIds', this.backend);
    // the SmearGate restarts at BOS, so the ids are needed on the host: ids on the device are read back (and checked)
    const ids = await hostIdRows(tokenIds);
    const [B, T] = checkIds(ids, c.vocabSize);
    const state = options.state && checkState(options.state, ParcaeState, B, T, 'one token');
    const position = state?.position ?? 0;
    const k = await (this.controls ??= deriveControls(c, this.w, this.steps));
    const x0 = await this.embed(ids, state);
    // the residual stream: one tensor, or the two lanes from the first two-lane block on
    let stream = [retain(x0)];
    const skips: Tensor[] = [];
    try {
      for (const [v, step] of this.steps.entries()) {
        const s = new Scratch();
        try {
          for (const t of stream) await s.keep(t);
          stream = await this.step(step, stream, x0, skips, state?.caches[v] ?? null, position, k, s);
        } finally {
          s.dispose();
        }
      }
      if (stream.length === 2) {
        const lanes = stream;
        stream = [await lerp(lanes[0]!, lanes[1]!, 0.5)];
        lanes.forEach((t) => t.dispose());
      }
      if (state) {
        state.position += T;
        state.lastIds = ids.map((row) => row[T - 1]!);
      }
      return await logitsHead(stream[0]!, { norm: null, eps: c.rmsNormEps, head: headWeight(this.w), softcap: c.logitSoftcap, lastOnly: options.lastOnly });
    } finally {
      for (const t of [x0, ...stream, ...skips]) t.dispose();
    }
  }

  /** x0: the SmearGate over rms(embed(ids)). A continued row (one new token) puts its last token before it as e_{t-1}. */
  private async embed(ids: number[][], state: ParcaeState | undefined): Promise<Tensor> {
    const w = this.w;
    const continued = state !== undefined && state.position > 0;
    const rows = continued ? ids.map((row, b) => [state.lastIds[b]!, ...row]) : ids;
    const [B, T, C] = [rows.length, rows[0]!.length, this.config.hiddenSize];
    // the rows run as one flat sequence that restarts at each row start, and at each BOS with smear_gate_reset
    const resetAt = rows.flatMap((row, b) => row.flatMap((id, t) => (t === 0 || id === this.resetId ? [b * T + t] : [])));
    const s = new Scratch();
    try {
      const e = await s.keep(rmsNorm(await s.keep(embedTokens(w.get('model.embed_tokens.weight'), rows)), null, { eps: this.config.rmsNormEps }));
      const flat = await s.keep(smearGate(await s.keep(e.reshape([B * T, C])), w.get('model.smear_gate.weight'), w.get('model.smear_gate.lambda'), { resetAt }));
      const x = await s.keep(flat.reshape([B, T, C]));
      return continued ? await lastPosition(x) : retain(x);
    } finally {
      s.dispose();
    }
  }

  /** One virtual layer on the stream; returns the new stream as handles that outlive `s`. */
  private async step(step: Step, stream: Tensor[], x0: Tensor, skips: Tensor[], cache: KvCache | null, position: number, k: Controls, s: Scratch): Promise<Tensor[]> {
    let x = stream[0]!;
    if (step.parcae) x = await s.keep(mix(x, x0, ...k.parcae));
    // the first two-lane block starts both lanes from x; the skip goes to lane 0 only
    const lane1 = stream[1] ?? x;
    if (step.skip !== null) x = await s.keep(mix(await s.keep(skips.pop()!), x, ...k.skips[step.skip]!));
    if (step.parallel) return this.parallelBlock(step.layer, x, lane1, x0, cache, position, k, s);
    const out = await s.keep(this.block(step.layer, x, x0, cache, position, k, s));
    if (step.push) skips.push(retain(out));
    return [retain(out)];
  }

  /** Sequential block l (3.3a). */
  private async block(l: number, x: Tensor, x0: Tensor, cache: KvCache | null, position: number, k: Controls, s: Scratch): Promise<Tensor> {
    const xIn = await s.keep(mix(x, x0, ...k.residMix[l]!));
    const a = await s.keep(this.attention(l, xIn, cache, position, s));
    const mid = await s.keep(add(xIn, await s.keep(mul(a, this.w.layer(l, 'attn_scale')))));
    const f = await s.keep(this.mlp(l, mid, s));
    return add(mid, await s.keep(mul(f, this.w.layer(l, 'mlp_scale'))));
  }

  /** Two-lane block l (3.3b): attention reads lane 0, the MLP lane 1, and both lanes take both outputs. */
  private async parallelBlock(l: number, lane0: Tensor, lane1: Tensor, x0: Tensor, cache: KvCache | null, position: number, k: Controls, s: Scratch): Promise<Tensor[]> {
    const residMix = k.residMix[l]!;
    const { resid, attn, mlp } = k.lanes.get(l)!;
    const a = await s.keep(this.attention(l, await s.keep(mix(lane0, x0, ...residMix)), cache, position, s));
    const f = await s.keep(this.mlp(l, await s.keep(mix(lane1, x0, ...residMix)), s));
    const next: Tensor[] = [];
    for (const [j, lane] of [lane0, lane1].entries()) {
      const both = await s.keep(mix(a, f, attn[j]!, mlp[j]!));
      next.push(await s.keep(add(await s.keep(scale(lane, resid[j]!)), both)));
    }
    return next.map(retain);
  }

  /** s_l rms(x). */
  private async normed(l: number, x: Tensor, s: Scratch): Promise<Tensor> {
    return s.keep(rmsNorm(x, null, { eps: this.config.rmsNormEps, scale: this.kinds[l]!.lnScale }));
  }

  /** Attention of layer l on the block input xIn (3.4), out-projected, before attn_scale. */
  private async attention(l: number, xIn: Tensor, cache: KvCache | null, position: number, s: Scratch): Promise<Tensor> {
    const [c, w, kind] = [this.config, this.w, this.kinds[l]!];
    const [B, T] = xIn.shape as [number, number];
    const [H, Hkv, D, eps] = [c.numAttentionHeads, c.numKeyValueHeads, c.headDim, c.rmsNormEps];
    const h = await this.normed(l, xIn, s);
    const project = async (name: string, heads: number) => s.keep((await s.keep(linear(h, w.layerMatrix(l, `self_attn.${name}.weight`)))).reshape([B, T, heads, D]));
    const rotary = { offset: position, rotaryDim: kind.rotaryDim, invFreq: kind.invFreq };
    // QK-norm over head_dim before RoPE; v stays as projected
    const q = await s.keep(rope(await s.keep(rmsNorm(await project('q_proj', H), null, { eps })), rotary));
    const kk = await s.keep(rope(await s.keep(rmsNorm(await project('k_proj', Hkv), null, { eps })), rotary));
    const v = await project('v_proj', Hkv);
    const y = await s.keep(attend(q, kk, v, cache, { qGain: w.layer(l, 'self_attn.q_gain'), window: kind.window }));
    const gate = w.layer(l, 'self_attn.attn_out_gate.weight');
    const gated = await s.keep(kind.xsa ? xsaOutGate(y, v, xIn, gate) : attnOutGate(y, xIn, gate));
    return linear(await s.keep(gated.reshape([B, T, H * D])), w.layerMatrix(l, 'self_attn.o_proj.weight'));
  }

  /** down(xielu_l(up(s_l rms(x)))), before mlp_scale. */
  private async mlp(l: number, x: Tensor, s: Scratch): Promise<Tensor> {
    const up = await s.keep(linear(await this.normed(l, x, s), this.w.layerMatrix(l, 'mlp.up_proj.weight')));
    return linear(await s.keep(xielu(up, this.kinds[l]!.xielu)), this.w.layerMatrix(l, 'mlp.down_proj.weight'));
  }

  dispose(): void {
    void this.controls?.then(
      (k) => k.made.forEach((t) => t.dispose()),
      () => undefined, // a failed derivation made nothing that lives on
    );
    this.w.dispose();
  }
}

export const parcae: PresetDefinition<ParcaeConfig> = {
  name: 'parcae',
  tensors: parcaeTensors,
  build: (c, w) => new ParcaeNetwork(c, w),
  // global layers cache the whole context
  maxContext: (c) => c.maxPositionEmbeddings,
};

/**
 * spartacus: Spartacus (model_type "monoid", spec spartacus-nanohammer.md section 1): the Llama layout with the
 * attention replaced by MonoidAttention, a gated linear attention whose state is one Dk x Dk matrix per head.
 * No positions, so no context limit, and a decode state that does not grow with the context.
 *
 *   x = embed(ids)
 *   for each layer:  x = x + o_proj(monoid(h)),          h = input_layernorm(x)   (S_t = diag(a_t) S_{t-1} + k_t v_t^T from h0)
 *                    x = x + down(silu(gate h) * up h),  h = post_attention_layernorm(x)
 *   logits = embed^T(norm(x))   (tied by default)
 */
import type { ExpectedTensor, SpartacusConfig } from '@phalanx/checkpoint';
import { ConfigError, Scratch, type Tensor } from '@phalanx/core';
import { type DecayVariant, MonoidAttention, type MonoidAttentionResult, type MonoidScanOptions, detectDecayVariant } from '@phalanx/monoid-scan';
import type { InputNorm } from '@phalanx/ops';
import { embedTokens, logitsHead } from '../blocks.js';
import { type DecodeState, type Network, type NetworkForwardOptions, type PresetDefinition, type TokenIds, type Weights, checkIds, checkState } from '../network.js';
import { headWeight, llamaBodyTensors, llamaMlp } from './llama.js';

/** MonoidAttention's tensors of one layer (docs/checkpoint-layouts.md); decay_proj's shape follows decay_variant, either when it is absent. */
export function monoidAttentionTensors(c: SpartacusConfig): ExpectedTensor[] {
  const [H, D, hidden] = [c.numAttentionHeads, c.headDim, c.hiddenSize];
  if (c.attentionBias) throw new ConfigError(c.file, 'attention_bias', 'true is not supported (monoid attention has no projection biases)');
  const decayOut = c.decayVariant === undefined ? [H * D, H] : c.decayVariant === 'scalar-logsigmoid' ? [H] : [H * D];
  return [
    { name: 'model.layers.{l}.self_attn.q_proj.weight', shape: [H * D, hidden] },
    { name: 'model.layers.{l}.self_attn.k_proj.weight', shape: [H * D, hidden] },
    { name: 'model.layers.{l}.self_attn.v_proj.weight', shape: [H * D, hidden] },
    { name: 'model.layers.{l}.self_attn.o_proj.weight', shape: [hidden, H * D] },
    { name: 'model.layers.{l}.self_attn.decay_proj.weight', shape: decayOut.map((n) => [n, hidden]) },
    { name: 'model.layers.{l}.self_attn.decay_proj.bias', shape: decayOut.map((n) => [n]) },
    // one norm weight shared by the heads, or one row per head (unverified, spec 1.11)
    { name: 'model.layers.{l}.self_attn.q_norm.weight', shape: [[D], [H * D]] },
    { name: 'model.layers.{l}.self_attn.k_norm.weight', shape: [[D], [H * D]] },
    { name: 'model.layers.{l}.self_attn.h0', shape: [1, H, D, D] },
  ];
}

/** The scan's form for every forward (see monoidScan); packing (cuSeqlens) is the network's business. */
export type SpartacusScanOptions = Pick<MonoidScanOptions, 'mode' | 'chunkSize' | 'subChunkSize'>;

/**
 * One monoid state [B, H, D, D] per layer, plus the position: constant in the context length. A fresh state
 * holds nothing: its first forward starts every layer from h0.
 */
export class MonoidState implements DecodeState {
  position = 0;
  /** Per layer, f32 [B, H, D, D] after the last token consumed; empty until the first forward. */
  layers: Tensor[] = [];

  constructor(readonly batch: number) {}

  get bytes(): number {
    return this.layers.reduce((n, t) => n + t.size * 4, 0);
  }

  dispose(): void {
    for (const t of this.layers.splice(0)) t.dispose();
  }
}

export class SpartacusNetwork implements Network {
  private attention: Promise<MonoidAttention[]> | null;

  constructor(
    readonly config: SpartacusConfig,
    private readonly w: Weights,
    private readonly scan: SpartacusScanOptions = {},
  ) {
    // with the variant known, the layers are built (and their shapes checked) now; detection waits for the first forward
    this.attention = config.decayVariant ? Promise.resolve(this.layers(config.decayVariant)) : null;
  }

  get backend() {
    return this.w.backend;
  }

  get weights(): Weights {
    return this.w;
  }

  createState(batch: number): MonoidState {
    return new MonoidState(batch);
  }

  async forward(ids: TokenIds, options: NetworkForwardOptions = {}): Promise<Tensor> {
    const c = this.config;
    const w = this.w;
    const [B, T] = checkIds(ids, c.vocabSize, 'inputIds', this.backend);
    // the scan continues from any state with any T: no one-token rule as for a KV cache
    const state = options.state && checkState(options.state, MonoidState, B, T, 'any');
    const attention = await this.attentions();
    const eps = c.rmsNormEps;
    const next: Tensor[] = [];
    try {
      let x = await embedTokens(w.get('model.embed_tokens.weight'), ids);
      for (let l = 0; l < c.numHiddenLayers; l++) {
        const s = new Scratch();
        try {
          await s.keep(x);
          const norm = { weight: w.layer(l, 'input_layernorm.weight'), eps };
          const held = state?.layers[l];
          // one token onto a held state is the O(1) decode step (spec 1.6), whatever form the scan options give prefills;
          // the output is x + attention(input_layernorm(x)): the norm applied by the projections, the residual added in the output projection
          const { output, state: after } = held && T === 1 ? await decodeStep(attention[l]!, held, x, norm, s) : await attention[l]!.forward(x, { ...this.scan, initialState: held, residual: x, norm });
          next.push(after);
          x = await llamaMlp(w, l, eps, await s.keep(output));
        } finally {
          s.dispose();
        }
      }
      let logits: Tensor;
      try {
        logits = await logitsHead(x, { norm: w.get('model.norm.weight'), eps, head: headWeight(w), lastOnly: options.lastOnly });
      } finally {
        x.dispose();
      }
      // the state advances only once every layer has: a failed forward leaves it as it was
      if (state) {
        for (const t of state.layers) t.dispose();
        state.layers = next.splice(0);
        state.position += T;
      }
      return logits;
    } finally {
      for (const t of next) t.dispose();
    }
  }

  dispose(): void {
    this.w.dispose();
  }

  /** Detects the decay variant now when config.json does not name it, so loadModel reports a bad checkpoint. */
  async ready(): Promise<void> {
    await this.attentions();
  }

  /** The layers' attention, detecting the decay variant on first use when config.json does not name it (detection reads decay_proj.bias back: async, and build is not). */
  private attentions(): Promise<MonoidAttention[]> {
    this.attention ??= this.detectDecay().then((decay) => this.layers(decay));
    return this.attention;
  }

  /** Spec 1.3.1's rule on every layer's decay_proj; layers that disagree leave the variant to config.json. */
  private async detectDecay(): Promise<DecayVariant> {
    const c = this.config;
    const dims = { heads: c.numAttentionHeads, headDim: c.headDim };
    const found = await Promise.all(
      Array.from({ length: c.numHiddenLayers }, (_, l) => detectDecayVariant(this.w.layer(l, 'self_attn.decay_proj.weight'), this.w.layer(l, 'self_attn.decay_proj.bias'), dims)),
    );
    const other = found.findIndex((d) => d !== found[0]);
    if (other >= 0) throw new ConfigError(c.file, 'decay_variant', `absent, and decay_proj reads as '${found[0]}' in layer 0 but '${found[other]}' in layer ${other}; set it`);
    return found[0]!;
  }

  private layers(decay: DecayVariant): MonoidAttention[] {
    const c = this.config;
    const t = (l: number, name: string) => this.w.layer(l, `self_attn.${name}`);
    const m = (l: number, name: string) => this.w.layerMatrix(l, `self_attn.${name}`);
    return Array.from(
      { length: c.numHiddenLayers },
      (_, l) =>
        new MonoidAttention(
          {
            qProj: m(l, 'q_proj.weight'), kProj: m(l, 'k_proj.weight'), vProj: m(l, 'v_proj.weight'), oProj: m(l, 'o_proj.weight'),
            decayProj: t(l, 'decay_proj.weight'), decayBias: t(l, 'decay_proj.bias'), qNorm: t(l, 'q_norm.weight'), kNorm: t(l, 'k_norm.weight'), h0: t(l, 'h0'),
          },
          { heads: c.numAttentionHeads, headDim: c.headDim, decay, rmsNormEps: c.rmsNormEps },
        ),
    );
  }
}

/** MonoidAttention.step on x [B, 1, hidden] (normed by `norm`) -> x + output [B, 1, hidden] and the next state. */
async function decodeStep(attention: MonoidAttention, held: Tensor, x: Tensor, norm: InputNorm, s: Scratch): Promise<MonoidAttentionResult> {
  const [B, , C] = x.shape as [number, number, number];
  const flat = await s.keep(x.reshape([B, C]));
  const { output, state } = await attention.step(held, flat, { residual: flat, norm });
  await s.keep(output);
  return { output: output.reshape([B, 1, C]), state };
}

export const spartacus: PresetDefinition<SpartacusConfig> = {
  name: 'spartacus',
  tensors: (c) => [...llamaBodyTensors(c), ...monoidAttentionTensors(c)],
  build: (c, w) => new SpartacusNetwork(c, w),
  maxContext: () => Infinity,
};

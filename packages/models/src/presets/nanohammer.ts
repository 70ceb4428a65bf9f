/**
 * nanohammer: NanoHammer (spec section 2, a derived spec; docs/checkpoint-layouts.md): Llama plus a state
 * stream per layer. Every word token t gets a state token e_t, a fixed-size summary of its prefix; word query
 * t attends to the words s <= t and to its own state token only (mask variant A), so decoding keeps the
 * words' KV cache plus one [stateDim] vector per layer.
 *
 *   x = embed(ids)
 *   for each layer:  h = input_layernorm(x)
 *                    c_t = e^{-i omega} c_{t-1} + token_to_state(h_t),  c_{-1} = 0      (holographic integral)
 *                    e = state_projection(state_cell(c))
 *                    x = x + o_proj(attention(rope(q_proj h) over rope(k_proj h), v_proj h; query t also over rope(k_proj e_t), v_proj e_t))
 *                    x = x + down(silu(gate h) * up h),  h = post_attention_layernorm(x)
 *   logits = lm_head(norm(x))
 */
import type { ExpectedTensor, NanoHammerConfig } from '@phalanx/checkpoint';
import { type Backend, Scratch, type Tensor, zeros } from '@phalanx/core';
import { holographicIntegral } from '@phalanx/holographic-rope';
import { linear, rmsNorm } from '@phalanx/ops';
import { type StateCellParams, stateCell } from '@phalanx/state-cell';
import { KvState, attend, embedTokens, logitsHead } from '../blocks.js';
import { type DecodeState, type Network, type NetworkForwardOptions, type PresetDefinition, type TokenIds, type Weights, checkIds, checkState } from '../network.js';
import { attentionTensors, headWeight, llamaBodyTensors, llamaKv, llamaMlp, llamaQkv, llamaRotary } from './llama.js';

/** The state stream's tensors of a layer. */
function stateTensors(c: NanoHammerConfig): ExpectedTensor[] {
  const [Ds, hidden, d, width] = [c.stateDim, c.hiddenSize, c.stateDim / c.numStateHeads, c.stateCellHiddenSize];
  const cell = 'model.layers.{l}.state_cell.';
  // an RMSNorm has no bias
  const norm = (name: string, size: number): ExpectedTensor[] => [
    { name: `${cell}${name}.weight`, shape: [size] },
    ...(c.stateCellNorm === 'layer' ? [{ name: `${cell}${name}.bias`, shape: [size] }] : []),
  ];
  return [
    { name: 'model.layers.{l}.token_to_state.weight', shape: [Ds, hidden] },
    { name: 'model.layers.{l}.token_to_state.bias', shape: [Ds], optional: true },
    { name: 'model.layers.{l}.state_projection.weight', shape: [hidden, Ds] },
    { name: 'model.layers.{l}.state_projection.bias', shape: [hidden], optional: true },
    { name: `${cell}step_size`, shape: [c.numStateHeads] },
    ...norm('pre_norm', d),
    { name: `${cell}mlp.fc1.weight`, shape: [width, d] },
    { name: `${cell}mlp.fc1.bias`, shape: [width] },
    { name: `${cell}mlp.fc2.weight`, shape: [d, width] },
    { name: `${cell}mlp.fc2.bias`, shape: [d] },
    ...norm('post_norm', Ds),
  ];
}

/** Layer l's state-cell parameters (their shapes were checked against the config when the checkpoint was matched). */
function cellParams(w: Weights, l: number): StateCellParams {
  const name = (suffix: string) => `model.layers.${l}.state_cell.${suffix}`;
  return {
    stepSize: w.get(name('step_size')),
    preNorm: { weight: w.get(name('pre_norm.weight')), bias: w.optional(name('pre_norm.bias')) },
    fc1: { weight: w.get(name('mlp.fc1.weight')), bias: w.get(name('mlp.fc1.bias')) },
    fc2: { weight: w.get(name('mlp.fc2.weight')), bias: w.get(name('mlp.fc2.bias')) },
    postNorm: { weight: w.get(name('post_norm.weight')), bias: w.optional(name('post_norm.bias')) },
  };
}

/** The words' KV caches, plus each layer's holographic state c [B, stateDim], whose size does not grow with the context. */
class NanoHammerState implements DecodeState {
  position = 0;
  readonly kv: KvState;
  /** c after the last token consumed, per layer; zeros before the first (c_{-1} = 0). */
  readonly holographic: Tensor[];

  constructor(
    readonly batch: number,
    c: NanoHammerConfig,
    capacity: number,
    backend: Backend,
  ) {
    const L = c.numHiddenLayers;
    this.kv = new KvState(batch, Array.from({ length: L }, () => ({ heads: c.numKeyValueHeads, dim: c.headDim })), capacity, backend);
    this.holographic = Array.from({ length: L }, (_, l) => zeros([batch, c.stateDim], { backend, name: `holographic state ${l}` }));
  }

  get bytes(): number {
    return this.kv.bytes + this.holographic.reduce((n, t) => n + t.size * 4, 0);
  }

  dispose(): void {
    this.kv.dispose();
    for (const t of this.holographic) t.dispose();
  }
}

class NanoHammerNetwork implements Network {
  /** Gathered once, so a malformed cell fails at load rather than at the first forward. */
  private readonly cells: StateCellParams[];

  constructor(
    readonly config: NanoHammerConfig,
    private readonly w: Weights,
  ) {
    this.cells = Array.from({ length: config.numHiddenLayers }, (_, l) => cellParams(w, l));
  }

  get backend() {
    return this.w.backend;
  }

  get weights(): Weights {
    return this.w;
  }

  createState(batch: number, capacity: number): NanoHammerState {
    return new NanoHammerState(batch, this.config, capacity, this.backend);
  }

  async forward(ids: TokenIds, options: NetworkForwardOptions = {}): Promise<Tensor> {
    const c = this.config;
    const w = this.w;
    const [B, T] = checkIds(ids, c.vocabSize, 'inputIds', this.backend);
    const state = options.state && checkState(options.state, NanoHammerState, B, T, 'one token');
    const position = state?.position ?? 0;
    const eps = c.rmsNormEps;
    const [H, D] = [c.numAttentionHeads, c.headDim];
    const rotary = llamaRotary(c, position, T);
    let x = await embedTokens(w.get('model.embed_tokens.weight'), ids);
    try {
      for (let l = 0; l < c.numHiddenLayers; l++) {
        const s = new Scratch();
        try {
          await s.keep(x);
          const h = await s.keep(rmsNorm(x, w.layer(l, 'input_layernorm.weight'), { eps }));
          const e = await this.stateTokens(l, h, position, state, s);
          const { q, k, v } = await llamaQkv(w, l, c, h, rotary, s);
          // the state token sits at its word's position: the same k/v projections and RoPE
          const stateKv = await llamaKv(w, l, c, e, rotary, s);
          const y = await s.keep(attend(q, k, v, state?.kv.caches[l] ?? null, { stateKv }));
          // x + o_proj(y), the residual added in the projection's epilogue in decode
          const afterAttention = await s.keep(linear(await s.keep(y.reshape([B, T, H * D])), w.layerMatrix(l, 'self_attn.o_proj.weight'), w.optional(`model.layers.${l}.self_attn.o_proj.bias`), { residual: x }));
          x = await llamaMlp(w, l, eps, afterAttention);
        } finally {
          s.dispose();
        }
      }
      if (state) state.position += T;
      return await logitsHead(x, { norm: w.get('model.norm.weight'), eps, head: headWeight(w), lastOnly: options.lastOnly });
    } finally {
      x.dispose();
      rotary.table.dispose();
    }
  }

  /** Layer l's state tokens e [B, T, hidden] from its normed input h; a state's c moves on past these tokens. */
  private async stateTokens(l: number, h: Tensor, position: number, state: NanoHammerState | undefined, s: Scratch): Promise<Tensor> {
    const c = this.config;
    const w = this.w;
    const u = await s.keep(linear(h, w.layer(l, 'token_to_state.weight'), w.optional(`model.layers.${l}.token_to_state.bias`)));
    const { output, finalState } = await holographicIntegral(u, {
      pairing: c.holographicPairing,
      width: c.holographicWidth,
      base: c.holographicBase,
      normalize: c.holographicNormalize,
      offset: position,
      initialState: state?.holographic[l],
    });
    await s.keep(output);
    if (state) {
      state.holographic[l]!.dispose();
      state.holographic[l] = finalState;
    } else {
      finalState.dispose();
    }
    const S = await s.keep(
      stateCell(output, this.cells[l]!, {
        heads: c.numStateHeads,
        steps: c.stateCellSteps,
        norm: c.stateCellNorm,
        activation: c.stateCellActivation,
        eps: c.stateCellEps,
        preNormOver: 'head',
        postNormOver: 'state',
      }),
    );
    return s.keep(linear(S, w.layer(l, 'state_projection.weight'), w.optional(`model.layers.${l}.state_projection.bias`)));
  }

  dispose(): void {
    this.w.dispose();
  }
}

export const nanohammer: PresetDefinition<NanoHammerConfig> = {
  name: 'nanohammer',
  tensors: (c) => [...llamaBodyTensors(c), ...attentionTensors(c), ...stateTensors(c)],
  build: (c, w) => new NanoHammerNetwork(c, w),
  maxContext: (c) => c.maxPositionEmbeddings,
};

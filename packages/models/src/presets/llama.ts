/**
 * llama: Llama 3.x as transformers' LlamaForCausalLM (GQA, RoPE with llama3 scaling, SwiGLU, RMSNorm).
 * The baseline the constant-state presets are compared with, and NanoHammer's base.
 *
 *   x = embed(ids)
 *   for each layer:  x = x + o_proj(attention(rope(q_proj h), rope(k_proj h), v_proj h)),  h = input_layernorm(x)
 *                    x = x + down(silu(gate h) * up h),                                      h = post_attention_layernorm(x)
 *   logits = lm_head(norm(x))
 */
import type { ExpectedTensor, LlamaConfig } from '@phalanx/checkpoint';
import { ConfigError, Scratch, type Tensor } from '@phalanx/core';
import { type InputNorm, type LinearWeight, type RopeOptions, type RopeTable, linear, linears, rope, ropeTable } from '@phalanx/ops';
import { KvState, attend, embedTokens, logitsHead, swigluMlp } from '../blocks.js';
import { type Network, type NetworkForwardOptions, type PresetDefinition, type TokenIds, type Weights, checkIds, checkState } from '../network.js';

/** The attention's q/k/v/o projections and biases of one layer (shared with nanohammer). */
export function attentionTensors(c: LlamaConfig | { hiddenSize: number; numAttentionHeads: number; numKeyValueHeads: number; headDim: number; attentionBias: boolean }): ExpectedTensor[] {
  const [H, Hkv, D, hidden] = [c.numAttentionHeads, c.numKeyValueHeads, c.headDim, c.hiddenSize];
  const out: ExpectedTensor[] = [
    { name: 'model.layers.{l}.self_attn.q_proj.weight', shape: [H * D, hidden] },
    { name: 'model.layers.{l}.self_attn.k_proj.weight', shape: [Hkv * D, hidden] },
    { name: 'model.layers.{l}.self_attn.v_proj.weight', shape: [Hkv * D, hidden] },
    { name: 'model.layers.{l}.self_attn.o_proj.weight', shape: [hidden, H * D] },
  ];
  if (c.attentionBias) {
    out.push(
      { name: 'model.layers.{l}.self_attn.q_proj.bias', shape: [H * D] },
      { name: 'model.layers.{l}.self_attn.k_proj.bias', shape: [Hkv * D] },
      { name: 'model.layers.{l}.self_attn.v_proj.bias', shape: [Hkv * D] },
      { name: 'model.layers.{l}.self_attn.o_proj.bias', shape: [hidden] },
    );
  }
  return out;
}

/** Embedding, norms, SwiGLU MLP and head of the Llama layout (every llama-like preset has them). */
export function llamaBodyTensors(c: { file: string; vocabSize: number; hiddenSize: number; intermediateSize: number; tieWordEmbeddings: boolean; mlpBias: boolean }): ExpectedTensor[] {
  const [V, hidden, I] = [c.vocabSize, c.hiddenSize, c.intermediateSize];
  const out: ExpectedTensor[] = [
    { name: 'model.embed_tokens.weight', shape: [V, hidden] },
    { name: 'model.layers.{l}.input_layernorm.weight', shape: [hidden] },
    { name: 'model.layers.{l}.post_attention_layernorm.weight', shape: [hidden] },
    { name: 'model.layers.{l}.mlp.gate_proj.weight', shape: [I, hidden] },
    { name: 'model.layers.{l}.mlp.up_proj.weight', shape: [I, hidden] },
    { name: 'model.layers.{l}.mlp.down_proj.weight', shape: [hidden, I] },
    { name: 'model.norm.weight', shape: [hidden] },
  ];
  if (c.mlpBias) throw new ConfigError(c.file, 'mlp_bias', 'true is not supported (no MLP biases in these presets)');
  // a tied checkpoint may still carry lm_head.weight (a copy): accepted either way
  out.push({ name: 'lm_head.weight', shape: [V, hidden], optional: c.tieWordEmbeddings });
  return out;
}

/** The attention geometry the q/k/v helpers read (nanohammer's config has it too). */
type AttentionConfig = Pick<LlamaConfig, 'numAttentionHeads' | 'numKeyValueHeads' | 'headDim' | 'rope'>;

/**
 * Attention projections of x [B, T, hidden] (each with its bias when the checkpoint has one), as [B, T, heads, D]
 * each: `projections` lists their names and head counts. One ops `linears` call: a single dispatch in decode.
 */
async function projectHeads(w: Weights, l: number, projections: [name: string, heads: number][], x: Tensor, D: number, s: Scratch, norm?: InputNorm): Promise<Tensor[]> {
  const [B, T] = x.shape as [number, number];
  const weights = projections.map(([name]) => w.layerMatrix(l, `self_attn.${name}.weight`));
  const biases = projections.map(([name]) => w.optional(`model.layers.${l}.self_attn.${name}.bias`));
  const flat = await Promise.all((await linears(x, weights, biases, { norm })).map((t) => s.keep(t)));
  return Promise.all(flat.map((t, i) => s.keep(t.reshape([B, T, projections[i]![1], D]))));
}

/**
 * RoPE for tokens at positions position .. position + T - 1 (shared by a batch): one table for the q and k of
 * every layer of a forward (computed and uploaded once). Dispose its table when the forward is done.
 */
export function llamaRotary(c: AttentionConfig, position: number, T: number): RopeOptions & { table: RopeTable } {
  const positions = Array.from({ length: T }, (_, t) => position + t);
  return { table: ropeTable(positions, { rotaryDim: c.headDim, theta: c.rope.theta, scaling: c.rope.scaling }) };
}

/**
 * q/k/v of h [B, T, hidden] (the input normed already, or x with the input norm `norm`, which the projections
 * apply), as [B, T, heads, D], with RoPE `rotary` on q and k.
 */
export async function llamaQkv(w: Weights, l: number, c: AttentionConfig, h: Tensor, rotary: RopeOptions, s: Scratch, norm?: InputNorm) {
  const [H, Hkv] = [c.numAttentionHeads, c.numKeyValueHeads];
  const [q, k, v] = (await projectHeads(w, l, [['q_proj', H], ['k_proj', Hkv], ['v_proj', Hkv]], h, c.headDim, s, norm)) as [Tensor, Tensor, Tensor];
  return { q: await s.keep(rope(q, rotary)), k: await s.keep(rope(k, rotary)), v };
}

/** k (with RoPE `rotary`) and v of x [B, T, hidden], as [B, T, Hkv, D]: of nanohammer's state tokens. */
export async function llamaKv(w: Weights, l: number, c: AttentionConfig, x: Tensor, rotary: RopeOptions, s: Scratch) {
  const Hkv = c.numKeyValueHeads;
  const [k, v] = (await projectHeads(w, l, [['k_proj', Hkv], ['v_proj', Hkv]], x, c.headDim, s)) as [Tensor, Tensor];
  return { k: await s.keep(rope(k, rotary)), v };
}

/** One Llama decoder layer's MLP half: x + down(silu(gate h) * up h), h = post_attention_layernorm(x) (applied by the gate/up GEMV in decode). */
export async function llamaMlp(w: Weights, l: number, eps: number, x: Tensor): Promise<Tensor> {
  const norm = { weight: w.layer(l, 'post_attention_layernorm.weight'), eps };
  return swigluMlp(x, w.layerMatrix(l, 'mlp.gate_proj.weight'), w.layerMatrix(l, 'mlp.up_proj.weight'), w.layerMatrix(l, 'mlp.down_proj.weight'), x, norm);
}

/** The head: lm_head, or the embedding when tied. */
export function headWeight(w: Weights): LinearWeight {
  return w.has('lm_head.weight') ? w.matrix('lm_head.weight') : w.get('model.embed_tokens.weight');
}

class LlamaNetwork implements Network {
  constructor(
    readonly config: LlamaConfig,
    private readonly w: Weights,
  ) {}

  get backend() {
    return this.w.backend;
  }

  get weights(): Weights {
    return this.w;
  }

  createState(batch: number, capacity: number): KvState {
    const { numHiddenLayers: L, numKeyValueHeads: heads, headDim: dim } = this.config;
    return new KvState(batch, Array.from({ length: L }, () => ({ heads, dim })), capacity, this.backend);
  }

  async forward(ids: TokenIds, options: NetworkForwardOptions = {}): Promise<Tensor> {
    const c = this.config;
    const w = this.w;
    const [B, T] = checkIds(ids, c.vocabSize, 'inputIds', this.backend);
    const state = options.state && checkState(options.state, KvState, B, T, 'one token');
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
          const { q, k, v } = await llamaQkv(w, l, c, x, rotary, s, { weight: w.layer(l, 'input_layernorm.weight'), eps });
          const y = await s.keep(attend(q, k, v, state?.caches[l] ?? null));
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

  dispose(): void {
    this.w.dispose();
  }
}

export const llama: PresetDefinition<LlamaConfig> = {
  name: 'llama',
  tensors: (c) => [...llamaBodyTensors(c), ...attentionTensors(c)],
  build: (c, w) => new LlamaNetwork(c, w),
  maxContext: (c) => c.maxPositionEmbeddings,
};

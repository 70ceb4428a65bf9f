/**
 * @phalanx/varlen-attention: attention over packed documents (flash_attn_varlen_func): causal, sliding
 * windows, GQA, qGain, softcap, NanoHammer state tokens, and KV-cache decode. CPU kernels accumulate in
 * float64; WebGPU runs a tiled flash kernel for prefill and a split-over-keys kernel for decode. Importing the
 * package registers both.
 *
 * @example
 * import { randn } from '@phalanx/core';
 * import { attendStep, appendKv, createKvCache, varlenAttention } from '@phalanx/varlen-attention';
 * const [T, Hq, Hkv, D] = [12, 4, 2, 16];
 * const q = randn([T, Hq, D], { seed: 1 }), k = randn([T, Hkv, D], { seed: 2 }), v = randn([T, Hkv, D], { seed: 3 });
 * // two documents of 5 and 7 tokens, a window of 4 keys back
 * const y = await varlenAttention({ q, k, v }, { cuSeqlens: [0, 5, 12], window: 4 }); // [12, 4, 16]
 * // decode: fill a cache with the prompts, then one token per sequence
 * const cache = createKvCache({ batch: 2, heads: Hkv, dim: D, window: 4 });
 * await appendKv(cache, { k, v }, [0, 5, 12]);
 * // q1 [2, Hq, D], k1 and v1 [2, Hkv, D]
 * const y1 = await attendStep(cache, q1, k1, v1);
 */
import './reference.js';
import './webgpu/prefill.js';
import './webgpu/decode.js';

export { type ScoreAttrs, type ScoreOptions, type VarlenAttentionAttrs, type VarlenAttentionOptions, keyBounds, varlenAttention } from './attention.js';
export { type KvAppendAttrs, type KvAttendAttrs, type KvCacheOptions, KvCache, appendKv, attendStep, createKvCache } from './cache.js';

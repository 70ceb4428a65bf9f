import { type Tensor, InputError, f32ToF16Bits, isFloat, tensor } from '@phalanx/core';
import { type Hessian } from './gptq.js';
import { type HadamardOptions } from './hadamard.js';
import { type QuantMethod, type QuantizedTensor, dequantize, quantize } from './quantize.js';
import { assertBits } from './sdclip.js';

/** Bits and clip for one class of tensors. */
export interface QuantClass {
  bits: number;
  clipSigmas: number;
}

/** Tensors whose name contains `match` (a string) or matches it (a RegExp) get this class. */
export interface QuantRule extends QuantClass {
  match: string | RegExp;
}

export interface QuantPolicy {
  /** Checked in order; the first that matches wins. */
  rules: QuantRule[];
  /** The class of a large float tensor no rule matches; null passes it through as fp16 instead. */
  fallback: QuantClass | null;
  /** Float tensors with at most this many elements pass through as fp16. */
  passthroughMaxElements: number;
  method: QuantMethod;
  blockSize?: number;
  damping?: number;
  actOrder?: boolean;
  /** 'hadamard' or `HadamardOptions`: every quantized tensor is rotated first (`quantize`'s `rotate`). Default: none. */
  rotate?: 'hadamard' | HadamardOptions;
}

/**
 * The parameter-golf #1728 export (spec section 7): tok_emb 7 bits k=15, `.mlp.` 6 bits k=12, `.attn.`
 * 6 bits k=13, any other float tensor above 65,536 elements 6 bits k=12.85, the rest fp16; GPTQ with
 * block 128, damping 0.01 and act-order.
 */
export const GOLF_POLICY: QuantPolicy = Object.freeze({
  rules: [
    { match: 'tok_emb', bits: 7, clipSigmas: 15 },
    { match: '.mlp.', bits: 6, clipSigmas: 12 },
    { match: '.attn.', bits: 6, clipSigmas: 13 },
  ],
  fallback: { bits: 6, clipSigmas: 12.85 },
  passthroughMaxElements: 65_536,
  method: 'gptq',
  blockSize: 128,
  damping: 0.01,
  actOrder: true,
});

/** Named presets, for command lines and configs. */
export const POLICIES: Readonly<Record<string, QuantPolicy>> = Object.freeze({ golf: GOLF_POLICY });

/** A name contains `match` (a string) or matches it (a RegExp). */
function nameMatches(name: string, match: string | RegExp): boolean {
  return typeof match === 'string' ? name.includes(match) : match.test(name);
}

/**
 * What the policy does with one tensor: 'passthrough' (fp16 for floats; other dtypes as they are) or the
 * class it is quantized with.
 */
export function classifyTensor(name: string, t: Pick<Tensor, 'size' | 'dtype'>, policy: QuantPolicy): QuantClass | 'passthrough' {
  if (!isFloat(t.dtype) || t.size <= policy.passthroughMaxElements) return 'passthrough';
  const rule = policy.rules.find((r) => nameMatches(name, r.match));
  return rule ? { bits: rule.bits, clipSigmas: rule.clipSigmas } : (policy.fallback ?? 'passthrough');
}

/** A quantized model: quantized tensors and the ones passed through. */
export interface QuantizedModel {
  quantized: Record<string, QuantizedTensor>;
  passthrough: Record<string, Tensor>;
}

/**
 * Quantizes every tensor of a model by the policy. A tensor of rank other than 2 is quantized as
 * [shape[0], rest] (a vector as one row) and keeps its shape. With a 'gptq' policy every quantized
 * tensor needs a Hessian in `hessians` (by tensor name); the missing ones are named in one InputError.
 *
 * @example
 * const model = await quantizeModel(weights, GOLF_POLICY, { hessians });
 * console.log((await artifactSize(model, { compressor: 'brotli' })).compressed);
 */
export async function quantizeModel(weights: Record<string, Tensor>, policy: QuantPolicy = GOLF_POLICY, options: { hessians?: Record<string, Hessian | Tensor> } = {}): Promise<QuantizedModel> {
  const classes = Object.entries(weights).map(([name, t]) => [name, t, classifyTensor(name, t, policy)] as const);
  for (const [, , c] of classes) if (c !== 'passthrough') assertBits('quantizeModel', c.bits);
  if (policy.method === 'gptq') {
    const missing = classes.filter(([name, , c]) => c !== 'passthrough' && !options.hessians?.[name]).map(([name]) => name);
    if (missing.length) throw new InputError(`quantizeModel: the policy uses GPTQ but these tensors have no Hessian: ${missing.join(', ')}`);
  }
  const model: QuantizedModel = { quantized: {}, passthrough: {} };
  for (const [name, t, c] of classes) {
    if (c === 'passthrough') {
      model.passthrough[name] = isFloat(t.dtype) ? await toF16(t, name) : t.reshape(t.shape); // a view: the caller may dispose its own
      continue;
    }
    const matrix = t.reshape([t.shape[0] ?? 1, -1]);
    matrix.name = name;
    try {
      const q = await quantize(matrix, {
        ...c,
        method: policy.method,
        hessian: policy.method === 'gptq' ? options.hessians![name] : undefined,
        blockSize: policy.blockSize,
        damping: policy.damping,
        actOrder: policy.actOrder,
        rotate: policy.rotate,
      });
      model.quantized[name] = { ...q, shape: t.shape };
    } finally {
      matrix.dispose();
    }
  }
  return model;
}

async function toF16(t: Tensor, name: string): Promise<Tensor> {
  if (t.dtype === 'f16') return tensor(await t.rawData(), t.shape, { dtype: 'f16', name });
  return tensor(Uint16Array.from(await t.data(), f32ToF16Bits), t.shape, { dtype: 'f16', name });
}

export interface DequantizeModelOptions {
  /**
   * Quantized tensors to return as bf16 (`dequantize(q, { dtype: 'bf16' })`): names containing a string or
   * matching a RegExp. The reference does this for `tok_emb` (`{ bf16: 'tok_emb' }`), whose template dtype
   * is bf16; by default nothing is.
   */
  bf16?: string | RegExp | readonly (string | RegExp)[];
}

/**
 * Every tensor back on the CPU: quantized ones as f32 codes * scale_r (bf16 for the names in `bf16`; rotated
 * ones rotated back, as `dequantize` does), passthrough fp16 widened to f32, other dtypes copied as they are.
 *
 * @example
 * const weights = await dequantizeModel(await readArtifact(path), { bf16: 'tok_emb' }); // as the reference loads it
 */
export async function dequantizeModel(model: QuantizedModel, options: DequantizeModelOptions = {}): Promise<Record<string, Tensor>> {
  const bf16 = [options.bf16 ?? []].flat();
  const out: Record<string, Tensor> = {};
  for (const [name, q] of Object.entries(model.quantized)) out[name] = await dequantize(q, { dtype: bf16.some((m) => nameMatches(name, m)) ? 'bf16' : 'f32' });
  for (const [name, t] of Object.entries(model.passthrough)) out[name] = tensor(await t.data(), t.shape, { dtype: isFloat(t.dtype) ? 'f32' : t.dtype, name });
  return out;
}

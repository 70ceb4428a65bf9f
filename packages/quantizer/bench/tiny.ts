/**
 * Helpers of tiny-models.ts and of the quantizer's tiny-model test: the golf policy on Hugging Face names,
 * quantized checkpoints loaded through @phalanx/models, logits errors, and calibration Hessians.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint, writeSafetensors } from '@phalanx/checkpoint';
import { Tensor, cpuValues, registerKernel, relativeRmse, tensor } from '@phalanx/core';
import { type LoadModelOptions, type Model, loadModel } from '@phalanx/models';
import { type Hessian, type QuantPolicy, type QuantizedModel, GOLF_POLICY, accumulateHessian, createHessian, dequantizeModel, packQuantized } from '../src/index.js';

/**
 * The golf classes (spec section 7) on Hugging Face names: embed_tokens 7 bits k=15, `.mlp.` 6 bits k=12,
 * `.self_attn.` 6 bits k=13. GOLF_POLICY itself would pass most of a tiny model through: its `.attn.` does not
 * match `self_attn.`, and at hidden size 256 the attention projections hold at most 65,536 elements, its
 * passthrough limit. 16,384 keeps the tiny models' projections quantized and their gates, norms, lambdas and
 * small state tensors (spartacus' h0: 8,192) in fp16.
 */
export const TINY_GOLF_POLICY: QuantPolicy = Object.freeze({
  ...GOLF_POLICY,
  rules: [
    { match: 'embed_tokens', bits: 7, clipSigmas: 15 },
    { match: '.mlp.', bits: 6, clipSigmas: 12 },
    { match: '.self_attn.', bits: 6, clipSigmas: 13 },
  ],
  passthroughMaxElements: 16_384,
});

/**
 * The model in `dir` with every quantized tensor replaced by its dequantized value (what an artifact loads
 * as): its files copied to a temporary folder with the new model.safetensors, loaded, and removed.
 */
export async function loadQuantized(dir: string, model: QuantizedModel, options: LoadModelOptions = {}): Promise<Model> {
  const tmp = await mkdtemp(join(tmpdir(), 'phalanx-tiny-quantized-'));
  try {
    for (const file of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(join(dir, file), join(tmp, file));
    await writeSafetensors(join(tmp, 'model.safetensors'), await dequantizeModel(model));
    return await loadModel(tmp, options);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** A checkpoint's tensors as they are stored (bf16 for the tiny models). */
export async function readWeights(dir: string): Promise<Record<string, Tensor>> {
  const ckpt = await openCheckpoint(dir);
  try {
    return await ckpt.readAll();
  } finally {
    await ckpt.close();
  }
}

/** Bytes of the tensors an artifact stores: packed codes, f16 scales, passthrough tensors. */
export async function storedBytes(model: QuantizedModel): Promise<{ bytes: number; params: number; quantizedParams: number; quantizedBytes: number }> {
  let bytes = 0;
  let params = 0;
  let quantizedParams = 0;
  let quantizedBytes = 0;
  for (const q of Object.values(model.quantized)) {
    const packed = await packQuantized(q);
    const b = packed.codes.size + 2 * q.scales.size;
    quantizedBytes += b;
    bytes += b;
    const n = q.shape.reduce((a, d) => a * d, 1);
    params += n;
    quantizedParams += n;
  }
  for (const t of Object.values(model.passthrough)) {
    bytes += (await t.rawData()).byteLength;
    params += t.size;
  }
  return { bytes, params, quantizedParams, quantizedBytes };
}

export interface LogitsError {
  /** ||quantized - float||_2 / ||float||_2 over every logit. */
  relativeRmse: number;
  maxAbs: number;
}

/** f32 logits [B, T, V] of `rows` (equal lengths). */
export async function logits(model: Model, rows: number[][]): Promise<Float32Array> {
  const t = await model.network.forward(rows);
  try {
    return Float32Array.from(await t.data());
  } finally {
    t.dispose();
  }
}

export function logitsError(float: Float32Array, quantized: Float32Array): LogitsError {
  let maxAbs = 0;
  for (let i = 0; i < float.length; i++) maxAbs = Math.max(maxAbs, Math.abs(float[i]! - quantized[i]!));
  return { relativeRmse: relativeRmse(float, quantized), maxAbs };
}

/** Held-out ids of the tiny models (tokenized Brown Corpus text none of them trained on) and their scoring windows. */
export async function heldOutIds(path: string | URL): Promise<{ ids: number[]; window: number; stride: number }> {
  return JSON.parse(await readFile(path, 'utf8')) as { ids: number[]; window: number; stride: number };
}

/** `count` rows of `length` consecutive ids from `start`. */
export const rowsOf = (ids: number[], start: number, count: number, length: number) => Array.from({ length: count }, (_, i) => ids.slice(start + i * length, start + (i + 1) * length));

// ---------------------------------------------------------------------------------------------------------
// Calibration: each projection's input, read where the CPU's matmul kernels receive it.

/** Set while calibrating: called with the inputs of every CPU 'matmul' and 'swigluLinear'. */
let onMatmul: ((inputs: Tensor[]) => void) | null = null;
let hooked = false;

/**
 * Per weight name, H = (1/batches) sum X^T X of its input over forwards of the float model (on the CPU) on
 * each batch of rows. The inputs are read by a kernel of the highest priority that records them and declines,
 * so the model's own kernels still run; a looped layer adds one X per pass, as the reference's do.
 */
export async function captureHessians(model: Model, batches: number[][][]): Promise<Record<string, Hessian>> {
  if (model.backend.name !== 'cpu') throw new Error('captureHessians: the model must run on the CPU');
  if (!hooked) {
    for (const op of ['matmul', 'swigluLinear']) {
      registerKernel({
        op,
        backend: 'cpu',
        priority: Number.MAX_SAFE_INTEGER,
        fn: () => {
          throw new Error('never chosen');
        },
        verify: (inputs: Tensor[]) => {
          onMatmul?.(inputs);
          return 'calibration: inputs recorded';
        },
      });
    }
    hooked = true;
  }
  const names = new Map<Tensor, string>();
  for (const name of model.network.weights.names) {
    const m = model.network.weights.matrix(name);
    if (m instanceof Tensor && m.rank === 2) names.set(m, name);
  }
  const hessians: Record<string, Hessian> = {};
  // per input tensor, the weights that read it (q, k and v share theirs): X^T X is summed once for all of them
  const seen = new Map<Tensor, { x: Float32Array; names: string[] }>();
  onMatmul = (inputs) => {
    for (const w of inputs.slice(1)) {
      const name = names.get(w);
      if (!name) continue;
      const entry = seen.get(inputs[0]!) ?? { x: Float32Array.from(cpuValues(inputs[0]!)), names: [] };
      entry.names.push(name);
      seen.set(inputs[0]!, entry);
    }
  };
  try {
    for (const rows of batches) {
      seen.clear();
      (await model.network.forward(rows)).dispose();
      for (const [input, { x, names: readers }] of seen) {
        const K = input.shape[input.rank - 1]!;
        const once = createHessian(K);
        await accumulateHessian(once, tensor(x, [x.length / K, K]));
        for (const name of readers) {
          const h = (hessians[name] ??= createHessian(K));
          for (let i = 0; i < h.sum.length; i++) h.sum[i]! += once.sum[i]!;
          h.batches++;
        }
      }
    }
  } finally {
    onMatmul = null;
  }
  return hessians;
}

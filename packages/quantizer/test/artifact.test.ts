import { mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSafetensors } from '@phalanx/checkpoint';
import { CheckpointError, InputError, type Tensor, tensor } from '@phalanx/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type QuantPolicy,
  GOLF_POLICY,
  POLICIES,
  artifactSize,
  byteShuffle,
  byteUnshuffle,
  classifyTensor,
  codeLayout,
  createHessian,
  dequantize,
  dequantizeModel,
  packBits,
  quantizeModel,
  readArtifact,
  writeArtifact,
} from '../src/index.js';
import { normals } from './helpers.js';

const dir = join(tmpdir(), `phalanx-quantizer-test-${process.pid}`);
beforeAll(() => mkdir(dir, { recursive: true }));
afterAll(() => rm(dir, { recursive: true, force: true }));

const f32 = (size: number) => ({ size, dtype: 'f32' as const });

describe('the golf policy', () => {
  it('assigns the spec classes', () => {
    expect(POLICIES.golf).toBe(GOLF_POLICY);
    expect(classifyTensor('tok_emb.weight', f32(8192 * 512), GOLF_POLICY)).toEqual({ bits: 7, clipSigmas: 15 });
    for (const n of ['blocks.0.mlp.fc.weight', 'blocks.10.mlp.proj.weight']) expect(classifyTensor(n, f32(2048 * 512), GOLF_POLICY)).toEqual({ bits: 6, clipSigmas: 12 });
    for (const n of ['c_q', 'c_k', 'c_v', 'proj']) expect(classifyTensor(`blocks.3.attn.${n}.weight`, f32(512 * 256), GOLF_POLICY)).toEqual({ bits: 6, clipSigmas: 13 });
    expect(classifyTensor('lm_head.weight', f32(65_537), GOLF_POLICY)).toEqual({ bits: 6, clipSigmas: 12.85 });
    for (const n of ['blocks.0.attn.q_gain', 'skip_weights', 'smear.gate', 'blocks.1.attn_scale']) expect(classifyTensor(n, f32(512), GOLF_POLICY)).toBe('passthrough');
    expect(classifyTensor('blocks.0.mlp.fc.weight', f32(65_536), GOLF_POLICY)).toBe('passthrough');
    expect(classifyTensor('blocks.0.mlp.fc.weight', { size: 1 << 20, dtype: 'i32' }, GOLF_POLICY)).toBe('passthrough');
  });

  it('quantizeModel follows it, fp16 for the small tensors, and asks for every GPTQ Hessian', async () => {
    const weights = {
      'tok_emb.weight': tensor(normals(512 * 130, 1), [512, 130]),
      'blocks.0.mlp.fc.weight': tensor(normals(520 * 130, 2), [520, 130]),
      'blocks.0.attn.q_gain': tensor(normals(8, 3), [8]),
    };
    await expect(quantizeModel(weights, GOLF_POLICY)).rejects.toThrow(/tok_emb.weight, blocks.0.mlp.fc.weight/);
    await expect(quantizeModel(weights, GOLF_POLICY, { hessians: { 'tok_emb.weight': createHessian(130) } })).rejects.toThrow(InputError);
    const m = await quantizeModel(weights, { ...GOLF_POLICY, method: 'rtn' });
    expect(Object.keys(m.quantized).sort()).toEqual(['blocks.0.mlp.fc.weight', 'tok_emb.weight']);
    expect([m.quantized['tok_emb.weight']!.bits, m.quantized['tok_emb.weight']!.clipSigmas]).toEqual([7, 15]);
    expect([m.quantized['blocks.0.mlp.fc.weight']!.bits, m.quantized['blocks.0.mlp.fc.weight']!.clipSigmas]).toEqual([6, 12]);
    expect(m.passthrough['blocks.0.attn.q_gain']!.dtype).toBe('f16');
  });
});

/** A small model: two quantized tensors (one 3-D), an fp16 passthrough and an integer passthrough. */
async function smallModel() {
  const policy: QuantPolicy = { rules: [{ match: 'emb', bits: 5, clipSigmas: 10 }], fallback: { bits: 3, clipSigmas: 3 }, passthroughMaxElements: 16, method: 'rtn' };
  return quantizeModel(
    {
      emb: tensor(normals(11 * 7, 1), [11, 7]),
      'conv.weight': tensor(normals(3 * 5 * 3, 2), [3, 5, 3]),
      norm: tensor(normals(9, 3), [9]),
      ids: tensor(Int32Array.from([4, -2, 7]), [3]),
    },
    policy,
  );
}

async function values(ts: Record<string, Tensor>) {
  return Object.fromEntries(await Promise.all(Object.entries(ts).map(async ([k, t]) => [k, { shape: t.shape, dtype: t.dtype, data: Array.from(await t.rawData()) }])));
}

describe('artifact', () => {
  it.each(['packed', 'int8'] as const)('writes and reads back (%s codes)', async (codes) => {
    const m = await smallModel();
    const path = join(dir, `${codes}.safetensors`);
    await writeArtifact(path, m, { codes });
    const back = await readArtifact(path);
    expect(Object.keys(back.quantized).sort()).toEqual(['conv.weight', 'emb']);
    for (const [name, q] of Object.entries(m.quantized)) {
      const b = back.quantized[name]!;
      expect([b.bits, b.clipSigmas, b.method, b.shape]).toEqual([q.bits, q.clipSigmas, q.method, q.shape]);
      expect(await values({ codes: b.codes, scales: b.scales })).toEqual(await values({ codes: q.codes, scales: q.scales }));
    }
    expect(await values(back.passthrough)).toEqual(await values(m.passthrough));
    expect(await values(await dequantizeModel(back))).toEqual(await values(await dequantizeModel(m)));
    expect((await dequantizeModel(back))['conv.weight']!.shape).toEqual([3, 5, 3]);
  });

  it('packs 3-bit codes into 3/8 of a byte each', async () => {
    const path = join(dir, 'sizes.safetensors');
    await writeArtifact(path, await smallModel());
    const bytes = await readFile(path);
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString()) as Record<string, { shape: number[]; dtype: string }>;
    expect(header['conv.weight.codes']).toMatchObject({ dtype: 'U8', shape: [Math.ceil((45 * 3) / 8)] });
    expect(header['emb.codes']).toMatchObject({ dtype: 'U8', shape: [Math.ceil((77 * 5) / 8)] });
    expect(header['emb.scales']).toMatchObject({ dtype: 'F16', shape: [11] });
  });

  it.each(['packed', 'int8'] as const)('reads %s files back as packed codes on request', async (stored) => {
    const m = await smallModel();
    const path = join(dir, `as-packed-${stored}.safetensors`);
    await writeArtifact(path, m, { codes: stored });
    const back = await readArtifact(path, { codes: 'packed' });
    for (const [name, q] of Object.entries(m.quantized)) {
      const b = back.quantized[name]!;
      expect(codeLayout(b)).toBe('packed');
      expect(await b.codes.data()).toEqual(packBits(await q.codes.data(), q.bits));
    }
    expect(await values(await dequantizeModel(back))).toEqual(await values(await dequantizeModel(m)));
  });

  it('refuses a safetensors file that is not an artifact', async () => {
    const path = join(dir, 'plain.safetensors');
    await writeSafetensors(path, { w: tensor([1, 2], [2]) });
    await expect(readArtifact(path)).rejects.toThrow(CheckpointError);
  });
});

/** Whether `d` is the bf16 nearest to the f32 `v` (ties to an even mantissa), checked by bit arithmetic. */
function isNearestBf16(v: number, d: number): boolean {
  const bits = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0]!;
  const [vb, db] = [bits(v), bits(d)];
  if ((db & 0xffff) !== 0) return false;
  const below = vb & 0xffff0000; // v truncated to bf16, and the next bf16 away from zero
  const rest = vb & 0xffff;
  const want = rest > 0x8000 || (rest === 0x8000 && (below & 0x10000) !== 0) ? below + 0x10000 : below;
  return db === want >>> 0;
}

describe('bf16 rounding after dequantization (the reference for tok_emb)', () => {
  it('rounds each f32 value codes * scale to the nearest bf16', async () => {
    const q = (await smallModel()).quantized.emb!;
    const f32 = await (await dequantize(q)).data();
    const t = await dequantize(q, { dtype: 'bf16' });
    expect([t.dtype, t.shape]).toEqual(['bf16', [11, 7]]);
    const bf = await t.data();
    for (let i = 0; i < f32.length; i++) expect(isNearestBf16(f32[i]!, bf[i]!), `element ${i}: ${bf[i]} for ${f32[i]}`).toBe(true);
    // 5-bit codes times f16 scales carry more than bf16's 8 significant bits: most values move
    expect(Array.from(f32).filter((v, i) => v !== bf[i]).length).toBeGreaterThan(f32.length / 2);
    await expect(dequantize(q, { dtype: 'f16' as 'bf16' })).rejects.toThrow(InputError);
  });

  it('survives the artifact round trip, only for the named tensors', async () => {
    const m = await smallModel();
    const path = join(dir, 'bf16.safetensors');
    await writeArtifact(path, m);
    const back = await dequantizeModel(await readArtifact(path, { codes: 'packed' }), { bf16: 'emb' });
    expect(back.emb!.dtype).toBe('bf16');
    expect(await back.emb!.rawData()).toEqual(await (await dequantize(m.quantized.emb!, { dtype: 'bf16' })).rawData());
    expect(back['conv.weight']!.dtype).toBe('f32');
    expect(await back['conv.weight']!.data()).toEqual(await (await dequantize(m.quantized['conv.weight']!)).data());
    expect((await dequantizeModel(m, { bf16: [/^conv\./] }))['conv.weight']!.dtype).toBe('bf16');
  });
});

describe('artifactSize', () => {
  it('byte shuffle matches the reference layout and inverts', () => {
    const src = Uint8Array.from([1, 2, 3, 4, 5]);
    expect(Array.from(byteShuffle(src))).toEqual([0x42, 0x53, 0x48, 0x46, 2, 1, 3, 5, 2, 4]);
    expect(byteUnshuffle(byteShuffle(src))).toEqual(src);
  });

  it('is reproducible, and smaller with the shuffle on a realistic model', async () => {
    // A 6-bit mlp matrix and fp16 tensors of smooth, trained-looking values (the shuffle's target).
    const weights = {
      'blocks.0.mlp.fc.weight': tensor(normals(256 * 512, 4, 0.02), [256, 512]),
      'blocks.0.attn_scale': tensor(normals(65_536, 5, 0.1).map((v) => 1 + v), [65_536]),
    };
    const m = await quantizeModel(weights, { ...GOLF_POLICY, method: 'rtn' });
    const a = await artifactSize(m, { compressor: 'brotli' });
    expect(await artifactSize(m, { compressor: 'brotli' })).toEqual(a);
    const plain = await artifactSize(m, { compressor: 'brotli', shuffle: false });
    expect(plain.raw).toBe(a.raw);
    expect(a.compressed).toBeLessThan(plain.compressed);
    // Brotli finds the 6-bit range in int8 bytes better than in a bit stream (measured 138,063 vs 149,963 bytes).
    expect(a.compressed).toBeLessThan((await artifactSize(m, { codes: 'packed' })).compressed);
  });
});

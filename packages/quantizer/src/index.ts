/**
 * @phalanx/quantizer: SDClip and GPTQ quantization, bit-packed artifacts and their compressed size, and
 * matmul kernels that read packed codes (CPU and WebGPU; importing the package registers them).
 *
 * @example
 * import { GOLF_POLICY, accumulateHessian, artifactSize, createHessian, quantizeModel, writeArtifact } from '@phalanx/quantizer';
 * const h = createHessian(512);
 * for (const x of calibrationInputs) await accumulateHessian(h, x); // one per batch
 * const model = await quantizeModel(weights, GOLF_POLICY, { hessians: { 'blocks.0.mlp.fc.weight': h, ... } });
 * await writeArtifact('model.quant.safetensors', model);
 * const { compressed } = await artifactSize(model, { compressor: 'brotli' });
 * const q = await quantizedTo(model.quantized['blocks.0.mlp.fc.weight']!, gpu, { layout: 'packed' });
 * const y = await quantizedLinear(x, q); // decodes 6-bit codes as it reads them
 * const r = await quantize(w, { bits: 4, clipSigmas: 2.5, rotate: 'hadamard' }); // codes of W R; quantizedLinear rotates x
 */
export { type ArtifactSize, type ArtifactSizeOptions, ARTIFACT_FORMAT, ARTIFACT_KEY, artifactSize, byteShuffle, byteUnshuffle, readArtifact, writeArtifact } from './artifact.js';
export { type Hessian, accumulateHessian, createHessian, hessianMatrix } from './gptq.js';
export { type FoldedPair, type HadamardOptions, type HadamardRotation, foldHadamard, hadamardSigns, hadamardTransform } from './hadamard.js';
export { int8ActivationRows } from './cpu.js';
export { type PackedLinearAttrs, type QuantizedLinearOptions, quantizedLinear, quantizedTo, rotateHadamard } from './linear.js';
export { type CodeLayout, codeLayout, packBits, packQuantized, packedBytes, quantizedDims, unpackBits, unpackQuantized } from './pack.js';
export { type DequantizeModelOptions, type QuantClass, type QuantPolicy, type QuantRule, type QuantizedModel, GOLF_POLICY, POLICIES, classifyTensor, dequantizeModel, quantizeModel } from './policy.js';
export { type DequantizeOptions, type QuantMethod, type QuantizeOptions, type QuantizedTensor, dequantize, quantize } from './quantize.js';
export { clipRange, roundHalfEven } from './sdclip.js';

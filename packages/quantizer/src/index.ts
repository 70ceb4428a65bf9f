/**
 * @phalanx/quantizer: SDClip and GPTQ quantization, bit-packed artifacts and their compressed size.
 *
 * @example
 * import { GOLF_POLICY, accumulateHessian, artifactSize, createHessian, quantizeModel, writeArtifact } from '@phalanx/quantizer';
 * const h = createHessian(512);
 * for (const x of calibrationInputs) await accumulateHessian(h, x); // one per batch
 * const model = await quantizeModel(weights, GOLF_POLICY, { hessians: { 'blocks.0.mlp.fc.weight': h, ... } });
 * await writeArtifact('model.quant.safetensors', model);
 * const { compressed } = await artifactSize(model, { compressor: 'brotli' });
 */
export { type ArtifactSize, type ArtifactSizeOptions, type CodeLayout, ARTIFACT_FORMAT, ARTIFACT_KEY, artifactSize, byteShuffle, byteUnshuffle, readArtifact, writeArtifact } from './artifact.js';
export { type Hessian, accumulateHessian, createHessian, hessianMatrix } from './gptq.js';
export { quantizedLinear, quantizedTo } from './linear.js';
export { packBits, packedBytes, unpackBits } from './pack.js';
export { type QuantClass, type QuantPolicy, type QuantRule, type QuantizedModel, GOLF_POLICY, POLICIES, classifyTensor, dequantizeModel, quantizeModel } from './policy.js';
export { type QuantMethod, type QuantizeOptions, type QuantizedTensor, dequantize, quantize } from './quantize.js';
export { clipRange, roundHalfEven } from './sdclip.js';

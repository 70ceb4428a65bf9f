/**
 * @phalanx/quantizer: SDClip and GPTQ quantization, bit-packed artifacts and quantized matmul kernels.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};

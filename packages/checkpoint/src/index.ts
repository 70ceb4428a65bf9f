/**
 * @phalanx/checkpoint: Hugging Face checkpoints: safetensors read/write (sharded), config parsing, the quantized artifact format.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};

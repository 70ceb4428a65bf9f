/**
 * @phalanx/checkpoint: Hugging Face checkpoints: safetensors read/write (single and sharded), config.json
 * parsing per preset, and matching a preset's tensor names to a checkpoint's.
 *
 * @example
 * import { openCheckpoint, loadConfig, matchTensorNames } from '@phalanx/checkpoint';
 * const config = await loadConfig('Llama-3.2-1B/config.json');
 * const ckpt = await openCheckpoint('Llama-3.2-1B');
 * const names = matchTensorNames(ckpt.path, expected, ckpt.tensors); // throws one CheckpointError listing every mismatch
 * const weights = await ckpt.readAll({ onProgress: ({ bytesDone, bytesTotal }) => console.log(bytesDone / bytesTotal) });
 * await ckpt.close();
 */
export { type LoadOptions, Checkpoint, INDEX_FILE, SINGLE_FILE, openCheckpoint } from './checkpoint.js';
export {
  type LlamaConfig,
  type ModelConfig,
  type NanoHammerConfig,
  type ParcaeConfig,
  type Preset,
  type RopeConfig,
  type SpartacusConfig,
  MODEL_TYPES,
  loadConfig,
  parseConfig,
} from './config.js';
export { type ExpectedTensor, expandLayers, matchTensorNames } from './names.js';
export { type ProgressEvent, type ReadOptions, type SafetensorsDType, type TensorInfo, MAX_HEADER_BYTES, SafetensorsFile, writeSafetensors } from './safetensors.js';

/**
 * @phalanx/checkpoint/bytes: the part of this package that touches no filesystem, for browsers and other
 * runtimes without `node:fs`: safetensors parsed from bytes in memory (validated as files are), config.json
 * parsing, and tensor-name matching. The main entry re-exports all of it.
 *
 * @example
 * import { parseConfig, parseSafetensors } from '@phalanx/checkpoint/bytes';
 * const config = parseConfig(await (await fetch(`${base}/config.json`)).json());
 * const ckpt = parseSafetensors(new Uint8Array(await (await fetch(`${base}/model.safetensors`)).arrayBuffer()), `${base}/model.safetensors`);
 * const weights = await ckpt.readAll({ onProgress: ({ bytesDone, bytesTotal }) => bar(bytesDone / bytesTotal) });
 */
export { type LoadOptions, Checkpoint, INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
export {
  type LlamaConfig,
  type ModelConfig,
  type NanoHammerConfig,
  type ParcaeConfig,
  type Preset,
  type RopeConfig,
  type SpartacusConfig,
  MODEL_TYPES,
  parseConfig,
} from './config.js';
export { type ProgressEvent, type ReadOptions, type SafetensorsDType, type TensorInfo, MAX_HEADER_BYTES, SafetensorsShard } from './format.js';
export { SafetensorsBytes, parseSafetensors } from './memory.js';
export { type ExpectedTensor, expandLayers, matchTensorNames } from './names.js';

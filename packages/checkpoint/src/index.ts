/**
 * @phalanx/checkpoint: Hugging Face checkpoints: safetensors read/write (single and sharded), config.json
 * parsing per preset, and matching a preset's tensor names to a checkpoint's. This entry is for Node (it
 * reads files with `node:fs`); `@phalanx/checkpoint/bytes` holds what works without a filesystem.
 *
 * @example
 * import { openCheckpoint, loadConfig, matchTensorNames } from '@phalanx/checkpoint';
 * const config = await loadConfig('Llama-3.2-1B/config.json');
 * const ckpt = await openCheckpoint('Llama-3.2-1B');
 * const names = matchTensorNames(ckpt.path, expected, ckpt.tensors); // throws one CheckpointError listing every mismatch
 * const weights = await ckpt.readAll({ onProgress: ({ bytesDone, bytesTotal }) => console.log(bytesDone / bytesTotal) });
 * await ckpt.close();
 */
export * from './bytes.js';
export { loadConfig, openCheckpoint } from './files.js';
export { SafetensorsFile, writeSafetensors } from './safetensors.js';

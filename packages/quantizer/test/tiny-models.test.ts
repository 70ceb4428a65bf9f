/**
 * The tiny trained parcae (packages/tiny-models) quantized by the golf classes (TINY_GOLF_POLICY with RTN:
 * GPTQ needs the calibration of bench/tiny-models.ts) and loaded back through @phalanx/models: its logits
 * on held-out ids stay within the error measured on 2026-11-26, with and without Hadamard rotation.
 */
import { type Model, loadModel } from '@phalanx/models';
import { modelPath } from '@phalanx/tiny-models';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { artifactSize, quantizeModel } from '../src/index.js';
import { TINY_GOLF_POLICY, heldOutIds, loadQuantized, logits, logitsError, readWeights, storedBytes } from '../bench/tiny.js';

const dir = modelPath('parcae');
const rows = [(await heldOutIds(new URL('../../../docs/tiny-models/heldout-ids.json', import.meta.url))).ids.slice(10_000, 10_128)];

let float: Model;
let floatLogits: Float32Array;
beforeAll(async () => {
  float = await loadModel(dir, { backend: 'cpu' });
  floatLogits = await logits(float, rows);
});
afterAll(() => float.dispose());

describe('parcae quantized by the golf classes (RTN)', () => {
  it.each([
    // measured: relative RMSE of the logits, their largest difference (128 held-out tokens)
    ['plain', undefined, 0.1033, 3.01],
    ['Hadamard-rotated', 'hadamard' as const, 0.1001, 2.39],
  ])('%s: logits within the measured error of the float model', async (_, rotate, measured, maxAbs) => {
    const weights = await readWeights(dir);
    const q = await quantizeModel(weights, { ...TINY_GOLF_POLICY, method: 'rtn', rotate });
    const model = await loadQuantized(dir, q, { backend: 'cpu' });
    try {
      const e = logitsError(floatLogits, await logits(model, rows));
      expect(e.relativeRmse).toBeGreaterThan(0.8 * measured);
      expect(e.relativeRmse).toBeLessThan(1.2 * measured);
      expect(e.maxAbs).toBeLessThan(1.5 * maxAbs);
    } finally {
      model.dispose();
    }
  });

  it('6.44 bits per quantized weight (codes and scales; the embedding has 7-bit codes) and the artifact size', async () => {
    const q = await quantizeModel(await readWeights(dir), { ...TINY_GOLF_POLICY, method: 'rtn' });
    const { quantizedBytes, quantizedParams } = await storedBytes(q);
    expect((8 * quantizedBytes) / quantizedParams).toBeCloseTo(6.44027, 4);
    // the int8-coded file as the reference counts it; brotli's output may move by a few bytes across its versions
    const size = await artifactSize(q);
    expect(size.raw).toBe(2_821_646);
    expect(Math.abs(size.compressed / 1_281_436 - 1)).toBeLessThan(0.01);
  });
});

import { describe, expect, it } from 'vitest';
import { CheckpointError, ConfigError, DeviceLostError, DeviceError, PhalanxError, ShapeError, assertClose, compareClose, relativeRmse } from '../src/index.js';

describe('compareClose (relative RMSE with an atol short-circuit)', () => {
  it('computes rmse(ref - out) / rmse(ref)', () => {
    expect(relativeRmse([3, 4], [3, 4])).toBe(0);
    expect(relativeRmse([3, 4], [0, 0])).toBe(1);
    expect(relativeRmse([1, 1, 1, 1], [1.1, 0.9, 1.1, 0.9])).toBeCloseTo(0.1, 12);
  });

  it('passes within rtol, fails beyond it, and reports the worst element', () => {
    expect(compareClose([1, 2, 3], [1, 2, 3.00001], { rtol: 1e-5, atol: 0 }).ok).toBe(true);
    const bad = compareClose([1, 2, 3], [1, 2.1, 3], { rtol: 1e-5, atol: 0, name: 'logits' });
    expect(bad.ok).toBe(false);
    expect(bad.worst).toBe(1);
    expect(bad.message).toMatch(/^logits: relative RMSE/);
    expect(() => assertClose([1, 2, 3], [1, 2.1, 3], { rtol: 1e-5, atol: 0 })).toThrow(/relative RMSE/);
  });

  it('passes tiny absolute differences even when the reference is ~0', () => {
    expect(compareClose([0, 0], [1e-7, -1e-7], { atol: 1e-6 }).ok).toBe(true);
    expect(compareClose([0, 0], [1e-3, 0], { atol: 1e-6 }).ok).toBe(false);
  });

  it('fails on NaN or Inf where the reference is finite, even within atol', () => {
    expect(compareClose([1, 2], [1, NaN], { atol: 1e9, rtol: 1e9 }).ok).toBe(false);
    expect(compareClose([1, 2], [Infinity, 2], { atol: 1e9, rtol: 1e9 }).message).toMatch(/element 0 is Infinity/);
    expect(compareClose([1], [1, 2]).ok).toBe(false);
  });
});

describe('errors', () => {
  it('share one base class and name what is at fault', () => {
    const c = new CheckpointError('model.safetensors', "tensor 'wq': offsets past the end of the file");
    expect(c).toBeInstanceOf(PhalanxError);
    expect(c.message).toBe("model.safetensors: tensor 'wq': offsets past the end of the file");
    const cfg = new ConfigError('config.json', 'num_attention_heads', 'does not divide hidden_size 100');
    expect(cfg.message).toBe('config.json: num_attention_heads: does not divide hidden_size 100');
    expect(new DeviceLostError('x')).toBeInstanceOf(DeviceError);
    expect(new ShapeError('x').name).toBe('ShapeError');
  });
});

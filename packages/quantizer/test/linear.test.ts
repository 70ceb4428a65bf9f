import { assertClose, randn } from '@phalanx/core';
import { linear } from '@phalanx/ops';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { dequantize, quantize, quantizedLinear, quantizedTo } from '../src/index.js';

const { backends } = await testBackends();

describe.each(backends)('quantizedLinear on $name', (backend) => {
  it.each([1, 9])('equals linear with the dequantized weight (M = %i)', async (M) => {
    const w = randn([48, 64], { seed: 1 });
    const q = await quantizedTo(await quantize(w, { bits: 6, clipSigmas: 12 }), backend);
    const x = randn([M, 64], { seed: 2, backend });
    const bias = randn([48], { seed: 3, backend });
    const y = await quantizedLinear(x, q, bias);
    expect(y.backend).toBe(backend);
    const ref = await linear(x, await (await dequantize(q)).to(backend), bias);
    assertClose(await ref.data(), await y.data(), { rtol: 1e-5 });
  });
});

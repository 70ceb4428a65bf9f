import { type Backend, type DType, DTypeError, InputError, Rng, ShapeError, type Tensor, assertClose, tensor, zeros } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { attnOutGate, smearGate, xsa, xsaOutGate } from '../src/index.js';

const { backends } = await testBackends();

async function rand(shape: number[], seed: number, backend: Backend, dtype: DType = 'f32'): Promise<{ t: Tensor; v: number[] }> {
  const rng = new Rng(seed);
  const t = tensor(Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()), shape, { dtype, backend });
  return { t, v: Array.from(await t.data()) };
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i]!, 0);

/** The formulas of spec 3.4 on one (token, head) row: y - (y . v^) v^ with v^ = v / |v|, then times 2 sigmoid(W[h] . src[:width]). */
function refRow(y: number[], v: number[] | null, gate: { w: number[]; src: number[] } | null): number[] {
  let r = y;
  if (v) {
    const norm = Math.sqrt(dot(v, v));
    const vh = v.map((x) => x / norm);
    const p = dot(r, vh);
    r = r.map((x, d) => x - p * vh[d]!);
  }
  const g = gate ? 2 * sigmoid(dot(gate.w, gate.src)) : 1;
  return r.map((x) => g * x);
}

describe.each(backends)('gates on $name', (backend) => {
  const [N, H, Hkv, D, C, width] = [13, 4, 2, 24, 20, 12];
  const slice = (a: number[], i: number, n: number) => a.slice(i * n, (i + 1) * n);

  async function setup(dtype: DType = 'f32') {
    const y = await rand([N, H, D], 1, backend, dtype);
    const v = await rand([N, Hkv, D], 2, backend, dtype);
    const src = await rand([N, C], 3, backend, dtype);
    const w = await rand([H, width], 4, backend);
    return { y, v, src, w };
  }

  /** Expected output of each (token, head) row under the chosen parts. */
  function expected({ y, v, src, w }: Awaited<ReturnType<typeof setup>>, withXsa: boolean, withGate: boolean) {
    return Array.from({ length: N * H }, (_, r) => {
      const [n, h] = [Math.floor(r / H), r % H];
      const vRow = withXsa ? slice(v.v, n * Hkv + Math.floor(h / (H / Hkv)), D) : null;
      return refRow(slice(y.v, r, D), vRow, withGate ? { w: slice(w.v, h, width), src: src.v.slice(n * C, n * C + width) } : null);
    }).flat();
  }

  it('AttnOutGate is 2 sigmoid(W x[:width]) per token and head', async () => {
    const s = await setup();
    assertClose(expected(s, false, true), await (await attnOutGate(s.y.t, s.src.t, s.w.t)).data(), { rtol: 1e-6 });
  });

  it('XSA removes the component along the own token value (GQA), leaving the output orthogonal to it', async () => {
    const s = await setup();
    const out = Array.from(await (await xsa(s.y.t, s.v.t)).data());
    assertClose(expected(s, true, false), out, { rtol: 1e-6 });
    for (let r = 0; r < N * H; r++) {
      const v = slice(s.v.v, Math.floor(r / H) * Hkv + Math.floor((r % H) / (H / Hkv)), D);
      expect(Math.abs(dot(slice(out, r, D), v))).toBeLessThan(1e-4);
    }
  });

  it('XSA then the gate, fused, with bf16 inputs and leading batch dims', async () => {
    const s = await setup('bf16');
    const out = await xsaOutGate(s.y.t.reshape([1, N, H, D]), s.v.t.reshape([1, N, Hkv, D]), s.src.t.reshape([1, N, C]), s.w.t);
    expect(out.shape).toEqual([1, N, H, D]);
    assertClose(expected(s, true, true), await out.data(), { rtol: 1e-6 });
  });

  it('zero-init gate is the identity; a zero value vector removes nothing', async () => {
    const s = await setup();
    assertClose(s.y.v, await (await attnOutGate(s.y.t, s.src.t, zeros([H, width], { backend }))).data(), { rtol: 0, atol: 0 });
    assertClose(s.y.v, await (await xsa(s.y.t, zeros([N, Hkv, D], { backend }))).data(), { rtol: 0, atol: 0 });
  });

  describe('SmearGate', () => {
    const [B, T, Cs] = [2, 11, 16];
    /** x_t + lambda sigmoid(w . x_t[:width]) x_{t-1}, x_{-1} = 0, and no mixing at reset positions. */
    function smearRef(x: number[], w: number[], lambda: number, reset: number[] = []) {
      const out: number[] = [];
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          const row = slice(x, b * T + t, Cs);
          const prev = t === 0 || reset.includes(t) ? row.map(() => 0) : slice(x, b * T + t - 1, Cs);
          const g = sigmoid(dot(w, row.slice(0, w.length)));
          out.push(...row.map((xc, c) => xc + lambda * g * prev[c]!));
        }
      }
      return out;
    }

    it('mixes the previous token through one scalar gate per token (across documents by default)', async () => {
      const x = await rand([B, T, Cs], 5, backend);
      const w = await rand([width], 6, backend);
      assertClose(smearRef(x.v, w.v, 0.7), await (await smearGate(x.t, w.t, 0.7)).data(), { rtol: 1e-6 });
      // a learned lambda as a tensor
      const lambda = tensor([-1.3], [1], { backend });
      assertClose(smearRef(x.v, w.v, -1.3), await (await smearGate(x.t, w.t, lambda)).data(), { rtol: 1e-6 });
    });

    it('resetAt stops mixing at document starts (cuSeqlens as is)', async () => {
      const x = await rand([B, T, Cs], 7, backend);
      const w = await rand([4], 8, backend);
      const cuSeqlens = [0, 3, 4, 11];
      assertClose(smearRef(x.v, w.v, 0.9, cuSeqlens), await (await smearGate(x.t, w.t, 0.9, { resetAt: cuSeqlens })).data(), { rtol: 1e-6 });
    });

    it('lambda = 0 is the identity', async () => {
      const x = await rand([T, Cs], 9, backend);
      const w = await rand([width], 10, backend);
      assertClose(x.v, await (await smearGate(x.t, w.t, 0)).data(), { rtol: 0, atol: 0 });
    });
  });

  it('refuses bad shapes, dtypes and options with typed errors', async () => {
    const s = await setup();
    await expect(attnOutGate(s.y.t, s.src.t, zeros([H + 1, width], { backend }))).rejects.toThrow(/expected \[4, width\]/);
    await expect(attnOutGate(s.y.t, zeros([N, 8], { backend }), s.w.t)).rejects.toThrow(/has 8 channels; the gate reads 12/);
    await expect(attnOutGate(s.y.t, zeros([N + 1, C], { backend }), s.w.t)).rejects.toThrow(ShapeError);
    await expect(xsa(s.y.t, zeros([N, 3, D], { backend }))).rejects.toThrow(/not a multiple of v's 3 heads/);
    await expect(xsa(s.y.t, zeros([N, Hkv, D + 1], { backend }))).rejects.toThrow(ShapeError);
    await expect(xsa(tensor(new Int32Array(N * H * D), [N, H, D], { backend }), s.v.t)).rejects.toThrow(DTypeError);
    const x = zeros([5, 8], { backend });
    await expect(smearGate(x, zeros([9], { backend }), 1)).rejects.toThrow(/width <= 8/);
    await expect(smearGate(x, zeros([4], { backend }), zeros([2], { backend }))).rejects.toThrow(/expected one element/);
    await expect(smearGate(x, zeros([4], { backend }), NaN)).rejects.toThrow(InputError);
    await expect(smearGate(x, zeros([4], { backend }), 1, { resetAt: [6] })).rejects.toThrow(/resetAt position 6/);
  });
});

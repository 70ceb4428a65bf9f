/**
 * Conformance of the layers (norms, softmax family, cross-entropy, embedding, activations, residual mixes) on
 * every backend: each result is compared with a plain float64 reference computed here from the inputs'
 * stored values.
 */
import { type Backend, type DType, DTypeError, InputError, Rng, ShapeError, type Tensor, assertClose, tensor } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { XIELU_GOLF_COEFFICIENTS, crossEntropy, embedding, gelu, layerNorm, lerp, logSoftmax, logsumexp, mix, rmsNorm, silu, softcap, softmax, swiglu, xielu } from '../src/layers.js';

const { backends } = await testBackends();

interface Input {
  t: Tensor;
  /** The values as stored (f16/bf16 rounded). */
  v: number[];
}

/** Seeded normal values * scale + offset. */
async function input(shape: number[], seed: number, backend: Backend, { dtype = 'f32' as DType, scale = 1, offset = 0 } = {}): Promise<Input> {
  const rng = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const t = tensor(Array.from({ length: n }, () => offset + scale * rng.normal()), shape, { dtype, backend });
  return { t, v: Array.from(await t.data()) };
}

// ---- float64 references ----

/** Applies f to each row of d values, concatenating what it returns. */
function byRow(v: number[], d: number, f: (row: number[]) => number[]): number[] {
  const out: number[] = [];
  for (let base = 0; base < v.length; base += d) out.push(...f(v.slice(base, base + d)));
  return out;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function lse(row: number[]): number {
  const m = Math.max(...row);
  return m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
}

/** erf by Simpson's rule on 2/√π exp(-t²): independent of the kernels' series and fits. */
function erf(x: number): number {
  const n = 4000;
  const h = x / n;
  let s = 1 + Math.exp(-x * x);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * Math.exp(-((i * h) ** 2));
  return ((2 / Math.sqrt(Math.PI)) * s * h) / 3;
}

const siluRef = (x: number) => x / (1 + Math.exp(-x));

const SIZES = [1, 63, 257];
const LONG_SIZES = [1, 63, 257, 5000];
const HALVES: DType[] = ['f16', 'bf16'];

describe.each(backends)('layers on $name', (backend) => {
  describe('rmsNorm', () => {
    type Options = NonNullable<Parameters<typeof rmsNorm>[2]>;
    const ref = (v: number[], d: number, w?: number[], { eps = 1e-6, weightOffset = 0, scale = 1, activation }: Options = {}) =>
      byRow(v, d, (row) => {
        const inv = 1 / Math.sqrt(mean(row.map((x) => x * x)) + eps);
        return row.map((x, j) => {
          const y = x * inv * (w ? w[j]! + weightOffset : 1) * scale;
          return activation === 'silu' ? siluRef(y) : y;
        });
      });

    it.each(SIZES)('d = %i: weightless, with a weight, with a weight offset', async (d) => {
      const x = await input([3, d], 1, backend);
      const w = await input([d], 2, backend);
      const plain = await rmsNorm(x.t, null);
      expect(plain.shape).toEqual([3, d]);
      expect(plain.dtype).toBe('f32');
      assertClose(ref(x.v, d), await plain.data(), { name: 'weightless' });
      assertClose(ref(x.v, d, w.v), await (await rmsNorm(x.t, w.t)).data(), { name: 'weight' });
      assertClose(ref(x.v, d, w.v, { eps: 1e-2, weightOffset: 1 }), await (await rmsNorm(x.t, w.t, { eps: 1e-2, weightOffset: 1 })).data(), { name: 'offset' });
    });

    // the plain case first, then each variant: a shader cached without the variant in its key would give the plain result
    it.each(SIZES)('d = %i: scale, SiLU and both, with and without a weight', async (d) => {
      const x = await input([3, d], 20, backend, { scale: 2 });
      const w = await input([d], 21, backend);
      const cases: Options[] = [{}, { scale: 0.125 }, { activation: 'silu' }, { scale: -3, activation: 'silu', eps: 1e-3 }];
      for (const options of cases) {
        for (const weight of [null, w]) {
          const out = await rmsNorm(x.t, weight?.t ?? null, options);
          assertClose(ref(x.v, d, weight?.v, options), await out.data(), { name: `${JSON.stringify(options)} ${weight ? 'weight' : 'weightless'}` });
        }
      }
      const options: Options = { weightOffset: 1, scale: 0.5, activation: 'silu' };
      assertClose(ref(x.v, d, w.v, options), await (await rmsNorm(x.t, w.t, options)).data(), { name: 'offset, scale and SiLU' });
    });

    it.each(HALVES)('%s input and weight', async (dtype) => {
      const x = await input([2, 3, 65], 3, backend, { dtype });
      const w = await input([65], 4, backend, { dtype });
      const out = await rmsNorm(x.t, w.t);
      expect(out.shape).toEqual([2, 3, 65]);
      assertClose(ref(x.v, 65, w.v), await out.data());
    });
  });

  describe('layerNorm', () => {
    const ref = (v: number[], d: number, w?: number[], b?: number[], eps = 1e-5) =>
      byRow(v, d, (row) => {
        const m = mean(row);
        const inv = 1 / Math.sqrt(mean(row.map((x) => (x - m) ** 2)) + eps);
        return row.map((x, j) => (x - m) * inv * (w ? w[j]! : 1) + (b ? b[j]! : 0));
      });

    it.each(SIZES)('d = %i: with and without weight and bias', async (d) => {
      const x = await input([3, d], 5, backend);
      const w = await input([d], 6, backend);
      const b = await input([d], 7, backend);
      assertClose(ref(x.v, d, w.v, b.v), await (await layerNorm(x.t, w.t, b.t)).data(), { name: 'weight and bias' });
      assertClose(ref(x.v, d), await (await layerNorm(x.t, null, null)).data(), { name: 'neither' });
      assertClose(ref(x.v, d, w.v), await (await layerNorm(x.t, w.t, null)).data(), { name: 'weight only' });
      assertClose(ref(x.v, d, undefined, b.v, 1e-3), await (await layerNorm(x.t, null, b.t, { eps: 1e-3 })).data(), { name: 'bias only' });
    });

    it('rows with a large mean (the variance is taken around the mean, not as E[x²] - E[x]²)', async () => {
      const x = await input([4, 257], 8, backend, { offset: 1000 });
      assertClose(ref(x.v, 257), await (await layerNorm(x.t, null, null)).data(), { rtol: 1e-4 }); // the f32 mean near 1000 is good to ulp(1000) = 6e-5 of the unit spread
    });

    it.each(HALVES)('%s input, weight and bias', async (dtype) => {
      const x = await input([3, 65], 9, backend, { dtype });
      const w = await input([65], 10, backend, { dtype });
      const b = await input([65], 11, backend, { dtype });
      assertClose(ref(x.v, 65, w.v, b.v), await (await layerNorm(x.t, w.t, b.t)).data());
    });
  });

  describe('softmax, logSoftmax, logsumexp', () => {
    async function check(x: Input, d: number, name: string) {
      const rows = x.v.length / d;
      const logProbs = byRow(x.v, d, (row) => {
        const l = lse(row);
        return row.map((v) => v - l);
      });
      assertClose(logProbs.map(Math.exp), await (await softmax(x.t)).data(), { name: `${name} softmax` });
      assertClose(logProbs, await (await logSoftmax(x.t)).data(), { name: `${name} logSoftmax` });
      const l = await logsumexp(x.t);
      expect(l.shape).toEqual(x.t.shape.slice(0, -1));
      expect(l.size).toBe(rows);
      assertClose(byRow(x.v, d, (row) => [lse(row)]), await l.data(), { name: `${name} logsumexp` });
    }

    it.each(LONG_SIZES)('d = %i', async (d) => {
      await check(await input([d > 1000 ? 2 : 3, d], 12, backend, { scale: 3 }), d, `d=${d}`);
    });

    it.each(HALVES)('%s input, logsumexp keepDims', async (dtype) => {
      const x = await input([2, 4, 33], 13, backend, { dtype, scale: 3 });
      await check(x, 33, dtype);
      expect((await logsumexp(x.t, { keepDims: true })).shape).toEqual([2, 4, 1]);
    });

    it('large magnitudes do not overflow (the row max is subtracted)', async () => {
      await check(await input([3, 257], 14, backend, { scale: 1e4 }), 257, 'spread 1e4');
      await check(await input([3, 257], 15, backend, { offset: 1e4 }), 257, 'offset 1e4');
    });

    it('masked (-Infinity) entries get probability 0', async () => {
      const v = [0.5, -Infinity, 2, -Infinity, -1, 3];
      const out = await softmax(tensor(v, [2, 3], { backend }));
      assertClose([0.5, -Infinity, 2].map((x) => Math.exp(x - lse([0.5, 2]))).concat([-Infinity, -1, 3].map((x) => Math.exp(x - lse([-1, 3])))), await out.data());
    });
  });

  describe('crossEntropy', () => {
    const ref = (logits: number[], v: number, targets: number[], ignore = -100) => targets.map((t, r) => (t === ignore ? 0 : lse(logits.slice(r * v, (r + 1) * v)) - logits[r * v + t]!));

    it.each(LONG_SIZES)('V = %i, host targets with an ignored one', async (v) => {
      const n = v > 1000 ? 2 : 4;
      const x = await input([n, v], 16, backend, { scale: 3 });
      const rng = new Rng(17);
      const targets = Array.from({ length: n }, (_, i) => (i === 1 ? -100 : rng.int(v)));
      const out = await crossEntropy(x.t, targets);
      expect(out.shape).toEqual([n]);
      const loss = await out.data();
      expect(loss[1]).toBe(0);
      assertClose(ref(x.v, v, targets), loss);
    });

    it('target tensors (i32, u32) and a custom ignoreIndex; an out-of-range target in a tensor gives NaN', async () => {
      const x = await input([5, 63], 18, backend);
      const targets = [3, 62, 0, 7, 40];
      for (const dtype of ['i32', 'u32'] as const) {
        const t = tensor(targets, [5], { dtype, backend });
        assertClose(ref(x.v, 63, targets), await (await crossEntropy(x.t, t)).data(), { name: dtype });
      }
      assertClose(ref(x.v, 63, targets, 7), await (await crossEntropy(x.t, targets, { ignoreIndex: 7 })).data(), { name: 'ignoreIndex 7' });
      const bad = await (await crossEntropy(x.t, tensor([3, 63, 0, -5, 40], [5], { dtype: 'i32', backend }))).data();
      expect(Number.isNaN(bad[1]) && Number.isNaN(bad[3])).toBe(true);
      const good = ref(x.v, 63, targets);
      assertClose([good[0]!, good[2]!, good[4]!], [bad[0]!, bad[2]!, bad[4]!]);
    });

    it.each(HALVES)('%s logits', async (dtype) => {
      const x = await input([3, 257], 19, backend, { dtype, scale: 3 });
      assertClose(ref(x.v, 257, [0, 256, 100]), await (await crossEntropy(x.t, [0, 256, 100])).data());
    });

    it('large logits do not overflow', async () => {
      const x = await input([3, 257], 20, backend, { scale: 1e4 });
      assertClose(ref(x.v, 257, [5, 6, 7]), await (await crossEntropy(x.t, [5, 6, 7])).data());
    });

    // as the float64 reference: NaN or +Infinity anywhere in a row makes its loss NaN (a negative NaN too, whose
    // bits sort below every number), an ignored target still gives 0, -Infinity masks a token
    it.each(['f32', 'bf16'] as DType[])('non-finite logits (%s)', async (dtype) => {
      const v = 300;
      const negativeNaN = new Float32Array(new Uint32Array([0xffc00000]).buffer)[0]!;
      // [logits set, their value, target, the loss]
      const rows: [number[], number, number, string][] = [
        [[], 0, 3, 'finite'],
        [[7], NaN, 3, 'NaN'],
        [[270], NaN, 299, 'NaN'], // in the second stride of the workgroup
        [[0], negativeNaN, 3, 'NaN'],
        [[299], Infinity, 3, 'NaN'],
        [[3], NaN, -100, 'finite'], // ignored: 0
        [[5, 6, 280], -Infinity, 3, 'finite'],
        [[3], -Infinity, 3, 'Infinity'],
        [Array.from({ length: v }, (_, j) => j), -Infinity, 3, 'NaN'],
      ];
      const x = new Float32Array((await input([rows.length, v], 24, backend)).v);
      rows.forEach(([at, value], r) => at.forEach((j) => (x[r * v + j] = value)));
      const logits = tensor(x, [rows.length, v], { dtype, backend });
      const targets = rows.map(([, , t]) => t);
      const want = ref(Array.from(await logits.data()), v, targets);
      const got = Array.from(await (await crossEntropy(logits, targets)).data());
      const kind = (y: number) => (Number.isNaN(y) ? 'NaN' : Number.isFinite(y) ? 'finite' : String(y));
      expect(want.map(kind)).toEqual(rows.map(([, , , loss]) => loss));
      expect(got.map(kind)).toEqual(want.map(kind));
      expect(got[5]).toBe(0);
      const finite = [0, 5, 6];
      assertClose(
        finite.map((r) => want[r]!),
        finite.map((r) => got[r]!),
      );
    });
  });

  describe('embedding', () => {
    const ref = (w: number[], d: number, ids: number[]) => ids.flatMap((id) => w.slice(id * d, (id + 1) * d));

    it.each(SIZES)('D = %i, host ids', async (d) => {
      const w = await input([50, d], 21, backend);
      const ids = [0, 49, 7, 7, 23];
      const out = await embedding(w.t, ids);
      expect(out.shape).toEqual([5, d]);
      assertClose(ref(w.v, d, ids), await out.data(), { rtol: 0, atol: 0 });
      const shaped = await embedding(w.t, [1, 2, 3, 4], { shape: [2, 2] });
      expect(shaped.shape).toEqual([2, 2, d]);
      assertClose(ref(w.v, d, [1, 2, 3, 4]), await shaped.data(), { rtol: 0, atol: 0 });
    });

    it.each(['i32', 'u32'] as const)('%s id tensor keeps its shape', async (dtype) => {
      const w = await input([20, 63], 22, backend);
      const ids = [19, 0, 5, 5, 12, 1];
      const out = await embedding(w.t, tensor(ids, [2, 3], { dtype, backend }));
      expect(out.shape).toEqual([2, 3, 63]);
      assertClose(ref(w.v, 63, ids), await out.data(), { rtol: 0, atol: 0 });
    });

    it.each(HALVES)('%s weight', async (dtype) => {
      const w = await input([30, 65], 23, backend, { dtype });
      const out = await embedding(w.t, [29, 3, 0]);
      expect(out.dtype).toBe('f32');
      assertClose(ref(w.v, 65, [29, 3, 0]), await out.data(), { rtol: 0, atol: 0 });
    });

    it('an out-of-range id in a tensor gives a row of NaN and nothing else changes', async () => {
      const w = await input([10, 33], 24, backend);
      const data = await (await embedding(w.t, tensor([2, -1, 10, 9, 1000000], [5], { dtype: 'i32', backend }))).data();
      for (const r of [1, 2, 4]) expect(Array.from(data.slice(r * 33, (r + 1) * 33)).every(Number.isNaN)).toBe(true);
      assertClose(ref(w.v, 33, [2, 9]), [...data.slice(0, 33), ...data.slice(99, 132)], { rtol: 0, atol: 0 });
    });

    it('host ids are checked', async () => {
      const w = await input([10, 4], 25, backend);
      await expect(embedding(w.t, [1, 2, 10])).rejects.toThrow(InputError);
      await expect(embedding(w.t, [1, 2, 10])).rejects.toThrow(/id 10 at position 2 is not an integer in \[0, 10\)/);
      await expect(embedding(w.t, [-1])).rejects.toThrow(/id -1 at position 0/);
      await expect(embedding(w.t, [0, 1.5])).rejects.toThrow(/id 1.5 at position 1/);
      await expect(embedding(w.t, [0, 1, 2], { shape: [2, 2] })).rejects.toThrow(/options.shape \[2, 2\] holds 4 ids, got 3/);
    });
  });

  describe('activations and mixes', () => {
    const cap = 5;
    const [c0, c10] = [XIELU_GOLF_COEFFICIENTS[0]!, XIELU_GOLF_COEFFICIENTS[10]!];
    const xieluRef = ({ ap, an, bp, bn }: typeof c0) => (u: number) => (u > 0 ? ap * u * u + bp * u : an * u * u + bn * u);
    /** name, run on inputs [x, y, wa, wb] of shape [rows, d], and the reference at element i of a row of d. */
    const CASES: [string, (t: Tensor[]) => Promise<Tensor>, (v: number[][], i: number, d: number) => number][] = [
      ['silu', ([x]) => silu(x!), ([x], i) => siluRef(x![i]!)],
      ['gelu', ([x]) => gelu(x!), ([x], i) => 0.5 * x![i]! * (1 + erf(x![i]! / Math.SQRT2))],
      ['gelu tanh', ([x]) => gelu(x!, { approximate: 'tanh' }), ([x], i) => 0.5 * x![i]! * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x![i]! + 0.044715 * x![i]! ** 3)))],
      ['swiglu', ([x, y]) => swiglu(x!, y!), ([x, y], i) => siluRef(x![i]!) * y![i]!],
      ['xielu layer 0', ([x]) => xielu(x!, c0), ([x], i) => xieluRef(c0)(x![i]!)],
      ['xielu layer 10', ([x]) => xielu(x!, c10), ([x], i) => xieluRef(c10)(x![i]!)],
      ['softcap', ([x]) => softcap(x!, cap), ([x], i) => cap * Math.tanh(x![i]! / cap)],
      ['lerp', ([x, y]) => lerp(x!, y!, 0.3), ([x, y], i) => x![i]! + 0.3 * (y![i]! - x![i]!)],
      ['mix', ([x, y, wa, wb]) => mix(x!, y!, wa!, wb!), ([x, y, wa, wb], i, d) => wa![i % d]! * x![i]! + wb![i % d]! * y![i]!],
    ];

    async function check([name, run, ref]: (typeof CASES)[number], rows: number, d: number, dtype: DType) {
      const ins = await Promise.all([[rows, d], [rows, d], [d], [d]].map((shape, k) => input(shape, 26 + k, backend, { dtype, scale: 3 })));
      const out = await run(ins.map((x) => x.t));
      expect(out.shape).toEqual([rows, d]);
      expect(out.dtype).toBe('f32');
      const v = ins.map((x) => x.v);
      assertClose(Array.from({ length: rows * d }, (_, i) => ref(v, i, d)), await out.data(), { name: `${name} ${dtype} [${rows}, ${d}]` });
    }

    it.each(SIZES)('d = %i', async (d) => {
      for (const c of CASES) await check(c, 3, d, 'f32');
    });

    it.each(HALVES)('%s inputs', async (dtype) => {
      for (const c of CASES) await check(c, 2, 33, dtype);
    });

    it('extreme values stay finite', async () => {
      const v = [-100, -20, -8, -3, -1e-3, 0, 1e-4, 2, 9, 30, 100];
      const x = tensor(v, [v.length], { backend });
      assertClose(v.map(siluRef), await (await silu(x)).data(), { name: 'silu' });
      assertClose(v.map((u) => 0.5 * u * (1 + erf(u / Math.SQRT2))), await (await gelu(x)).data(), { name: 'gelu' });
      assertClose(v.map((u) => 0.5 * u * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (u + 0.044715 * u ** 3)))), await (await gelu(x, { approximate: 'tanh' })).data(), { name: 'gelu tanh' });
      assertClose(v.map((u) => cap * Math.tanh(u / cap)), await (await softcap(x, cap)).data(), { name: 'softcap' });
    });
  });

  describe('bad inputs are typed errors naming the tensor', () => {
    const f = (shape: number[], options: { dtype?: DType; name?: string } = {}) => tensor(new Array(shape.reduce((a, b) => a * b, 1)).fill(1), shape, { backend, ...options });

    it('wrong weight, bias and channel shapes', async () => {
      await expect(rmsNorm(f([2, 7]), f([8], { name: 'ln.weight' }))).rejects.toThrow(/rmsNorm: ln.weight has shape \[8\], expected \[7\] \(the last dim of x \[2, 7\]\)/);
      await expect(rmsNorm(f([2, 7]), f([8]))).rejects.toThrow(ShapeError);
      await expect(layerNorm(f([2, 7]), null, f([7, 1]))).rejects.toThrow(/layerNorm: bias has shape \[7, 1\], expected \[7\]/);
      await expect(mix(f([3, 4]), f([3, 4]), f([4]), f([3]))).rejects.toThrow(/mix: wb has shape \[3\], expected \[4\]/);
      await expect(swiglu(f([3, 4]), f([4, 3]))).rejects.toThrow(/swiglu: up has shape \[4, 3\], expected \[3, 4\]/);
      await expect(lerp(f([3]), f([4]), 0.5)).rejects.toThrow(ShapeError);
      await expect(softmax(f([]))).rejects.toThrow(/softmax: x has shape \[\], expected \[\.\.\., d\] with d >= 1/);
      await expect(embedding(f([10]), [1])).rejects.toThrow(/embedding: weight has shape \[10\], expected \[V, D\]/);
    });

    it('non-float inputs and float ids', async () => {
      await expect(silu(f([3], { dtype: 'i32' }))).rejects.toThrow(DTypeError);
      await expect(rmsNorm(f([2, 3]), f([3], { dtype: 'u8', name: 'w' }))).rejects.toThrow(/rmsNorm: w is u8, expected f32, f16 or bf16/);
      await expect(embedding(f([4, 2]), f([2], { name: 'tokens' }))).rejects.toThrow(/embedding: tokens is f32, expected i32 or u32/);
    });

    it('bad options', async () => {
      await expect(softcap(f([3]), 0)).rejects.toThrow(/softcap: cap must be > 0, got 0/);
      await expect(softcap(f([3]), -2)).rejects.toThrow(InputError);
      await expect(gelu(f([3]), { approximate: 'fast' as 'tanh' })).rejects.toThrow(InputError);
      await expect(rmsNorm(f([3]), null, { weightOffset: 1 })).rejects.toThrow(/weightOffset 1 needs a weight/);
      await expect(rmsNorm(f([3]), null, { scale: NaN })).rejects.toThrow(/rmsNorm: scale must be a finite number, got NaN/);
      await expect(rmsNorm(f([3]), f([3]), { scale: Infinity })).rejects.toThrow(InputError);
      await expect(rmsNorm(f([3]), null, { activation: 'gelu' as 'silu' })).rejects.toThrow(/rmsNorm: unknown activation 'gelu'/);
      await expect(rmsNorm(f([3]), null, { activation: 'gelu' as 'silu' })).rejects.toThrow(InputError);
      await expect(xielu(f([3]), { ap: 1, an: NaN, bp: 0, bn: 0 })).rejects.toThrow(/xielu: an must be a finite number/);
    });

    it('cross-entropy targets', async () => {
      await expect(crossEntropy(f([3, 5]), [0, 5, 1])).rejects.toThrow(/crossEntropy: target 5 at position 1 is not an integer in \[0, 5\)/);
      await expect(crossEntropy(f([3, 5]), [0, 1])).rejects.toThrow(/targets has 2 entries, expected 3/);
      await expect(crossEntropy(f([3, 5]), f([3], { dtype: 'i32' }).reshape([3, 1]))).rejects.toThrow(ShapeError);
      await expect(crossEntropy(f([2, 3, 5]), [0, 1])).rejects.toThrow(/logits has shape \[2, 3, 5\], expected \[N, V\]/);
    });
  });
});

it('XIELU_GOLF_COEFFICIENTS is the table of spec §3.5', () => {
  expect(XIELU_GOLF_COEFFICIENTS).toHaveLength(11);
  expect(XIELU_GOLF_COEFFICIENTS[0]).toEqual({ ap: 0.103, an: 0.39, bp: 0.126, bn: 0.785 });
  expect(XIELU_GOLF_COEFFICIENTS[7]).toEqual({ ap: 1.727, an: 0.983, bp: 0.067, bn: 0.571 });
  expect(XIELU_GOLF_COEFFICIENTS[10]).toEqual({ ap: 0.917, an: 0.845, bp: 0.568, bn: 0.52 });
  expect(XIELU_GOLF_COEFFICIENTS.map((c) => c.ap)).toEqual([0.103, 0.196, 1.415, 1.196, 1.485, 1.546, 1.337, 1.727, 1.495, 0.988, 0.917]);
});

import { type Backend, type DType, InputError, NumericsError, Rng, ShapeError, cpu, tensor } from '@phalanx/core';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';
import { NON_FINITE, type SampleOptions, greedy, readIds, sample, sampleIds } from '../src/sampling.js';

const { backends } = await testBackends();

function normals(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.normal());
}

/** The lowest index of the largest value. */
function argmax(row: number[]): number {
  return row.indexOf(Math.max(...row));
}

/** The float64 distribution `sample` draws from, written from its doc comment with a plain sort. */
function keptProbabilities(logits: number[], { temperature = 1, topK = 0, topP = 1 }: SampleOptions): number[] {
  const z = logits.map((v) => v / temperature);
  const desc = [...z].sort((a, b) => b - a);
  const cutK = topK > 0 && topK < z.length ? desc[topK - 1]! : -Infinity;
  const w = z.map((v) => (v >= cutK ? Math.exp(v - desc[0]!) : 0));
  const total = w.reduce((a, b) => a + b, 0);
  // top-p: keep a token iff the kept mass strictly above its logit is < p
  const order = z.map((_, i) => i).sort((a, b) => z[b]! - z[a]!);
  const kept = z.map(() => false);
  let prefix = 0;
  let above = 0;
  order.forEach((i, j) => {
    if (j > 0 && z[i]! < z[order[j - 1]!]!) above = prefix;
    kept[i] = w[i]! > 0 && above < topP * total;
    prefix += w[i]!;
  });
  const keptMass = w.reduce((m, wi, i) => (kept[i] ? m + wi : m), 0);
  return w.map((wi, i) => (kept[i] ? wi / keptMass : 0));
}

/**
 * Pearson's chi-square statistic of the counts of `ids` against `probs`, and its 0.1% critical value
 * (Wilson-Hilferty). The seeds are fixed, so each test is deterministic; the threshold only says how
 * unlikely a pass would be for a wrong distribution.
 */
function chiSquare(ids: number[], probs: number[]): { stat: number; critical: number } {
  const counts = probs.map(() => 0);
  for (const id of ids) counts[id]!++;
  let stat = 0;
  let df = -1;
  probs.forEach((p, i) => {
    if (p === 0) return;
    const e = p * ids.length;
    stat += (counts[i]! - e) ** 2 / e;
    df++;
  });
  const z = 3.09; // one-sided 0.1% point of the standard normal
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { stat, critical };
}

describe.each(backends)('sampling on $name', (backend: Backend) => {
  /** `rows` copies of one row of logits: many draws from one distribution in a single call. */
  const repeated = (row: number[], rows: number, dtype: DType = 'f32') => tensor(Array.from({ length: rows }, () => row).flat(), [rows, row.length], { backend, dtype });

  it('greedy is the argmax, lowest index on ties', async () => {
    const rows = 9;
    const vocab = 1001;
    // values on a coarse grid, so the maximum is often tied; row 0 ties at its first and last index
    const values = normals(rows * vocab, 1).map((v) => Math.round(v * 2) / 2);
    values[0] = 10;
    values[vocab - 1] = 10;
    const expected = Array.from({ length: rows }, (_, r) => argmax(values.slice(r * vocab, (r + 1) * vocab)));
    expect(expected[0]).toBe(0);
    const logits = tensor(values, [rows, vocab], { backend });
    expect(await greedy(logits)).toEqual(expected);
    expect(await sample(logits, { temperature: 0 })).toEqual(expected);
    expect(await greedy(tensor([-1, -0, 0], [3], { backend }))).toEqual([1]);
  });

  it('greedy over rows of several argmax chunks (1024 logits each): ties across chunks, NaN in a later chunk', async () => {
    const vocab = 4099; // 5 chunks, the last one short
    const values = normals(3 * vocab, 5).map((v) => Math.round(v * 2) / 2);
    values[3000] = 9; // row 0: tied maxima in chunks 2 and 0, the first wins
    values[1023] = 9;
    values[vocab + 4098] = 9; // row 1: in the short last chunk
    values[2 * vocab + 3100] = NaN; // row 2: NaN in chunks 3 and 2, the first is reported
    values[2 * vocab + 2100] = NaN;
    const logits = tensor(values, [3, vocab], { backend, name: 'head' });
    await expect(greedy(logits)).rejects.toThrow(new NumericsError('sample head: row 2 holds NaN or +Infinity, first at index 2100'));
    const finite = tensor(values.slice(0, 2 * vocab), [2, vocab], { backend });
    expect(await greedy(finite)).toEqual([1023, 4098]);
  });

  it('topK = 1 is greedy', async () => {
    const logits = tensor(normals(40 * 37, 2), [40, 37], { backend });
    expect(await sample(logits, { topK: 1, temperature: 3, seed: 1 })).toEqual(await greedy(logits));
  });

  it('draws from softmax(logits) (chi-square on 2000 draws)', async () => {
    const probs = [0.1, 0.2, 0.3, 0.15, 0.25];
    const ids = await sample(repeated(probs.map(Math.log), 2000), { seed: 3 });
    const { stat, critical } = chiSquare(ids, probs);
    expect(stat).toBeLessThan(critical);
  });

  it('scales by temperature', async () => {
    const probs = [0.05, 0.6, 0.1, 0.25];
    for (const temperature of [0.5, 2]) {
      const ids = await sample(repeated(probs.map(Math.log), 2000), { temperature, seed: 4 });
      const expected = keptProbabilities(probs.map(Math.log), { temperature }); // proportional to probs^(1/T)
      const { stat, critical } = chiSquare(ids, expected);
      expect(stat).toBeLessThan(critical);
      // and not the untempered distribution
      expect(chiSquare(ids, probs).stat).toBeGreaterThan(chiSquare(ids, probs).critical);
    }
  });

  it('top-k returns only the k most likely ids, with renormalised frequencies', async () => {
    const row = normals(50, 5);
    const ids = await sample(repeated(row, 1000), { topK: 5, seed: 5 });
    const top5 = row.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]).slice(0, 5).map(([, i]) => i);
    expect(ids.every((id) => top5.includes(id))).toBe(true);
    const { stat, critical } = chiSquare(ids, keptProbabilities(row, { topK: 5 }));
    expect(stat).toBeLessThan(critical);
  });

  it('top-p with a small p returns only the head', async () => {
    const probs = [0.1, 0.5, 0.3, 0.1];
    const logits = repeated(probs.map(Math.log), 500);
    expect(new Set(await sample(logits, { topP: 0.4, seed: 6 }))).toEqual(new Set([1]));
    // 0.5 < 0.6, so the next most likely token joins; they are drawn 5 : 3
    const ids = await sample(logits, { topP: 0.6, seed: 7 });
    expect(new Set(ids)).toEqual(new Set([1, 2]));
    const { stat, critical } = chiSquare(ids, [0, 5 / 8, 3 / 8, 0]);
    expect(stat).toBeLessThan(critical);
  });

  it('combines temperature, top-k and top-p in that order', async () => {
    const row = normals(20, 8).map((v) => 2 * v);
    const options = { temperature: 1.5, topK: 8, topP: 0.7 };
    const expected = keptProbabilities(row, options);
    const ids = await sample(repeated(row, 2000), { ...options, seed: 8 });
    expect(ids.every((id) => expected[id]! > 0)).toBe(true);
    const { stat, critical } = chiSquare(ids, expected);
    expect(stat).toBeLessThan(critical);
  });

  it('is reproducible: the same seed gives the same ids, rng streams over calls', async () => {
    const logits = tensor(normals(64 * 30, 9), [64, 30], { backend });
    const a = await sample(logits, { seed: 42, topP: 0.9 });
    expect(await sample(logits, { seed: 42, topP: 0.9 })).toEqual(a);
    expect(await sample(logits, { seed: 43, topP: 0.9 })).not.toEqual(a);
    const rng = new Rng(42);
    expect(await sample(logits, { rng, topP: 0.9 })).toEqual(a);
    expect(await sample(logits, { rng, topP: 0.9 })).not.toEqual(a); // rng moved on
  });

  it('picks the same ids as the CPU for the same seed', async () => {
    // a coarse grid: many ties, and -0 beside 0 (equal logits)
    const values = normals(300 * 41, 10).map((v) => Math.round(v * 4) / 4);
    const logits = tensor(values, [300, 41], { backend });
    const onCpu = tensor(values, [300, 41], { backend: cpu });
    for (const options of [{}, { topK: 7 }, { topP: 0.8, temperature: 0.7 }, { topK: 20, topP: 0.5 }]) {
      expect(await sample(logits, { ...options, seed: 11 })).toEqual(await sample(onCpu, { ...options, seed: 11 }));
    }
    // long rows (the per-row pass takes its widest workgroup there): 6 rows of 20,000 logits, coarse values
    const wide = normals(6 * 20_000, 14).map((v) => Math.round(v * 8) / 8);
    const [g, c] = [tensor(wide, [6, 20_000], { backend }), tensor(wide, [6, 20_000], { backend: cpu })];
    for (const options of [{ temperature: 0.9 }, { topK: 40 }, { topP: 0.9, temperature: 0.8 }, { topK: 50, topP: 0.95, temperature: 0.8 }]) {
      expect(await sample(g, { ...options, seed: 12 })).toEqual(await sample(c, { ...options, seed: 12 }));
    }
  });

  it('handles long rows (V = 50,000 and 128,256)', async () => {
    for (const vocab of [50_000, 128_256]) {
      const row = normals(vocab, 12);
      row[vocab - 3] = 40; // all but certain to be drawn
      const logits = tensor(row, [1, vocab], { backend });
      expect(await greedy(logits)).toEqual([vocab - 3]);
      expect(await sample(logits, { seed: 12 })).toEqual([vocab - 3]);
      row[vocab - 3] = 0;
      const plain = tensor(row, [2, vocab / 2], { backend });
      const ids = await sample(plain, { topK: 50, topP: 0.9, seed: 13 });
      ids.forEach((id, r) => expect(keptProbabilities(row.slice((r * vocab) / 2, ((r + 1) * vocab) / 2), { topK: 50, topP: 0.9 })[id]).toBeGreaterThan(0));
    }
  });

  it('takes [V], rows of length 1, f16 and -Infinity logits', async () => {
    expect(await sample(tensor([0.5, 3, -1], [3], { backend }), { temperature: 0 })).toEqual([1]);
    expect(await sample(tensor([1, -5, 2], [3, 1], { backend }), { seed: 1, topK: 1, topP: 0.1 })).toEqual([0, 0, 0]);
    const masked = repeated([0, -Infinity, 0, -Infinity, 0], 300, 'f16');
    const ids = await sample(masked, { seed: 14 });
    expect(new Set(ids)).toEqual(new Set([0, 2, 4]));
  });

  it('refuses a row holding NaN or +Infinity with a NumericsError naming the row and the first such index', async () => {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      for (const bad of [NaN, Infinity]) {
        const row = normals(1000, 21);
        row[700] = bad;
        row[300] = bad;
        const logits = tensor([...normals(1000, 22), ...row], [2, 1000], { backend, dtype, name: 'head' });
        for (const options of [{ temperature: 0 }, { seed: 1 }, { seed: 1, topK: 5, topP: 0.5 }]) {
          await expect(sample(logits, options)).rejects.toThrow(new NumericsError('sample head: row 1 holds NaN or +Infinity, first at index 300'));
        }
      }
    }
    // a negative NaN too (its bits sort below every number)
    const negativeNaN = new Float32Array(new Uint32Array([0x3f800000, 0xffc00000, 0]).buffer);
    await expect(greedy(tensor(negativeNaN, [3], { backend }))).rejects.toThrow(/row 0 holds NaN or \+Infinity, first at index 1/);
  });

  it('sampleIds leaves the ids where the logits live (u32 [rows]); readIds reads them and reports marked rows', async () => {
    const logits = tensor([...normals(500, 31), ...normals(500, 32)], [2, 500], { backend, name: 'head' });
    const ids = await sampleIds(logits, { seed: 4, topK: 10 });
    expect([ids.backend, ids.dtype, ids.shape]).toEqual([backend, 'u32', [2]]);
    expect(await readIds(ids)).toEqual(await sample(logits, { seed: 4, topK: 10 }));
    expect(ids.disposed).toBe(false); // the caller's, e.g. to feed a forward
    ids.dispose();
    const marked = tensor([7, NON_FINITE + 12], [2], { dtype: 'u32', backend });
    await expect(readIds(marked, 'head')).rejects.toThrow(new NumericsError('sample head: row 1 holds NaN or +Infinity, first at index 12'));
    marked.dispose();
  });

  it('refuses bad shapes and options', async () => {
    const logits = tensor([1, 2, 3, 4], [2, 2], { backend, name: 'head' });
    await expect(sample(tensor([1, 2], [1, 1, 2], { backend, name: 'head' }))).rejects.toThrow(ShapeError);
    await expect(sample(tensor([1, 2], [1, 1, 2], { backend, name: 'head' }))).rejects.toThrow(/sample head: expected \[B, V\] or \[V\], got \[1, 1, 2\]/);
    await expect(sample(logits, { topP: 0 })).rejects.toThrow(/topP must be in \(0, 1\]/);
    await expect(sample(logits, { temperature: -1 })).rejects.toThrow(InputError);
    await expect(sample(logits, { topK: 1.5 })).rejects.toThrow(InputError);
    await expect(sample(logits, { seed: 1, rng: new Rng(1) })).rejects.toThrow(/seed or rng/);
  });
});

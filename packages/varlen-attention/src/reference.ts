import { type Tensor, cpu, cpuStorage, cpuValues, empty, registerKernel } from '@phalanx/core';
import { type ScoreAttrs, type VarlenAttentionAttrs, keyBounds } from './attention.js';
import type { KvAppendAttrs, KvAttendAttrs } from './cache.js';

/** A key/value row: offset `at` into the k and v arrays. */
interface KeyRow {
  k: ArrayLike<number>;
  v: ArrayLike<number>;
  at: number;
}

/**
 * The literal math of one query (float64): logit_j = softcap(mult * q . k_j), then softmax over the keys,
 * then sum_j p_j v_j, written to out[outAt ...].
 */
function attendRow(q: ArrayLike<number>, qAt: number, mult: number, softcap: number, keys: KeyRow[], D: number, out: { [i: number]: number }, outAt: number): void {
  const logits = keys.map(({ k, at }) => {
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q[qAt + d]! * k[at + d]!;
    const x = mult * dot;
    return softcap > 0 ? softcap * Math.tanh(x / softcap) : x;
  });
  const max = Math.max(...logits);
  const p = logits.map((x) => Math.exp(x - max));
  const sum = p.reduce((a, b) => a + b, 0);
  for (let d = 0; d < D; d++) {
    let acc = 0;
    keys.forEach(({ v, at }, j) => (acc += p[j]! * v[at + d]!));
    out[outAt + d] = acc / sum;
  }
}

/** The score inputs after q, k, v (or after the cache): the gain per head and the state rows, if present. */
function extras(a: ScoreAttrs, rest: Tensor[]) {
  const [gain, ks, vs] = (a.hasGain ? rest : [undefined, ...rest]).map((t) => (t ? cpuValues(t) : undefined));
  return { mult: (h: number) => a.scale * (gain ? gain[h]! : 1), state: (row: number): KeyRow[] => (ks ? [{ k: ks, v: vs!, at: row * a.D }] : []) };
}

function varlenAttention([q, k, v, ...rest]: Tensor[], a: VarlenAttentionAttrs): Tensor {
  const { T, Hq, Hkv, D } = a;
  const out = empty([T, Hq, D], { backend: cpu });
  const o = cpuStorage(out);
  const [qv, kv, vv] = [q!, k!, v!].map(cpuValues);
  const { mult, state } = extras(a, rest);
  const bounds = keyBounds(a);
  for (let i = 0; i < T; i++) {
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / (Hq / Hkv));
      const keys: KeyRow[] = state(i * Hkv + g);
      for (let j = bounds[2 * i]!; j <= bounds[2 * i + 1]!; j++) keys.push({ k: kv!, v: vv!, at: (j * Hkv + g) * D });
      attendRow(qv!, (i * Hq + h) * D, mult(h), a.softcap, keys, D, o, (i * Hq + h) * D);
    }
  }
  return out;
}

/** Writes the last `slots` new tokens of each sequence into the ring (slot = position mod slots), then the lengths. */
function kvAppend([k, v, seqs, cacheK, cacheV, positions]: Tensor[], { batch, slots, Hkv, D }: KvAppendAttrs): Tensor[] {
  const [kv, vv, m] = [k!, v!, seqs!].map(cpuValues);
  const [ck, cv, pos] = [cacheK!, cacheV!, positions!].map(cpuStorage);
  const row = Hkv * D;
  for (let b = 0; b < batch; b++) {
    const [start, end] = [m![batch + b]!, m![batch + b + 1]!];
    const first = m![b]! - (end - start); // position of the sequence's first new token
    for (let t = Math.max(start, end - slots); t < end; t++) {
      const at = (b * slots + ((first + t - start) % slots)) * row;
      for (let e = 0; e < row; e++) {
        ck![at + e] = kv![t * row + e]!;
        cv![at + e] = vv![t * row + e]!;
      }
    }
    pos![b] = m![b]!;
  }
  return [];
}

function kvAttend([q, cacheK, cacheV, positions, ...rest]: Tensor[], a: KvAttendAttrs): Tensor {
  const { batch, Hq, Hkv, D, slots, window } = a;
  const out = empty([batch, Hq, D], { backend: cpu });
  const o = cpuStorage(out);
  const [qv, ck, cv, pos] = [q!, cacheK!, cacheV!, positions!].map(cpuValues);
  const { mult, state } = extras(a, rest);
  for (let b = 0; b < batch; b++) {
    const t = pos![b]! - 1; // the position of this step's token
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / (Hq / Hkv));
      const keys: KeyRow[] = state(b * Hkv + g);
      for (let p = Math.max(0, t - window); p <= t; p++) keys.push({ k: ck!, v: cv!, at: ((b * slots + (p % slots)) * Hkv + g) * D });
      attendRow(qv!, (b * Hq + h) * D, mult(h), a.softcap, keys, D, o, (b * Hq + h) * D);
    }
  }
  return out;
}

// Registered on import (listed under sideEffects). kvAppend updates the cache in place.
registerKernel({ op: 'varlenAttention', backend: 'cpu', fn: varlenAttention });
registerKernel({ op: 'kvAppend', backend: 'cpu', fn: kvAppend });
registerKernel({ op: 'kvAttend', backend: 'cpu', fn: kvAttend });

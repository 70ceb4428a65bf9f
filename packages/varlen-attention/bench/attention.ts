/**
 * Attention benchmark cases (component `varlen-attention`): the flash prefill kernel (causal and
 * sliding-window) and the decode kernels. Run by tools/bench:
 * `npx phalanx bench varlen-attention [--quick] [--case NAME]... [--rows 4|8] [--split 0|1]` (the
 * split layout is used where it fits unless --split says otherwise). Each case is spot-checked
 * against float64 attention on the host. PyTorch counterpart: tools/reference/bench_attention.py.
 */
import { Rng, type Tensor, compareClose, randn, runKernel } from '@phalanx/core';
import { type CaseContext, type CaseSpec, type Timed, defineCases, disposeAll } from '../../../tools/bench/harness.js';
import { DEFAULT_PREFILL_TILE } from '../src/webgpu/prefill.js';
import { type KvAttendAttrs, type VarlenAttentionAttrs, appendKv, createKvCache, keyBounds, varlenAttention } from '../src/index.js';

interface Case {
  name: string;
  kind: 'prefill' | 'decode';
  /** Tokens (prefill) or context length (decode). */
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  window?: number;
  /** Prefill: documents of this length packed back to back (default one document). */
  docLen?: number;
}

const H = { Hq: 32, Hkv: 32, D: 64 };
const FULL: Case[] = [
  { name: 'causal-2048', kind: 'prefill', T: 2048, ...H },
  { name: 'causal-8192', kind: 'prefill', T: 8192, ...H },
  { name: 'causal-8192-docs-1024', kind: 'prefill', T: 8192, docLen: 1024, ...H },
  ...[2048, 8192, 32768].map((T): Case => ({ name: `window512-${T}`, kind: 'prefill', T, window: 512, ...H })),
  { name: 'decode-8192', kind: 'decode', T: 8192, Hq: 32, Hkv: 8, D: 64 },
  { name: 'decode-window512-8192', kind: 'decode', T: 8192, Hq: 32, Hkv: 8, D: 64, window: 512 },
];

const QUICK: Case[] = [
  { name: 'causal-256', kind: 'prefill', T: 256, Hq: 4, Hkv: 2, D: 64 },
  { name: 'window32-256', kind: 'prefill', T: 256, Hq: 4, Hkv: 2, D: 64, window: 32 },
  { name: 'decode-600', kind: 'decode', T: 600, Hq: 4, Hkv: 2, D: 64 },
];

/** float64 attention of a few (query, head) rows against the kernel's output: relative RMSE (NaN fails). */
function spotCheck(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, out: ArrayLike<number>, rows: [number, number, number, number][], c: Case) {
  const { Hq, Hkv, D } = c;
  const ref: number[] = [];
  const got: number[] = [];
  for (const [qAt, outAt, lo, hi] of rows) {
    const h = (qAt / D) % Hq;
    const g = Math.floor(h / (Hq / Hkv));
    const logits: number[] = [];
    for (let j = lo; j <= hi; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += q[qAt + d]! * k[((j * Hkv + g) * D) + d]!;
      logits.push(s / Math.sqrt(D));
    }
    const mx = Math.max(...logits);
    const e = logits.map((x) => Math.exp(x - mx));
    const sum = e.reduce((a, b) => a + b, 0);
    for (let d = 0; d < D; d++) {
      ref.push(e.reduce((acc, p, n) => acc + p * v[((lo + n) * Hkv + g) * D + d]!, 0) / sum);
      got.push(out[outAt + d]!);
    }
  }
  const r = compareClose(ref, got, { rtol: 1e-5 });
  return { relRmse: r.relRmse, ok: r.ok };
}

async function prefill(ctx: CaseContext, c: Case): Promise<Timed> {
  const { T, Hq, Hkv, D } = c;
  const rows = Number(ctx.option('rows'));
  if (rows === 4 || rows === 8) DEFAULT_PREFILL_TILE.rows = rows;
  const split = ctx.option('split');
  if (split === '0' || split === '1') DEFAULT_PREFILL_TILE.split = split === '1';
  const g = ctx.backend;
  const cuSeqlens = Array.from({ length: Math.ceil(T / (c.docLen ?? T)) + 1 }, (_, n) => Math.min(T, n * (c.docLen ?? T)));
  const attrs: VarlenAttentionAttrs = { T, Hq, Hkv, D, scale: 1 / Math.sqrt(D), softcap: 0, hasGain: false, hasState: false, cuSeqlens, causal: true, window: c.window ?? Infinity };
  const [q, k, v] = [Hq, Hkv, Hkv].map((heads, i) => randn([T, heads, D], { seed: i + 1, backend: g }));
  const bounds = keyBounds(attrs);
  // the public op, so the timing covers whichever kernels it routes to
  const attend = () => varlenAttention({ q: q!, k: k!, v: v! }, { cuSeqlens, window: c.window });
  let pairs = 0; // (query, key) pairs the mask keeps, per head
  for (let i = 0; i < T; i++) pairs += bounds[2 * i + 1]! - bounds[2 * i]! + 1;
  const flops = 4 * pairs * D * Hq;
  return {
    run: async () => (await attend()).dispose(),
    flops,
    bytes: (T * Hq * D * 2 + T * Hkv * D * 2) * 4,
    derive: (ms) => ({ TFLOPs: flops / ms / 1e9 }),
    check: async () => {
      const out = await attend();
      const rng = new Rng(7);
      const picked = Array.from({ length: 16 }, (): [number, number, number, number] => {
        const [i, h] = [rng.int(T), rng.int(Hq)];
        return [(i * Hq + h) * D, (i * Hq + h) * D, bounds[2 * i]!, bounds[2 * i + 1]!];
      });
      try {
        return spotCheck(await q!.data(), await k!.data(), await v!.data(), await out.data(), picked, c);
      } finally {
        out.dispose();
      }
    },
    dispose: () => disposeAll(q, k, v),
  };
}

async function decode(ctx: CaseContext, c: Case): Promise<Timed> {
  const { T, Hq, Hkv, D } = c;
  const g = ctx.backend;
  const cache = createKvCache({ batch: 1, heads: Hkv, dim: D, capacity: T, window: c.window, backend: g });
  const [k, v] = [2, 3].map((seed) => randn([T, Hkv, D], { seed, backend: g }));
  await appendKv(cache, { k: k!, v: v! });
  const q = randn([1, Hq, D], { seed: 1, backend: g });
  const keys = Math.min(T, cache.window + 1);
  const attrs: KvAttendAttrs = { Hq, Hkv, D, scale: 1 / Math.sqrt(D), softcap: 0, hasGain: false, hasState: false, batch: 1, slots: cache.slots, window: cache.window, maxKeys: keys };
  let out: Tensor | undefined;
  const rows = Array.from({ length: Hq }, (_, h): [number, number, number, number] => [h * D, h * D, T - keys, T - 1]);
  return {
    run: async () => {
      out?.dispose();
      out = (await runKernel('kvAttend', [q, cache.k, cache.v, cache.positions], attrs))[0]!;
    },
    bytes: 2 * keys * Hkv * D * 4, // the cached keys and values it reads
    check: async () => spotCheck(await q.data(), await k!.data(), await v!.data(), await out!.data(), rows, c),
    dispose: () => {
      disposeAll(q, k, v, out);
      cache.dispose();
    },
  };
}

const spec = (c: Case, sets: CaseSpec['sets']): CaseSpec => ({
  name: c.name,
  shape: { kind: c.kind, T: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, window: c.window, docLen: c.docLen },
  sets,
  // the full sizes are GPU work; the float64 CPU reference runs the small ones
  backends: sets?.includes('quick') ? ['webgpu', 'cpu'] : ['webgpu'],
  setup: (ctx) => (c.kind === 'prefill' ? prefill(ctx, c) : decode(ctx, c)),
});

export const cases = defineCases('varlen-attention', [...FULL.map((c) => spec(c, ['full'])), ...QUICK.map((c) => spec(c, ['quick']))]);

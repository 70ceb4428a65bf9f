/**
 * Attention benchmark on WebGPU: the flash prefill kernel (causal and sliding-window) and the decode kernels.
 * A script until tools/bench exists: `node attention.mjs [--quick] [--case NAME]... [--reps N]`. Each result
 * is one JSON line on stdout. GPU times come from timestamp queries around each pass (median of the repeats).
 */
import { Rng, type Tensor, compareClose, randn, runKernel, tensor } from '@phalanx/core';
import { type WebGPUBackend, createWebGPUBackend } from '@phalanx/webgpu';
import { type KvAttendAttrs, type VarlenAttentionAttrs, appendKv, createKvCache, keyBounds } from '../src/index.js';
import { BLOCK_Q, prefillProgram } from '../src/webgpu/prefill.js';

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

/**
 * Per-kernel GPU medians of `reps` runs of `dispatch`, recorded back to back after ~100 ms of warm-up (so the
 * GPU runs at its working clocks), and the wall-clock time per run as a cross-check.
 */
async function gpuMs(g: WebGPUBackend, dispatch: () => Promise<void>, reps: number) {
  const t0 = performance.now();
  await dispatch();
  await g.sync();
  const firstMs = performance.now() - t0;
  for (let warm = performance.now(); performance.now() - warm < 100; ) {
    for (let i = 0; i < 8; i++) await dispatch();
    await g.sync();
  }
  const p = g.profile('timestamp');
  const t1 = performance.now();
  for (let i = 0; i < reps; i++) await dispatch();
  await g.sync();
  const wallMs = (performance.now() - t1) / reps;
  const { kernels } = await p.stop();
  const medianMs = kernels.reduce((s, k) => s + k.medianMs, 0);
  return { medianMs, kernels: kernels.map((k) => ({ name: k.name, medianMs: k.medianMs, minMs: k.minMs })), wallMs, firstMs };
}

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

async function prefill(g: WebGPUBackend, c: Case, reps: number) {
  const { T, Hq, Hkv, D } = c;
  const cuSeqlens = Array.from({ length: Math.ceil(T / (c.docLen ?? T)) + 1 }, (_, n) => Math.min(T, n * (c.docLen ?? T)));
  const attrs: VarlenAttentionAttrs = { T, Hq, Hkv, D, scale: 1 / Math.sqrt(D), softcap: 0, hasGain: false, hasState: false, cuSeqlens, causal: true, window: c.window ?? Infinity };
  const [q, k, v] = [Hq, Hkv, Hkv].map((heads, i) => randn([T, heads, D], { seed: i + 1, backend: g }));
  const bounds = keyBounds(attrs);
  const boundsT = tensor(bounds, [2 * T], { dtype: 'u32', backend: g });
  const out = randn([T, Hq, D], { seed: 9, backend: g });
  const prog = prefillProgram(attrs, [q!, k!, v!]);
  const t = await gpuMs(g, () => g.run(prog, [q!, k!, v!, boundsT], [out], { T, Hq, Hkv, scale: attrs.scale, softcap: 0 }, [Math.ceil(T / BLOCK_Q), Hq, 1]), reps);
  const rng = new Rng(7);
  const rows = Array.from({ length: 16 }, (): [number, number, number, number] => {
    const [i, h] = [rng.int(T), rng.int(Hq)];
    return [(i * Hq + h) * D, (i * Hq + h) * D, bounds[2 * i]!, bounds[2 * i + 1]!];
  });
  const check = spotCheck(await q!.data(), await k!.data(), await v!.data(), await out.data(), rows, c);
  let pairs = 0; // (query, key) pairs the mask keeps, per head
  for (let i = 0; i < T; i++) pairs += bounds[2 * i + 1]! - bounds[2 * i]! + 1;
  const flops = 4 * pairs * D * Hq;
  [q, k, v, boundsT, out].forEach((x) => x!.dispose());
  return { check, ...t, TFLOPs: flops / t.medianMs / 1e9 };
}

async function decode(g: WebGPUBackend, c: Case, reps: number) {
  const { T, Hq, Hkv, D } = c;
  const cache = createKvCache({ batch: 1, heads: Hkv, dim: D, capacity: T, window: c.window, backend: g });
  const [k, v] = [2, 3].map((seed) => randn([T, Hkv, D], { seed, backend: g }));
  await appendKv(cache, { k: k!, v: v! });
  const q = randn([1, Hq, D], { seed: 1, backend: g });
  const keys = Math.min(T, cache.window + 1);
  const attrs: KvAttendAttrs = { Hq, Hkv, D, scale: 1 / Math.sqrt(D), softcap: 0, hasGain: false, hasState: false, batch: 1, slots: cache.slots, window: cache.window, maxKeys: keys };
  let out: Tensor | undefined;
  const t = await gpuMs(g, async () => {
    out?.dispose();
    out = (await runKernel('kvAttend', [q, cache.k, cache.v, cache.positions], attrs))[0]!;
  }, reps);
  const rows = Array.from({ length: Hq }, (_, h): [number, number, number, number] => [h * D, h * D, T - keys, T - 1]);
  const check = spotCheck(await q.data(), await k!.data(), await v!.data(), await out!.data(), rows, c);
  const bytes = 2 * keys * Hkv * D * 4; // the cached keys and values it reads
  [q, k!, v!, out!].forEach((x) => x.dispose());
  cache.dispose();
  return { check, ...t, GBps: bytes / t.medianMs / 1e6 };
}

async function main() {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const only = args.flatMap((a, i) => (args[i - 1] === '--case' ? [a] : []));
  const reps = Number(args[args.indexOf('--reps') + 1]) || (quick ? 5 : 30);
  const cases = (quick ? QUICK : FULL).filter((c) => only.length === 0 || only.includes(c.name));
  // Dawn quantizes timestamps (to ~33 us on NVIDIA) unless told not to.
  const g = await createWebGPUBackend({ maxPassesPerSubmit: 8, dawnFlags: ['enable-dawn-features=allow_unsafe_apis', 'disable-dawn-features=timestamp_quantization'] });
  const device = `${g.info.vendor} ${g.info.architecture} ${g.info.description}`.trim();
  console.error(`device: ${device}`);
  for (const c of cases) {
    const r = c.kind === 'prefill' ? await prefill(g, c, reps) : await decode(g, c, reps);
    console.log(JSON.stringify({ device, date: new Date().toISOString().slice(0, 10), ...c, ...r }));
  }
  g.dispose();
}

await main();

/**
 * Matmul / GEMV benchmark on WebGPU, with the device's copy bandwidth measured in the same process.
 * A script until tools/bench exists: `node matmul.mjs [--quick] [--case NAME]... [--tile BMxBNxBKxTMxTN]`.
 * Each result is one JSON line on stdout. GPU times come from timestamp queries around each pass (median
 * of the repeats); every repeat is its own submit, awaited, to keep dawn.node stable on NVIDIA.
 */
import { type DType, Rng, type Tensor, compareClose, randn, tensor } from '@phalanx/core';
import { type WebGPUBackend, grid1d, program, timeOnGpu } from '@phalanx/webgpu';
import { benchMain } from '../../../tools/bench/harness.js';
import { linear } from '../src/linear.js';
import { type GemmTile, type GemvShape, DEFAULT_GEMV, DEFAULT_TILE, gemmProgram, gemvProgram } from '../src/webgpu/linear.js';

interface Case {
  name: string;
  kind: 'empty' | 'copy' | 'read' | 'write' | 'matmul' | 'gemv';
  M: number;
  N: number;
  K: number;
  transB?: boolean;
  wDType?: DType;
}

const FULL: Case[] = [
  // the fixed cost of one timed pass: one workgroup writing one float
  { name: 'empty-pass', kind: 'empty', M: 0, N: 0, K: 0 },
  { name: 'copy-1GiB', kind: 'copy', M: 0, N: 0, K: 2 ** 28 },
  { name: 'copy-64MiB', kind: 'copy', M: 0, N: 0, K: 2 ** 24 },
  // the two halves of a copy apart: which one limits the bandwidth WGSL reaches
  { name: 'read-1GiB', kind: 'read', M: 0, N: 0, K: 2 ** 28 },
  { name: 'write-1GiB', kind: 'write', M: 0, N: 0, K: 2 ** 28 },
  { name: 'matmul-2048', kind: 'matmul', M: 2048, N: 2048, K: 2048 },
  { name: 'matmul-4096', kind: 'matmul', M: 4096, N: 4096, K: 4096 },
  { name: 'linear-4096', kind: 'matmul', M: 4096, N: 4096, K: 4096, transB: true },
  { name: 'gemv-4096x4096', kind: 'gemv', M: 1, N: 4096, K: 4096 },
  { name: 'gemv-2048x8192', kind: 'gemv', M: 1, N: 2048, K: 8192 },
  { name: 'gemv-8192x2048', kind: 'gemv', M: 1, N: 8192, K: 2048 },
  { name: 'gemv-4096x4096-bf16', kind: 'gemv', M: 1, N: 4096, K: 4096, wDType: 'bf16' },
  { name: 'gemv-16384x8192', kind: 'gemv', M: 1, N: 16384, K: 8192 },
  // quantized weights: one signed byte per weight and one scale per row, through the public linear op
  { name: 'gemv-4096x4096-i8', kind: 'gemv', M: 1, N: 4096, K: 4096, wDType: 'i8' },
  { name: 'gemv-2048x8192-i8', kind: 'gemv', M: 1, N: 2048, K: 8192, wDType: 'i8' },
];

const QUICK: Case[] = [
  { name: 'copy-16MiB', kind: 'copy', M: 0, N: 0, K: 2 ** 22 },
  { name: 'matmul-256', kind: 'matmul', M: 256, N: 256, K: 256 },
  { name: 'gemv-1024x1024', kind: 'gemv', M: 1, N: 1024, K: 1024 },
];

function parseTile(s: string | undefined): GemmTile {
  if (!s) return DEFAULT_TILE;
  const [BM, BN, BK, TM, TN] = s.split('x').map(Number) as [number, number, number, number, number];
  return { BM, BN, BK, TM, TN };
}

/** The kernel's result at 256 random entries against float64 dot products: relative RMSE (NaN fails). */
async function spotCheck(a: ArrayLike<number>, b: ArrayLike<number>, out: ArrayLike<number>, M: number, N: number, K: number, transB: boolean) {
  const rng = new Rng(7);
  const ref: number[] = [];
  const got: number[] = [];
  for (let s = 0; s < 256; s++) {
    const m = rng.int(M);
    const n = rng.int(N);
    let acc = 0;
    for (let k = 0; k < K; k++) acc += a[m * K + k]! * b[transB ? n * K + k : k * N + n]!;
    ref.push(acc);
    got.push(out[m * N + n]!);
  }
  const r = compareClose(ref, got, { rtol: 1e-5 });
  return { relRmse: r.relRmse, ok: r.ok };
}

async function run(g: WebGPUBackend, c: Case, tile: GemmTile, gemv: GemvShape, perThread: number, reps: number) {
  const seed = 1;
  if (c.kind === 'empty') {
    const y = randn([1], { seed, backend: g });
    const prog = program({ name: 'empty', outputs: { y: 'f32' }, workgroupSize: 1, main: '  y[0] = 1.0;' });
    return timeOnGpu(g, () => g.run(prog, [], [y], {}, [1, 1, 1]), { reps });
  }
  if (c.kind === 'copy' || c.kind === 'read' || c.kind === 'write') {
    const n = c.K;
    const x = randn([n], { seed, backend: g });
    const y = randn([c.kind === 'read' ? 256 * 4 : n], { seed: 2, backend: g });
    // each workgroup moves perThread x 256 vec4s, each warp's accesses contiguous; a read-only pass keeps one
    // sum per invocation and writes it only if it is impossible (so nothing is written, yet nothing is elided);
    // the same dead branch keeps x bound in the write-only pass
    const move = { copy: 'y[i] = x[i];', read: 'acc += x[i];', write: 'y[i] = vec4<f32>(f32(i));' }[c.kind];
    const prog = program({
      name: `${c.kind}4`,
      inputs: { x: 'f32' },
      outputs: { y: 'f32' },
      views: { x: 'vec4<f32>', y: 'vec4<f32>' },
      uniforms: { n4: 'u32' },
      workgroupSize: 256,
      main: `  let base = (wid.x + wid.y * nwg.x) * ${256 * perThread}u + lid.x;
  var acc = vec4<f32>(0.0);
  for (var j = 0u; j < ${perThread}u; j++) { let i = base + j * 256u; if (i < u.n4) { ${move} } }
  if (acc.x == -12345.678) { y[lid.x] = acc + x[lid.x]; }`,
    });
    const t = await timeOnGpu(g, () => g.run(prog, [x], [y], { n4: n / 4 }, grid1d(n / 4 / perThread, 256, g.limits.maxComputeWorkgroupsPerDimension)), { reps });
    const bytes = (c.kind === 'copy' ? 2 : 1) * 4 * n;
    return { perThread, ...t, bytes, GBps: bytes / t.medianMs / 1e6 };
  }
  const { M, N, K } = c;
  if (c.wDType === 'i8') return quantizedGemv(g, c, reps);
  const transB = c.transB ?? c.kind === 'gemv';
  const hostA = randn([M, K], { seed });
  const hostB = randn(transB ? [N, K] : [K, N], { seed: 2, dtype: c.wDType ?? 'f32' });
  const a = await hostA.to(g);
  const b = await hostB.to(g);
  const out = randn([M, N], { seed: 3, backend: g });
  const inputs: Tensor[] = [a, b];
  const dispatch =
    c.kind === 'gemv'
      ? () => g.run(gemvProgram('f32', b.dtype, M, {}, gemv), inputs, [out], { N, K }, grid1d(N, gemv.rowsPerGroup, g.limits.maxComputeWorkgroupsPerDimension))
      : () => g.run(gemmProgram('f32', b.dtype, transB, {}, K % 4 === 0 && N % 4 === 0, tile), inputs, [out], { M, N, K, bBatchStride: 0 }, [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), 1]);
  const t = await timeOnGpu(g, dispatch, { reps });
  const check = await spotCheck(await hostA.data(), await hostB.data(), await out.data(), M, N, K, transB);
  const flops = 2 * M * N * K;
  const bytes = (M * K + M * N) * 4 + N * K * (b.dtype === 'f32' ? 4 : 2);
  return { shape: c.kind === 'matmul' ? tile : gemv, check, ...t, TFLOPs: flops / t.medianMs / 1e9, GBps: bytes / t.medianMs / 1e6 };
}

/** y = (x codes^T) * scale with 6-bit-range codes stored one per byte, as the quantizer's artifacts hold them. */
async function quantizedGemv(g: WebGPUBackend, c: Case, reps: number) {
  const { M, N, K } = c;
  const rng = new Rng(5);
  const codes = Int8Array.from({ length: N * K }, () => rng.int(63) - 31);
  const scales = Float32Array.from({ length: N }, () => 0.01 + 0.05 * rng.uniform());
  const hostX = randn([M, K], { seed: 1 });
  const x = await hostX.to(g);
  const w = tensor(codes, [N, K], { backend: g });
  const s = tensor(scales, [N], { backend: g });
  const t = await timeOnGpu(g, async () => (await linear(x, w, null, { rowScale: s })).dispose(), { reps });
  const y = await linear(x, w, null, { rowScale: s });
  const dequant = Float32Array.from(codes, (q, i) => q * scales[Math.floor(i / K)]!);
  const check = await spotCheck(await hostX.data(), dequant, await y.data(), M, N, K, true);
  const bytes = N * K + N * 4 + (M * K + M * N) * 4;
  return { check, ...t, GBps: bytes / t.medianMs / 1e6 };
}

const option = (name: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const tile = parseTile(option('--tile'));
const [rowsPerGroup, lanes, unroll] = (option('--gemv') ?? '').split('x').map(Number);
const gemv = rowsPerGroup && lanes && unroll ? { rowsPerGroup, lanes, unroll } : DEFAULT_GEMV;

await benchMain({ full: FULL, quick: QUICK, reps: [50, 5], run: (g, c, reps) => run(g, c, tile, gemv, Number(option('--copy')) || 4, reps) });

/**
 * Matmul / GEMV benchmark on WebGPU, with the device's copy bandwidth measured in the same process.
 * A script until tools/bench exists: `node matmul.mjs [--quick] [--case NAME]... [--tile BMxBNxBKxTMxTN]`.
 * Each result is one JSON line on stdout. GPU times come from timestamp queries around each pass (median
 * of the repeats); every repeat is its own submit, awaited, to keep dawn.node stable on NVIDIA.
 */
import { type DType, type Tensor, randn } from '@phalanx/core';
import { type WebGPUBackend, createWebGPUBackend, grid1d, program } from '@phalanx/webgpu';
import { type GemmTile, DEFAULT_TILE, gemmProgram, gemvProgram } from '../src/webgpu/linear.js';

interface Case {
  name: string;
  kind: 'copy' | 'matmul' | 'gemv';
  M: number;
  N: number;
  K: number;
  transB?: boolean;
  wDType?: DType;
}

const FULL: Case[] = [
  { name: 'copy-1GiB', kind: 'copy', M: 0, N: 0, K: 2 ** 28 },
  { name: 'matmul-2048', kind: 'matmul', M: 2048, N: 2048, K: 2048 },
  { name: 'matmul-4096', kind: 'matmul', M: 4096, N: 4096, K: 4096 },
  { name: 'linear-4096', kind: 'matmul', M: 4096, N: 4096, K: 4096, transB: true },
  { name: 'gemv-4096x4096', kind: 'gemv', M: 1, N: 4096, K: 4096 },
  { name: 'gemv-2048x8192', kind: 'gemv', M: 1, N: 2048, K: 8192 },
  { name: 'gemv-8192x2048', kind: 'gemv', M: 1, N: 8192, K: 2048 },
  { name: 'gemv-4096x4096-bf16', kind: 'gemv', M: 1, N: 4096, K: 4096, wDType: 'bf16' },
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

/** Runs `dispatch` `reps` times, one awaited submit each, and returns the median GPU time of its passes. */
async function gpuMs(g: WebGPUBackend, dispatch: () => Promise<void>, reps: number): Promise<{ medianMs: number; minMs: number; firstMs: number }> {
  const t0 = performance.now();
  await dispatch();
  await g.sync();
  const firstMs = performance.now() - t0;
  for (let i = 0; i < 2; i++) await dispatch();
  await g.sync();
  const p = g.profile('timestamp');
  for (let i = 0; i < reps; i++) {
    await dispatch();
    await g.sync();
  }
  const [k] = (await p.stop()).kernels;
  // Wall-clock check of the timestamps: `batch` dispatches in one submit, so submit latency is amortised.
  const batch = 32;
  const t1 = performance.now();
  for (let i = 0; i < batch; i++) await dispatch();
  await g.sync();
  const wallMs = (performance.now() - t1) / batch;
  return { medianMs: k!.medianMs, minMs: k!.minMs, wallMs, firstMs };
}

async function run(g: WebGPUBackend, c: Case, tile: GemmTile, reps: number) {
  const seed = 1;
  if (c.kind === 'copy') {
    const n = c.K;
    const x = randn([n], { seed, backend: g });
    const y = randn([n], { seed: 2, backend: g });
    // each workgroup copies 4 x 256 vec4s, each warp's accesses contiguous
    const prog = program({
      name: 'copy4',
      inputs: { x: 'f32' },
      outputs: { y: 'f32' },
      views: { x: 'vec4<f32>', y: 'vec4<f32>' },
      uniforms: { n4: 'u32' },
      workgroupSize: 256,
      main: `  let base = (wid.x + wid.y * nwg.x) * 1024u + lid.x;
  for (var j = 0u; j < 4u; j++) { let i = base + j * 256u; if (i < u.n4) { y[i] = x[i]; } }`,
    });
    const t = await gpuMs(g, () => g.run(prog, [x], [y], { n4: n / 4 }, grid1d(n / 16, 256, g.limits.maxComputeWorkgroupsPerDimension)), reps);
    const bytes = 2 * 4 * n;
    return { ...c, ...t, bytes, GBps: bytes / t.medianMs / 1e6 };
  }
  const { M, N, K } = c;
  const transB = c.transB ?? c.kind === 'gemv';
  const a = randn([M, K], { seed, backend: g });
  const b = randn(transB ? [N, K] : [K, N], { seed: 2, backend: g, dtype: c.wDType ?? 'f32' });
  const out = randn([M, N], { seed: 3, backend: g });
  const inputs: Tensor[] = [a, b];
  const dispatch =
    c.kind === 'gemv'
      ? () => g.run(gemvProgram('f32', b.dtype, M, undefined), inputs, [out], { N, K }, grid1d(N, 8, g.limits.maxComputeWorkgroupsPerDimension))
      : () => g.run(gemmProgram('f32', b.dtype, transB, undefined, K % 4 === 0 && N % 4 === 0, tile), inputs, [out], { M, N, K, bBatchStride: 0 }, [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), 1]);
  const t = await gpuMs(g, dispatch, reps);
  const flops = 2 * M * N * K;
  const bytes = (M * K + M * N) * 4 + N * K * (b.dtype === 'f32' ? 4 : 2);
  return { ...c, tile: c.kind === 'matmul' ? tile : undefined, ...t, TFLOPs: flops / t.medianMs / 1e9, GBps: bytes / t.medianMs / 1e6 };
}

async function main() {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const only = args.flatMap((a, i) => (args[i - 1] === '--case' ? [a] : []));
  const tile = parseTile(args[args.indexOf('--tile') + 1] && args.includes('--tile') ? args[args.indexOf('--tile') + 1] : undefined);
  const reps = Number(args[args.indexOf('--reps') + 1]) || (quick ? 5 : 20);
  const cases = (quick ? QUICK : FULL).filter((c) => only.length === 0 || only.includes(c.name));
  // Dawn quantizes timestamps (to ~33 us on NVIDIA) unless told not to: too coarse for a GEMV.
  const g = await createWebGPUBackend({ maxPassesPerSubmit: 64, dawnFlags: ['enable-dawn-features=allow_unsafe_apis', 'disable-dawn-features=timestamp_quantization'] });
  console.error(`device: ${g.info.vendor} ${g.info.architecture} ${g.info.description}`);
  for (const c of cases) {
    const r = await run(g, c, tile, reps);
    console.log(JSON.stringify({ device: `${g.info.vendor} ${g.info.architecture} ${g.info.description}`.trim(), date: new Date().toISOString().slice(0, 10), ...r }));
  }
  g.dispose();
}

await main();

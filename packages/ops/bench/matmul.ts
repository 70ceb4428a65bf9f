/**
 * Matmul / GEMV benchmark cases (component `ops`), with the memory-system cases beside them: the fixed cost
 * of one pass, copy / read-only / write-only bandwidth. Run by tools/bench:
 * `npx phalanx bench ops [--quick] [--case NAME]... [--tile BMxBNxBKxTMxTN] [--gemv RxLxU] [--copy N]`.
 * Matmul and GEMV results are spot-checked: 256 random entries against float64 dot products on the host.
 * On the CPU backend the matmul and GEMV cases run the public `matmul` / `linear` ops.
 */
import { type Backend, type DType, Rng, type Tensor, randn, tensor } from '@phalanx/core';
import { type WebGPUBackend, grid1d, program } from '@phalanx/webgpu';
import { memoryKernel } from '../../../tools/bench/device.js';
import { type CaseContext, type CaseSpec, type Timed, defineCases, disposeAll, spotCheck } from '../../../tools/bench/harness.js';
import { linear, matmul } from '../src/linear.js';
import { type GemmTile, type GemvShape, DEFAULT_GEMV, DEFAULT_TILE, gemmProgram, gemvProgram } from '../src/webgpu/linear.js';

interface Shape {
  kind: 'empty' | 'copy' | 'read' | 'write' | 'matmul' | 'gemv';
  M: number;
  N: number;
  K: number;
  transB?: boolean;
  wDType?: DType;
}

const gpuOnly = ['webgpu'] as const;
const mem = (name: string, kind: Shape['kind'], K: number, sets: CaseSpec['sets'] = ['full']): CaseSpec => ({
  name,
  shape: { kind, M: 0, N: 0, K },
  backends: gpuOnly,
  sets,
  reps: [50, 5],
  setup: (ctx) => memoryCase(ctx, kind, K),
});
const mm = (name: string, s: Shape, sets: CaseSpec['sets'] = ['full'], backends: CaseSpec['backends'] = gpuOnly): CaseSpec => ({
  name,
  shape: { ...s },
  backends,
  sets,
  reps: [50, 5],
  setup: (ctx) => (s.wDType === 'i8' ? quantizedGemv(ctx, s) : productCase(ctx, s)),
});

export const cases = defineCases('ops', [
  // the fixed cost of one timed pass: one workgroup writing one float
  { name: 'empty-pass', shape: { kind: 'empty' }, backends: gpuOnly, reps: [50, 5], setup: emptyPass },
  mem('copy-1GiB', 'copy', 2 ** 28),
  mem('copy-64MiB', 'copy', 2 ** 24),
  // the two halves of a copy apart: which one limits the bandwidth WGSL reaches
  mem('read-1GiB', 'read', 2 ** 28),
  mem('write-1GiB', 'write', 2 ** 28),
  mm('matmul-2048', { kind: 'matmul', M: 2048, N: 2048, K: 2048 }),
  mm('matmul-4096', { kind: 'matmul', M: 4096, N: 4096, K: 4096 }),
  mm('linear-4096', { kind: 'matmul', M: 4096, N: 4096, K: 4096, transB: true }),
  mm('gemv-4096x4096', { kind: 'gemv', M: 1, N: 4096, K: 4096 }),
  mm('gemv-2048x8192', { kind: 'gemv', M: 1, N: 2048, K: 8192 }),
  mm('gemv-8192x2048', { kind: 'gemv', M: 1, N: 8192, K: 2048 }),
  mm('gemv-4096x4096-bf16', { kind: 'gemv', M: 1, N: 4096, K: 4096, wDType: 'bf16' }),
  mm('gemv-16384x8192', { kind: 'gemv', M: 1, N: 16384, K: 8192 }),
  // quantized weights: one signed byte per weight and one scale per row, through the public linear op
  mm('gemv-4096x4096-i8', { kind: 'gemv', M: 1, N: 4096, K: 4096, wDType: 'i8' }),
  mm('gemv-2048x8192-i8', { kind: 'gemv', M: 1, N: 2048, K: 8192, wDType: 'i8' }),
  // --quick
  mem('copy-16MiB', 'copy', 2 ** 22, ['quick']),
  mm('matmul-256', { kind: 'matmul', M: 256, N: 256, K: 256 }, ['quick'], ['webgpu', 'cpu']),
  mm('gemv-1024x1024', { kind: 'gemv', M: 1, N: 1024, K: 1024 }, ['quick'], ['webgpu', 'cpu']),
  mm('gemv-1024x1024-i8', { kind: 'gemv', M: 1, N: 1024, K: 1024, wDType: 'i8' }, ['quick'], ['webgpu', 'cpu']),
]);

function tileOf(ctx: CaseContext): GemmTile {
  const s = ctx.option('tile');
  if (!s) return DEFAULT_TILE;
  const [BM, BN, BK, TM, TN] = s.split('x').map(Number) as [number, number, number, number, number];
  return { BM, BN, BK, TM, TN };
}

function gemvOf(ctx: CaseContext): GemvShape {
  const [rowsPerGroup, lanes, unroll] = (ctx.option('gemv') ?? '').split('x').map(Number);
  return rowsPerGroup && lanes && unroll ? { rowsPerGroup, lanes, unroll } : DEFAULT_GEMV;
}

/** The kernel's result at 256 random entries against float64 dot products (see spotCheck). */
function checkProduct(a: ArrayLike<number>, b: ArrayLike<number>, out: ArrayLike<number>, M: number, N: number, K: number, transB: boolean) {
  return spotCheck(out, M, N, (m, n) => {
    let acc = 0;
    for (let k = 0; k < K; k++) acc += a[m * K + k]! * b[transB ? n * K + k : k * N + n]!;
    return acc;
  });
}

async function emptyPass(ctx: CaseContext): Promise<Timed> {
  const g = ctx.gpu!;
  const y = randn([1], { seed: 1, backend: g });
  const prog = program({ name: 'empty', outputs: { y: 'f32' }, workgroupSize: 1, main: '  y[0] = 1.0;' });
  return { run: () => g.run(prog, [], [y], {}, [1, 1, 1]), dispose: () => y.dispose() };
}

async function memoryCase(ctx: CaseContext, kind: Shape['kind'], n: number): Promise<Timed> {
  const g = ctx.gpu!;
  const perThread = Number(ctx.option('copy')) || 4;
  const x = randn([n], { seed: 1, backend: g });
  const y = randn([kind === 'read' ? 256 * 4 : n], { seed: 2, backend: g });
  const { prog, groups } = memoryKernel(g, n, kind as 'copy' | 'read' | 'write', perThread);
  return { run: () => g.run(prog, [x], [y], { n4: n / 4 }, groups), bytes: (kind === 'copy' ? 2 : 1) * 4 * n, extra: { perThread }, dispose: () => disposeAll(x, y) };
}

/** Matrix product or GEMV: the kernels directly on WebGPU (tile / GEMV shape options), the public ops on the CPU. */
async function productCase(ctx: CaseContext, s: Shape): Promise<Timed> {
  const { M, N, K } = s;
  const transB = s.transB ?? s.kind === 'gemv';
  const hostA = randn([M, K], { seed: 1 });
  const hostB = randn(transB ? [N, K] : [K, N], { seed: 2, dtype: s.wDType ?? 'f32' });
  const backend: Backend = ctx.backend;
  const a = await hostA.to(backend);
  const b = await hostB.to(backend);
  const flops = 2 * M * N * K;
  const bytes = (M * K + M * N) * 4 + N * K * (b.dtype === 'f32' ? 4 : 2);
  let out: Tensor | undefined;
  let run: () => Promise<unknown>;
  let shape: object;
  const g = ctx.gpu;
  if (g) {
    const tile = tileOf(ctx);
    const gemv = gemvOf(ctx);
    const o = randn([M, N], { seed: 3, backend: g });
    out = o;
    shape = s.kind === 'matmul' ? tile : gemv;
    const max = (g as WebGPUBackend).limits.maxComputeWorkgroupsPerDimension!;
    run =
      s.kind === 'gemv'
        ? () => g.run(gemvProgram('f32', b.dtype, M, {}, gemv), [a, b], [o], { N, K }, grid1d(N, gemv.rowsPerGroup, max))
        : () => g.run(gemmProgram('f32', b.dtype, transB, {}, K % 4 === 0 && N % 4 === 0, tile), [a, b], [o], { M, N, K, bBatchStride: 0 }, [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), 1]);
  } else {
    shape = { op: transB ? 'linear' : 'matmul' };
    run = async () => {
      out?.dispose();
      out = transB ? await linear(a, b) : await matmul(a, b);
    };
  }
  return {
    run,
    flops,
    bytes,
    extra: { kernelShape: shape },
    derive: (ms) => ({ TFLOPs: flops / ms / 1e9 }),
    check: async () => checkProduct(await hostA.data(), await hostB.data(), await out!.data(), M, N, K, transB),
    dispose: () => disposeAll(a, b, out, hostA, hostB),
  };
}

/** y = (x codes^T) * scale with 6-bit-range codes stored one per byte, as the quantizer's artifacts hold them. */
async function quantizedGemv(ctx: CaseContext, s: Shape): Promise<Timed> {
  const { M, N, K } = s;
  const rng = new Rng(5);
  const codes = Int8Array.from({ length: N * K }, () => rng.int(63) - 31);
  const scales = Float32Array.from({ length: N }, () => 0.01 + 0.05 * rng.uniform());
  const hostX = randn([M, K], { seed: 1 });
  const x = await hostX.to(ctx.backend);
  const w = tensor(codes, [N, K], { backend: ctx.backend });
  const sc = tensor(scales, [N], { backend: ctx.backend });
  let y: Tensor | undefined;
  return {
    run: async () => {
      y?.dispose();
      y = await linear(x, { codes: w, scales: sc });
    },
    bytes: N * K + N * 4 + (M * K + M * N) * 4,
    flops: 2 * M * N * K,
    check: async () => {
      const dequant = Float32Array.from(codes, (q, i) => q * scales[Math.floor(i / K)]!);
      return checkProduct(await hostX.data(), dequant, await y!.data(), M, N, K, true);
    },
    dispose: () => disposeAll(x, w, sc, y, hostX),
  };
}

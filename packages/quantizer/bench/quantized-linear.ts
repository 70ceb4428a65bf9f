/**
 * Quantized linear benchmark cases (component `quantizer`): y = x W^T with W held as int8 codes (ops `linear`,
 * one byte per weight) or packed 8/7/6/4-bit codes (the 'packedLinear' kernels), each with f16 row scales.
 * Run by tools/bench: `npx phalanx bench quantizer [--quick] [--case NAME]... [--packed-gemv RxLxU[xT][w]]
 * [--packed-tile BMxBNxBKxTMxTN]` (the last two try other shapes of the packed kernels on WebGPU; a trailing
 * `w`, e.g. `16x64x1x4w`, loads each lane's codes as vec4<u32> of 4 groups at 2, 4 and 8 bits, and is
 * dropped for the other widths). `--activations int8` runs the packed 4- and 8-bit GEMVs with int8 activations
 * (`quantizedLinear`'s `int8Activations`: x quantized per row, integer dot products; checked against the x they
 * multiply).
 *
 * Each case times its f32 counterpart (f32 weights of the same shape through `linear`) in the same process,
 * after making its codes and right before timing it (each after the harness's 300 ms of warm-up): the row's
 * `f32` and `speedupVsF32`. `bytes` counts the weights only (codes + f16 scales), so GB/s
 * and "of peak" read as weight bandwidth against the copy peak of the same call. 256 outputs are checked
 * against float64 dot products with codes * scale.
 */
import { type Backend, Rng, type Tensor, empty, randn, tensor } from '@phalanx/core';
import { linear } from '@phalanx/ops';
import { type CaseContext, type CaseSpec, type Timed, defineCases, disposeAll, spotCheck, timeCall } from '../../../tools/bench/harness.js';
import { type PackedLinearAttrs, clipRange, int8ActivationRows, packBits, packedBytes, quantizedLinear } from '../src/index.js';
import { type PackedShapes, runPackedLinear } from '../src/webgpu.js';

interface Shape {
  M: number;
  N: number;
  K: number;
  /** 'int8': i8 codes through ops `linear`; a number: packed codes of that many bits. */
  codes: 'int8' | number;
}

const gpuOnly = ['webgpu'] as const;
const cells = (M: number, N: number, K: number, codes: Shape['codes'][], sets: CaseSpec['sets'] = ['full'], backends: CaseSpec['backends'] = gpuOnly): CaseSpec[] =>
  codes.map((c) => ({
    name: `${M === 1 ? 'gemv' : `gemm-${M}`}-${N}x${K}-${c === 'int8' ? 'int8' : `int${c}p`}`,
    shape: { M, N, K, codes: c },
    backends,
    sets,
    reps: [50, 5],
    setup: (ctx) => quantizedCase(ctx, { M, N, K, codes: c }),
  }));

export const cases = defineCases('quantizer', [
  ...cells(1, 4096, 4096, ['int8', 8, 6, 4]),
  ...cells(1, 8192, 2048, ['int8', 8, 6, 4]),
  // f32 weights of 512 MiB: ten times the H200's L2 (50 MB), so every call streams its weights from HBM, as
  // a model's decode does (the smaller cases above fit in L2 once the reps run back to back)
  ...cells(1, 16384, 8192, ['int8', 8, 6, 4]),
  // the golf model's tied head: tok_emb is 8192 x 512 at 7 bits
  ...cells(1, 8192, 512, [7]),
  // prefill-sized batches through the tiled kernels
  ...cells(512, 4096, 4096, ['int8', 6, 4]),
  ...cells(1, 1024, 1024, [4], ['quick'], ['webgpu', 'cpu']),
  ...cells(64, 256, 256, [6], ['quick'], ['webgpu', 'cpu']),
]);

/**
 * `--packed-gemv RxLxU[xT][w]` (T rows per thread, default 1; w: wide loads) and `--packed-tile
 * BMxBNxBKxTMxTN`, or the defaults.
 */
function shapesOf(ctx: CaseContext): PackedShapes {
  const gemv = ctx.option('packed-gemv') ?? '';
  const wide = gemv.endsWith('w');
  const [rowsPerGroup, lanes, unroll, rowsPerThread] = (wide ? gemv.slice(0, -1) : gemv).split('x').map(Number);
  const [BM, BN, BK, TM, TN] = (ctx.option('packed-tile') ?? '').split('x').map(Number);
  return {
    gemv: rowsPerGroup && lanes && unroll ? { rowsPerGroup, lanes, unroll, rowsPerThread: rowsPerThread || 1, wide } : undefined,
    tile: BM && BN && BK && TM && TN ? { BM, BN, BK, TM, TN } : undefined,
  };
}

/** Median ms of f32 weights [N, K] through `linear`, timed as the harness times a case. */
async function f32Baseline(ctx: CaseContext, x: Tensor, N: number, K: number) {
  const w = randn([N, K], { seed: 2, std: K ** -0.5, backend: ctx.backend });
  const call = async () => (await linear(x, w)).dispose();
  const t = await timeCall(ctx.backend, call, { reps: ctx.reps, rounds: ctx.gpu ? 5 : undefined });
  w.dispose();
  return { medianMs: t.medianMs, weightGBps: (4 * N * K) / t.medianMs / 1e6 };
}

/** The output at 256 random entries against float64 dot products with codes * scale (see spotCheck). */
function checkCodes(x: ArrayLike<number>, codes: Int8Array, scales: ArrayLike<number>, out: ArrayLike<number>, { M, N, K }: Shape) {
  return spotCheck(out, M, N, (m, n) => {
    let acc = 0;
    for (let k = 0; k < K; k++) acc += x[m * K + k]! * codes[n * K + k]!;
    return acc * scales[n]!;
  });
}

async function quantizedCase(ctx: CaseContext, s: Shape): Promise<Timed> {
  const { M, N, K } = s;
  const backend: Backend = ctx.backend;
  const bits = s.codes === 'int8' ? 8 : s.codes;
  // --activations int8: x quantized per row, integer dot products (packed 4- and 8-bit codes in the GEMV case)
  const int8Activations = ctx.option('activations') === 'int8' && s.codes !== 'int8';
  const hostX = randn([M, K], { seed: 1 });
  const x = await hostX.to(backend);

  // codes over the SDClip range of `bits`, f16 scales
  const rng = new Rng(5);
  const R = clipRange(bits);
  const codes = Int8Array.from({ length: N * K }, () => rng.int(2 * R + 1) - R);
  const hostScales = tensor(Float32Array.from({ length: N }, () => 0.01 + 0.05 * rng.uniform()), [N], { dtype: 'f16' });
  const scales = await hostScales.to(backend);
  const w = s.codes === 'int8' ? tensor(codes, [N, K], { backend }) : tensor(packBits(codes, bits), [packedBytes(N * K, bits)], { dtype: 'u8', backend });
  const g = ctx.gpu;
  let y: Tensor | undefined;
  let run: () => Promise<unknown>;
  if (s.codes !== 'int8' && g) {
    // the kernels straight, so that --packed-gemv / --packed-tile can try other shapes
    const attrs: PackedLinearAttrs = { M, N, K, bits, hasBias: false, int8Activations, outShape: [M, N] };
    const out = (y = empty([M, N], { backend }));
    const shapes = shapesOf(ctx);
    run = () => runPackedLinear(g, [x, w, scales], out, attrs, shapes);
  } else {
    const q = { codes: w, scales, bits, clipSigmas: 12, method: 'rtn' as const, shape: [N, K] };
    run = async () => {
      y?.dispose();
      y = await quantizedLinear(x, q, null, { int8Activations });
    };
  }
  // the f32 counterpart, timed right before the case (both after timeCall's warm-up: the codes are made on the CPU first)
  const f32 = await f32Baseline(ctx, x, N, K);
  const weightBytes = (s.codes === 'int8' ? N * K : packedBytes(N * K, bits)) + 2 * N;
  const flops = 2 * M * N * K;
  return {
    run,
    flops,
    bytes: weightBytes,
    derive: (ms) => ({ TFLOPs: flops / ms / 1e9, speedupVsF32: f32.medianMs / ms }),
    extra: { bitsPerWeight: (8 * weightBytes) / (N * K), f32, ...(int8Activations ? { activations: 'int8' } : {}) },
    // int8 activations: against the x they multiply (quantized per row); the products are then exact
    check: async () => checkCodes(int8Activations ? int8ActivationRows(await hostX.data(), M, K) : await hostX.data(), codes, await hostScales.data(), await y!.data(), s),
    dispose: () => disposeAll(x, w, scales, y, hostX, hostScales),
  };
}

/**
 * The device's peaks, measured in the same run as the cases so their ratios compare like with like:
 * copy bandwidth (read + write) and the f32 matrix-product rate. On WebGPU the copy is a WGSL vec4 kernel
 * (16-byte loads and stores, 4 per invocation) and the product is the public `matmul` op; on the CPU backend a
 * typed-array copy and its `matmul` kernel. (PyTorch's own copy rate comes from the PyTorch scripts.)
 */
import { randn } from '@phalanx/core';
import { matmul } from '@phalanx/ops';
import { type WebGPUBackend, grid1d, program } from '@phalanx/webgpu';
import { defineCases, disposeAll } from './harness.js';

const PER_THREAD = 4;

/**
 * A vec4 pass over n f32 values (n a multiple of 16), each thread moving `perThread` vec4s, each warp's
 * accesses contiguous: the copy y = x that every roofline here is measured against, or, for the ops
 * benchmarks, a read-only pass (it keeps one sum per invocation and writes it only if it is impossible, so
 * nothing is written yet nothing is elided) or a write-only pass (the same dead branch keeps x bound).
 * Returns the program and its grid.
 */
export function memoryKernel(g: WebGPUBackend, n: number, kind: 'copy' | 'read' | 'write' = 'copy', perThread = PER_THREAD) {
  const move = { copy: 'y[i] = x[i];', read: 'acc += x[i];', write: 'y[i] = vec4<f32>(f32(i));' }[kind];
  const keepAlive = kind === 'copy' ? '' : '\n  if (acc.x == -12345.678) { y[lid.x] = acc + x[lid.x]; }';
  const prog = program({
    name: `${kind}4`,
    inputs: { x: 'f32' },
    outputs: { y: 'f32' },
    views: { x: 'vec4<f32>', y: 'vec4<f32>' },
    uniforms: { n4: 'u32' },
    workgroupSize: 256,
    main: `  let base = (wid.x + wid.y * nwg.x) * ${256 * perThread}u + lid.x;${kind === 'copy' ? '' : '\n  var acc = vec4<f32>(0.0);'}
  for (var j = 0u; j < ${perThread}u; j++) { let i = base + j * 256u; if (i < u.n4) { ${move} } }${keepAlive}`,
  });
  return { prog, groups: grid1d(n / 4 / perThread, 256, g.limits.maxComputeWorkgroupsPerDimension!) };
}

export const cases = defineCases('device', [
  {
    name: 'peak-copy',
    shape: { bytesFull: 2 ** 30, bytesQuick: 2 ** 24 },
    sets: ['full', 'quick'],
    reps: [30, 5],
    setup: async (ctx) => {
      const g = ctx.gpu;
      if (!g) {
        const n = ctx.quick ? 2 ** 22 : 2 ** 24;
        const [x, y] = [new Float32Array(n).fill(1), new Float32Array(n)];
        return { run: async () => y.set(x), bytes: 8 * n, extra: { copyBytes: 4 * n } };
      }
      // the largest power of two the device binds, up to 1 GiB (16 MiB with --quick)
      const maxFloats = Math.min(g.limits.maxStorageBufferBindingSize!, g.limits.maxBufferSize!) / 4;
      let n = ctx.quick ? 2 ** 22 : 2 ** 28;
      while (n > maxFloats) n /= 2;
      const x = randn([n], { seed: 1, backend: g });
      const y = randn([n], { seed: 2, backend: g });
      const { prog, groups } = memoryKernel(g, n);
      return { run: () => g.run(prog, [x], [y], { n4: n / 4 }, groups), bytes: 8 * n, extra: { copyBytes: 4 * n }, dispose: () => disposeAll(x, y) };
    },
  },
  {
    name: 'peak-matmul',
    shape: { nFull: 2048, nQuick: 256, nCpu: 128 },
    sets: ['full', 'quick'],
    reps: [20, 5],
    setup: async (ctx) => {
      const n = ctx.gpu ? (ctx.quick ? 256 : 2048) : ctx.quick ? 64 : 128;
      const a = randn([n, n], { seed: 1, std: n ** -0.5, backend: ctx.backend });
      const b = randn([n, n], { seed: 2, backend: ctx.backend });
      return { run: async () => (await matmul(a, b)).dispose(), flops: 2 * n ** 3, bytes: 3 * n * n * 4, extra: { n }, dispose: () => disposeAll(a, b) };
    },
  },
]);

/**
 * @phalanx/webgpu: the WebGPU backend. In a browser it uses navigator.gpu; in Node, the optional `webgpu`
 * package (Dawn). Importing this module registers the backend under 'webgpu' and its kernels; no device is
 * opened until `createWebGPUBackend()` or `getBackend('webgpu' | 'auto')` asks for one.
 *
 * @example
 * import { tensor, add } from '@phalanx/core';
 * import { createWebGPUBackend } from '@phalanx/webgpu';
 * const gpu = await createWebGPUBackend();
 * const a = tensor([1, 2, 3], [3], { backend: gpu });
 * console.log(await (await add(a, a)).data()); // Float32Array [2, 4, 6]
 */
import { registerBackend } from '@phalanx/core';
import { createWebGPUBackend } from './backend.js';
import { hasAdapter } from './device.js';
import './kernels/cast.js';
import './kernels/elementwise.js';
import './kernels/reduce.js';

export { type GPUStorage, type WebGPUBackendOptions, WebGPUBackend, createWebGPUBackend } from './backend.js';
export { type AdapterDescription, NO_ADAPTER_HELP, requestGPU } from './device.js';
export { cached } from './kernels/elementwise.js';
export { sizeClass } from './pool.js';
export { type GpuTiming, type KernelTime, type ProfileMode, type ProfileReport, type Timing, measure, median, timeOnGpu } from './profiler.js';
export { type Program, type ProgramSpec, type UniformLayout, type UniformType, HALF_HELPERS, gpuByteSize, grid1d, program, uniformLayout, wgslStorageType } from './wgsl.js';

let available: Promise<boolean> | undefined;

registerBackend({
  name: 'webgpu',
  priority: 10,
  isAvailable: () => (available ??= hasAdapter()),
  create: () => createWebGPUBackend(),
});

/**
 * @phalanx/core: tensors, dtypes, the backend contract and kernel registry, the CPU backend, seeded
 * random numbers, numerics helpers and typed errors.
 *
 * @example
 * import { tensor, add, cpu } from '@phalanx/core';
 * const a = tensor([1, 2, 3], [3]);
 * const b = await add(a, a);
 * console.log(await b.data()); // Float32Array [2, 4, 6]
 */
export { type Backend, type BackendFactory, debug, getBackend, liveBackends, registerBackend, registeredBackends, trackBackend, unregisterBackend, untrackBackend } from './backend.js';
export { cpu, POISON } from './cpu/backend.js';
export { cpuStorage, cpuValues, registerCpuMap } from './cpu/kernels.js';
export {
  type DataArray,
  type DType,
  type StorageArray,
  DTYPES,
  allocStorage,
  assertDType,
  bf16BitsToF32,
  bytesPerElement,
  decodeHalf,
  encodeHalf,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  isDType,
  isFloat,
  storageFromBytes,
  toStorage,
} from './dtype.js';
export { CheckpointError, ConfigError, DeviceError, DeviceLostError, DTypeError, InputError, MissingKernelError, NumericsError, PhalanxError, ShapeError } from './errors.js';
export { type KernelFn, type KernelSpec, type KernelVerify, fallbackCounts, getKernels, registerKernel, runKernel } from './kernels.js';
export { type CloseOptions, type CloseReport, assertClose, compareClose, relativeRmse } from './numerics.js';
export { type BinaryAttrs, type CastAttrs, type ScaleAttrs, type SumAttrs, CAST_TARGETS, add, arithmeticDType, cast, copy, mul, scale, sum } from './ops.js';
export { Rng } from './rng.js';
export { hillisSteele } from './scan.js';
export { Scratch } from './scratch.js';
export { type Shape, broadcastShapes, broadcastStrides, formatShape, normAxis, sameShape, sizeOf, stridesOf } from './shape.js';
export { type RandomOptions, type TensorOptions, Tensor, assertFloat, empty, full, rand, randn, tensor, zeros } from './tensor.js';

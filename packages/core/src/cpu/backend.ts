import { type Backend, debug, registerBackend, trackBackend } from '../backend.js';
import { type DType, type StorageArray, allocStorage } from '../dtype.js';
import { InputError } from '../errors.js';

/** Bit patterns written into fresh allocations under `debug.poison`: NaN for floats, a sentinel for integers. */
export const POISON: Record<DType, number> = { f32: NaN, f16: 0x7e00, bf16: 0x7fc0, i32: -0x7eadbeef, u32: 0xdeadbeef, i8: -128, u8: 0xde };

/** The CPU backend: storage is a plain typed array; kernels accumulate in float64. Always available. */
class CpuBackend implements Backend {
  readonly name = 'cpu';
  readonly priority = 0;
  readonly disposed = false;

  allocate(dtype: DType, size: number): StorageArray {
    const a = allocStorage(dtype, size);
    if (debug.poison) a.fill(POISON[dtype]);
    return a;
  }

  upload(data: StorageArray): StorageArray {
    return data.slice();
  }

  async read(storage: unknown, _dtype: DType, size: number): Promise<StorageArray> {
    return (storage as StorageArray).slice(0, size);
  }

  release(): void {}

  async sync(): Promise<void> {}

  dispose(): void {
    throw new InputError('the CPU backend is shared and cannot be disposed');
  }
}

export const cpu: Backend = new CpuBackend();
trackBackend(cpu);
registerBackend({ name: 'cpu', priority: 0, isAvailable: () => true, create: async () => cpu });

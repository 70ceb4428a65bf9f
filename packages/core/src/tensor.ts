import { type Backend } from './backend.js';
import { cpu } from './cpu/backend.js';
import { type DataArray, type DType, type StorageArray, allocStorage, assertDType, isFloat, storageToData, toStorage } from './dtype.js';
import { DTypeError, InputError, ShapeError } from './errors.js';
import { Rng } from './rng.js';
import { type Shape, formatShape, resolveReshape, sizeOf } from './shape.js';

/** Storage shared by a tensor and its reshaped views; released when the last one is disposed. */
interface StorageRef {
  storage: unknown;
  refs: number;
}

/**
 * An n-dimensional array of one dtype living on one backend. Ops run where their inputs live; moving data
 * is explicit (`await t.to(backend)`, `await t.data()`). Every tensor an op returns is owned by the caller:
 * `dispose()` it when done (GPU memory is not garbage-collected).
 */
export class Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  private ref: StorageRef | undefined;

  /** Wraps storage the backend already holds. Kernel authors use `empty()` instead. */
  constructor(
    readonly backend: Backend,
    storage: unknown,
    shape: Shape,
    readonly dtype: DType,
    /** Shown in error messages, e.g. the checkpoint tensor name. */
    public name?: string,
  ) {
    this.shape = frozenShape(shape);
    this.size = sizeOf(this.shape, name ?? 'tensor');
    this.ref = { storage, refs: 1 };
  }

  get rank(): number {
    return this.shape.length;
  }

  get disposed(): boolean {
    return this.ref === undefined;
  }

  /** The backend storage (for kernels). Throws on a disposed tensor. */
  get storage(): unknown {
    return this.live().storage;
  }

  /** The values as a typed array (f16/bf16 widened to f32), after all queued work. */
  async data(): Promise<DataArray> {
    return storageToData(this.dtype, await this.rawData());
  }

  /** The raw storage array: f16/bf16 as Uint16Array bit patterns. */
  async rawData(): Promise<StorageArray> {
    return this.backend.read(this.live().storage, this.dtype, this.size);
  }

  /** The values as nested arrays, for printing and small tests. */
  async array(): Promise<unknown> {
    const flat = Array.from(await this.data());
    const nest = (dim: number, offset: number): unknown => {
      if (dim === this.rank) return flat[offset];
      const step = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: this.shape[dim]! }, (_, i) => nest(dim + 1, offset + i * step));
    };
    return nest(0, 0);
  }

  /** A copy on `backend` (a new view of the same storage when it already lives there). */
  async to(backend: Backend): Promise<Tensor> {
    if (backend === this.backend) return this.reshape(this.shape);
    const raw = await this.rawData();
    return new Tensor(backend, backend.upload(raw, this.dtype), this.shape, this.dtype, this.name);
  }

  /** A view with another shape over the same storage (one dim may be -1). */
  reshape(shape: Shape): Tensor {
    const ref = this.live();
    // made by the constructor, so views and tensors share one object layout (property reads stay monomorphic)
    const view = new Tensor(this.backend, ref.storage, resolveReshape(this.shape, shape), this.dtype, this.name);
    view.ref = ref;
    ref.refs++;
    return view;
  }

  /** Gives the storage back once no view uses it. Idempotent. */
  dispose(): void {
    const ref = this.ref;
    if (!ref) return;
    this.ref = undefined;
    if (--ref.refs === 0 && !this.backend.disposed) this.backend.release(ref.storage);
  }

  toString(): string {
    return `Tensor(${this.name ? `${this.name}, ` : ''}${formatShape(this.shape)}, ${this.dtype}, ${this.backend.name})`;
  }

  private live(): StorageRef {
    if (!this.ref) throw new InputError(`${this.name ?? 'tensor'} ${formatShape(this.shape)} was disposed`);
    return this.ref;
  }
}

/**
 * A frozen copy of `shape`, or `shape` itself when it is a frozen array already (another tensor's shape, as in
 * `empty(x.shape)` for most kernel outputs): nobody can change it, so tensors may share it, which saves a copy
 * and a freeze (a call into the runtime) per tensor.
 */
function frozenShape(shape: Shape): readonly number[] {
  if (Array.isArray(shape) && Object.isFrozen(shape)) return shape;
  const out: number[] = [];
  for (let i = 0; i < shape.length; i++) out.push(shape[i]!);
  return Object.freeze(out);
}

/** Refuses a tensor that is not f32, f16 or bf16, naming the op and the tensor (its name, else `role`). */
export function assertFloat(op: string, t: Tensor, role: string): void {
  if (!isFloat(t.dtype)) throw new DTypeError(`${op}: ${t.name ?? role} is ${t.dtype}, expected f32, f16 or bf16`);
}

export interface TensorOptions {
  dtype?: DType;
  backend?: Backend;
  name?: string;
}

/**
 * A tensor from data. Numbers (number[], Float32Array, ...) are rounded to `dtype` (default f32, or the
 * integer type of an Int32Array/Uint32Array/Int8Array/Uint8Array); a Uint16Array with dtype f16 or bf16 is
 * taken as raw bit patterns, as stored in safetensors.
 */
export function tensor(data: ArrayLike<number>, shape: Shape, options: TensorOptions = {}): Tensor {
  const name = options.name ?? 'tensor';
  const dtype = assertDType(options.dtype ?? inferDType(data), `${name}: dtype`);
  const size = sizeOf(shape, name);
  if (data.length !== size) {
    throw new ShapeError(`${name}: shape ${formatShape(shape)} needs ${size} elements, data has ${data.length}`);
  }
  const backend = options.backend ?? cpu;
  return new Tensor(backend, backend.upload(toStorage(data, dtype, name), dtype), shape, dtype, options.name);
}

function inferDType(data: ArrayLike<number>): DType {
  if (data instanceof Int32Array) return 'i32';
  if (data instanceof Uint32Array) return 'u32';
  if (data instanceof Int8Array) return 'i8';
  if (data instanceof Uint8Array) return 'u8';
  return 'f32';
}

/** Uninitialised storage of `shape` (NaN-poisoned under `debug.poison`): for kernels that write every element. */
export function empty(shape: Shape, options: TensorOptions = {}): Tensor {
  const dtype = assertDType(options.dtype ?? 'f32');
  const backend = options.backend ?? cpu;
  return new Tensor(backend, backend.allocate(dtype, sizeOf(shape, options.name)), shape, dtype, options.name);
}

export function full(shape: Shape, value: number, options: TensorOptions = {}): Tensor {
  const dtype = options.dtype ?? 'f32';
  const data = allocStorage('f32', sizeOf(shape, options.name)).fill(value);
  return tensor(dtype === 'f32' ? data : Array.from(data), shape, { ...options, dtype });
}

export function zeros(shape: Shape, options: TensorOptions = {}): Tensor {
  const dtype = assertDType(options.dtype ?? 'f32');
  return tensor(allocStorage(dtype, sizeOf(shape, options.name)), shape, { ...options, dtype });
}

export interface RandomOptions extends TensorOptions {
  seed: number;
}

/** Seeded standard-normal values (times `std`, plus `mean`): the same seed gives the same tensor everywhere. */
export function randn(shape: Shape, options: RandomOptions & { mean?: number; std?: number }): Tensor {
  const { mean = 0, std = 1 } = options;
  const rng = new Rng(options.seed);
  const data = new Float32Array(sizeOf(shape, options.name));
  for (let i = 0; i < data.length; i++) data[i] = mean + std * rng.normal();
  return tensor(data, shape, options);
}

/** Seeded uniform values in [low, high). */
export function rand(shape: Shape, options: RandomOptions & { low?: number; high?: number }): Tensor {
  const { low = 0, high = 1 } = options;
  const rng = new Rng(options.seed);
  const data = new Float32Array(sizeOf(shape, options.name));
  for (let i = 0; i < data.length; i++) data[i] = low + (high - low) * rng.uniform();
  return tensor(data, shape, options);
}

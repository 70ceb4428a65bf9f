import {
  type Backend,
  type DType,
  type StorageArray,
  DeviceError,
  DeviceLostError,
  DTypeError,
  InputError,
  POISON,
  type Tensor,
  allocStorage,
  bytesPerElement,
  debug,
  storageFromBytes,
  trackBackend,
  untrackBackend,
} from '@phalanx/core';
import { type AdapterDescription, type DeviceRequest, openDevice } from './device.js';
import { WordsLru } from './lru.js';
import { BufferPool, type PooledBuffer, sizeClass } from './pool.js';
import { Profiler, type ProfileMode, type ProfileReport } from './profiler.js';
import { type Program, gpuByteSize, wgslStorageType } from './wgsl.js';

export interface WebGPUBackendOptions extends DeviceRequest {
  /** Compute passes recorded before a submit. Short submits keep some drivers (dawn.node on NVIDIA) stable. Default 16. */
  maxPassesPerSubmit?: number;
  /** Free buffer bytes the pool keeps for reuse. Default 256 MiB. */
  poolBytes?: number;
  /** Backend priority for 'auto' selection and fallbacks. Default 10 (CPU is 0). */
  priority?: number;
}

/** A tensor's storage on the GPU: a pooled buffer, of which the first `bytes` are the tensor's. */
export interface GPUStorage {
  readonly buf: PooledBuffer;
  readonly bytes: number;
}

const UNIFORM_CACHE_SIZE = 1024;
const BIND_GROUP_CACHE_SIZE = 4096;
/** What `run` returns for a dispatch it recorded at once: one settled promise shared by all of them. */
const RECORDED: Promise<void> = Promise.resolve();

/**
 * The WebGPU backend: a device, a buffer pool, pipeline / bind-group / uniform caches, batched command
 * submission, typed errors for validation failures, out-of-memory and device loss, and a profiler.
 * Kernels call `run(program, inputs, outputs, uniforms, workgroups)`.
 */
export class WebGPUBackend implements Backend {
  readonly name = 'webgpu';
  readonly priority: number;
  readonly device: GPUDevice;
  readonly info: AdapterDescription;
  readonly limits: Readonly<Record<string, number>>;
  readonly features: ReadonlySet<string>;

  private readonly pool: BufferPool;
  private readonly stagingPool: BufferPool;
  private readonly maxPassesPerSubmit: number;
  private encoder: GPUCommandEncoder | undefined;
  /** The open compute pass: consecutive dispatches share it (Dawn orders them and inserts the barriers). */
  private pass: GPUComputePassEncoder | undefined;
  /** Dispatches recorded since the last submit. */
  private passes = 0;
  /** Buffers released while recorded commands may still use them: reusable after the next submit. */
  private releasedBeforeSubmit: PooledBuffer[] = [];
  /** Evicted uniform buffers: destroyed once the commands that bind them are submitted (WebGPU defers the rest). */
  private destroyAfterSubmit: GPUBuffer[] = [];
  /** Ids of buffers outside the pool (uniforms, exact-size tensors), negative so they never clash with pooled ids. */
  private unpooledIds = 0;
  /** Compiled pipelines by WGSL source, so programs with the same code share one. */
  private readonly pipelines = new Map<string, Promise<Compiled>>();
  /** The compiled pipeline of each program already dispatched: a dispatch finds it without awaiting. */
  private readonly compiled = new WeakMap<Program, Compiled>();
  private pipelineCount = 0;
  /** Bind groups by pipeline id and buffer ids. */
  private readonly bindGroups = new WordsLru<GPUBindGroup>(BIND_GROUP_CACHE_SIZE);
  /** The buffers of the dispatch being recorded, in binding order (reused by every dispatch). */
  private readonly bound: PooledBuffer[] = [];
  /** Bind-group lookup keys by length (reused; the cache keeps a copy of a key it adds). */
  private readonly bindKeys: Int32Array[] = [];
  /** Uniform buffers by their words; an evicted one is destroyed once the commands that bind it are submitted. */
  private readonly uniformBuffers = new WordsLru<PooledBuffer>(UNIFORM_CACHE_SIZE, (b) => this.destroyAfterSubmit.push(b.buffer));
  /** Per uniform block size: where a dispatch's uniforms are written, to look their buffer up by its words. */
  private readonly uniformScratch = new Map<number, UniformViews>();
  private readonly asyncErrors: string[] = [];
  private readonly pendingScopes: Promise<void>[] = [];
  private lost: string | undefined;
  private destroyedByUs = false;
  private profiler: Profiler | undefined;
  disposed = false;

  /** Use `createWebGPUBackend()`. */
  constructor(device: GPUDevice, info: AdapterDescription, options: WebGPUBackendOptions = {}) {
    this.device = device;
    this.info = info;
    this.limits = info.limits;
    this.features = new Set(info.features);
    this.priority = options.priority ?? 10;
    this.maxPassesPerSubmit = options.maxPassesPerSubmit ?? 16;
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.pool = new BufferPool((size) => this.createBuffer(size, usage, 'tensor'), options.poolBytes ?? 256 * 2 ** 20);
    this.stagingPool = new BufferPool((size) => this.createBuffer(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'readback'), 64 * 2 ** 20);
    device.lost.then((info) => {
      if (this.destroyedByUs) return;
      this.lost = `${info.reason}: ${info.message}`;
      untrackBackend(this); // getBackend and fallbacks must not hand out a lost backend
    });
    device.addEventListener('uncapturederror', (ev) => {
      this.asyncErrors.push((ev as GPUUncapturedErrorEvent).error.message);
    });
  }

  // ---- Backend contract ----

  allocate(dtype: DType, size: number): GPUStorage {
    const bytes = gpuByteSize(dtype, size);
    const s = this.acquire(bytes, dtype, size);
    if (debug.poison) this.device.queue.writeBuffer(s.buf.buffer, 0, poisonPattern(dtype, bytes));
    return s;
  }

  upload(data: StorageArray, dtype: DType): GPUStorage {
    const bytes = gpuByteSize(dtype, data.length);
    const s = this.acquire(bytes, dtype, data.length);
    let src = new Uint8Array(data.buffer, data.byteOffset, data.length * bytesPerElement(dtype));
    if (src.byteLength !== bytes) {
      const padded = new Uint8Array(bytes);
      padded.set(src);
      src = padded;
    }
    if (bytes > 0) this.device.queue.writeBuffer(s.buf.buffer, 0, src);
    return s;
  }

  async read(storage: unknown, dtype: DType, size: number): Promise<StorageArray> {
    this.check();
    const { buf, bytes } = storage as GPUStorage;
    if (bytes === 0) return allocStorage(dtype, 0);
    const staging = this.stagingPool.acquire(bytes);
    this.commandEncoder().copyBufferToBuffer(buf.buffer, 0, staging.buffer, 0, bytes);
    this.flush();
    try {
      await staging.buffer.mapAsync(GPUMapMode.READ, 0, bytes);
    } catch (cause) {
      this.check();
      throw new DeviceError(`reading ${size} x ${dtype} back from the GPU failed: ${(cause as Error).message}`, { cause });
    }
    const copy = new Uint8Array(staging.buffer.getMappedRange(0, bytes).slice(0));
    staging.buffer.unmap();
    this.stagingPool.giveBack(staging);
    await this.throwAsyncErrors();
    return storageFromBytes(dtype, copy, size);
  }

  release(storage: unknown): void {
    const { buf } = storage as GPUStorage;
    if (this.encoder) this.releasedBeforeSubmit.push(buf);
    else this.pool.giveBack(buf);
  }

  async sync(): Promise<void> {
    this.check();
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.throwAsyncErrors();
    this.check();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.destroyedByUs = true;
    untrackBackend(this);
    this.pool.clear();
    this.stagingPool.clear();
    this.bindGroups.clear();
    this.uniformBuffers.clear();
    this.pipelines.clear();
    this.device.destroy();
  }

  // ---- for kernels ----

  /** The GPU buffer of a tensor on this backend. */
  buffer(t: Tensor): GPUBuffer {
    if (t.backend !== this) throw new InputError(`${t.name ?? 'tensor'} lives on '${t.backend.name}', not on this WebGPU backend`);
    return (t.storage as GPUStorage).buf.buffer;
  }

  /**
   * Records one dispatch of `program`. Inputs and outputs bind in the order the program declares them,
   * the uniforms last. Returns once the pipeline exists (compiled on first use, then cached).
   *
   * Not an async function: a dispatch whose pipeline is compiled is recorded before `run` returns, which then
   * returns a settled promise (no promise, array or key of its own per dispatch). Errors still come back as a
   * rejected promise.
   */
  run(program: Program, inputs: Tensor[], outputs: Tensor[], uniforms: Record<string, number | readonly number[]>, workgroups: [number, number, number]): Promise<void> {
    try {
      this.check();
      let n = this.bindTensors(program, inputs, outputs);
      if (program.uniforms.length > 0) this.bound[n++] = this.uniformBuffer(program, uniforms);
      const compiled = this.compiled.get(program);
      // the wall-clock profiler awaits each dispatch; every other dispatch with a compiled pipeline records now
      if (compiled && this.profiler?.mode !== 'wall') {
        this.record(program, compiled, this.bound, n, workgroups);
        return RECORDED;
      }
      return this.compileAndRecord(program, compiled, this.bound.slice(0, n), workgroups);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** `run` for a program not compiled yet (its buffers taken before the await), or under the wall-clock profiler. */
  private async compileAndRecord(program: Program, compiled: Compiled | undefined, bound: PooledBuffer[], workgroups: [number, number, number]): Promise<void> {
    compiled ??= await this.compile(program);
    const profiler = this.profiler?.mode === 'pass' ? undefined : this.profiler;
    if (this.record(program, compiled, bound, bound.length, workgroups) && profiler) await profiler.afterPass(program.name);
  }

  /** Checks the tensors against the program's bindings and puts their buffers in `this.bound`; returns how many. */
  private bindTensors(program: Program, inputs: Tensor[], outputs: Tensor[]): number {
    const declared = program.bindings;
    const nIn = inputs.length;
    const count = nIn + outputs.length;
    if (count !== declared.length) throw new InputError(`kernel '${program.name}': ${count} tensors for ${declared.length} bindings`);
    for (let i = 0; i < count; i++) {
      const t = i < nIn ? inputs[i]! : outputs[i - nIn]!;
      const binding = declared[i]!; // [name, dtype]
      const dtype = binding[1];
      if (t.dtype !== dtype && (wgslStorageType(t.dtype) !== wgslStorageType(dtype) || gpuByteSize(t.dtype, 2) !== gpuByteSize(dtype, 2))) {
        throw new DTypeError(`kernel '${program.name}': binding '${binding[0]}' expects ${dtype}, got ${t.dtype} (${t.name ?? 'tensor'})`);
      }
      if (t.backend !== this) throw new InputError(`kernel '${program.name}' binding '${binding[0]}': ${t.name ?? 'tensor'} lives on '${t.backend.name}', not on this WebGPU backend`);
      this.bound[i] = (t.storage as GPUStorage).buf;
    }
    return count;
  }

  /** Records the dispatch of a compiled program on `bound[0..n)`; false when it has no workgroups (nothing recorded). */
  private record(program: Program, compiled: Compiled, bound: readonly PooledBuffer[], n: number, workgroups: [number, number, number]): boolean {
    const x = workgroups[0];
    const y = workgroups[1];
    const z = workgroups[2];
    const max = this.limits.maxComputeWorkgroupsPerDimension!;
    if (x > max || y > max || z > max) throw new InputError(`kernel '${program.name}': ${workgroups.join('x')} workgroups exceed ${max} per dimension`);
    if (x === 0 || y === 0 || z === 0) return false;
    const bindGroup = this.bindGroup(compiled, bound, n);
    // a dispatch profiled per kernel gets a pass of its own, for its timestamps; otherwise one pass serves many dispatches
    const profiler = this.profiler?.mode === 'pass' ? undefined : this.profiler;
    const pass = profiler ? this.commandEncoder().beginComputePass(profiler.passDescriptor(program.name)) : this.computePass();
    pass.setPipeline(compiled.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    if (profiler) pass.end();
    if (++this.passes >= this.maxPassesPerSubmit) this.flush();
    return true;
  }

  /** Records a buffer-to-buffer copy of `bytes` (a multiple of 4). */
  copyBuffer(src: Tensor, dst: Tensor, bytes: number): void {
    this.check();
    if (bytes > 0) this.commandEncoder().copyBufferToBuffer(this.buffer(src), 0, this.buffer(dst), 0, bytes);
  }

  /** Submits the recorded commands. */
  flush(): void {
    if (!this.encoder) return;
    this.endPass();
    this.profiler?.beforeSubmit(this.encoder);
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = undefined;
    this.passes = 0;
    // emptied in place: a copy per submit (splice) is garbage
    const released = this.releasedBeforeSubmit;
    for (let i = 0; i < released.length; i++) this.pool.giveBack(released[i]!);
    released.length = 0;
    const evicted = this.destroyAfterSubmit;
    for (let i = 0; i < evicted.length; i++) evicted[i]!.destroy();
    evicted.length = 0;
    this.profiler?.afterSubmit();
  }

  /**
   * Records GPU time until `stop()` (see ProfileMode): per kernel from timestamp queries when the adapter has
   * them, otherwise wall-clock time with each dispatch submitted and awaited alone (slower, and it includes
   * submit overhead); or, with 'pass', per shared pass.
   */
  profile(mode: ProfileMode = 'auto'): { stop(): Promise<ProfileReport> } {
    if (this.profiler) throw new InputError('a profile is already running on this backend');
    this.flush();
    const kind = mode === 'auto' ? (this.features.has('timestamp-query') ? 'timestamp' : 'wall') : mode;
    if (kind !== 'wall' && !this.features.has('timestamp-query')) throw new DeviceError(`profile('${kind}'): adapter ${this.info.description || this.info.vendor} has no timestamp-query`);
    const profiler = new Profiler(this.device, kind, () => this.flush());
    this.profiler = profiler;
    return {
      stop: async () => {
        this.flush();
        this.profiler = undefined;
        return profiler.report();
      },
    };
  }

  /** Buffer bytes in use and held free, and cache sizes: for leak checks and the bench report. */
  stats(): { poolBytes: number; freeBytes: number; pipelines: number; bindGroups: number; uniforms: number } {
    return { poolBytes: this.pool.totalBytes, freeBytes: this.pool.freeBytes, pipelines: this.pipelines.size, bindGroups: this.bindGroups.size, uniforms: this.uniformBuffers.size };
  }

  // ---- internals ----

  private check(): void {
    if (this.lost !== undefined) throw new DeviceLostError(`WebGPU device lost (${this.lost}); create a new backend and reload the model`);
    if (this.disposed) throw new DeviceError('this WebGPU backend was disposed');
  }

  private async throwAsyncErrors(): Promise<void> {
    await Promise.all(this.pendingScopes.splice(0));
    if (this.asyncErrors.length > 0) {
      const errors = this.asyncErrors.splice(0);
      throw new DeviceError(`WebGPU reported ${errors.length} error(s): ${errors.join(' | ')}`);
    }
  }

  private acquire(bytes: number, dtype: DType, size: number): GPUStorage {
    this.check();
    const max = Math.min(this.limits.maxStorageBufferBindingSize!, this.limits.maxBufferSize!);
    if (bytes > max) {
      throw new DeviceError(`${size} x ${dtype} needs ${bytes} bytes, more than this adapter's largest storage binding (${max} bytes); split the tensor or use the CPU backend`);
    }
    // The pool rounds up to a size class; near the limit, take the exact size instead.
    const buf = sizeClass(bytes) > max ? this.exactBuffer(bytes) : this.pool.acquire(bytes);
    return { buf, bytes };
  }

  private exactBuffer(bytes: number): PooledBuffer {
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    return { buffer: this.createBuffer(bytes, usage, 'tensor'), id: -++this.unpooledIds, capacity: bytes };
  }

  private createBuffer(size: number, usage: number, label: string): GPUBuffer {
    this.device.pushErrorScope('out-of-memory');
    const buffer = this.device.createBuffer({ size, usage, label });
    this.pendingScopes.push(
      this.device.popErrorScope().then((e) => {
        if (e) this.asyncErrors.push(`out of GPU memory allocating ${size} bytes (${label}): ${e.message}`);
      }),
    );
    return buffer;
  }

  /** The encoder for a copy or a pass of its own: the shared compute pass ends first, so commands stay in order. */
  private commandEncoder(): GPUCommandEncoder {
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  private computePass(): GPUComputePassEncoder {
    if (!this.pass) {
      // profile('pass') times each shared pass; its descriptor may flush first, so the encoder is taken after it
      const timed = this.profiler?.mode === 'pass' ? this.profiler.passDescriptor('passes') : undefined;
      this.pass = (this.encoder ??= this.device.createCommandEncoder()).beginComputePass(timed);
    }
    return this.pass;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = undefined;
  }

  private async compile(program: Program): Promise<Compiled> {
    let p = this.pipelines.get(program.code);
    if (!p) {
      // Captured here, so a broken kernel is one typed error instead of an uncaptured one as well.
      this.device.pushErrorScope('validation');
      const module = this.device.createShaderModule({ code: program.code, label: program.name });
      const scope = this.device.popErrorScope();
      const id = ++this.pipelineCount;
      p = this.device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: program.name }).then(
        (pipeline) => ({ pipeline, layout: pipeline.getBindGroupLayout(0), id }),
        async (cause) => {
          this.pipelines.delete(program.code);
          await scope;
          const info = await module.getCompilationInfo();
          const messages = info.messages.map((m) => `${m.type} at line ${m.lineNum}:${m.linePos}: ${m.message}`).join('; ');
          throw new DeviceError(`kernel '${program.name}' failed to compile: ${messages || (cause as Error).message}`, { cause });
        },
      );
      this.pipelines.set(program.code, p);
    }
    const compiled = await p;
    this.compiled.set(program, compiled);
    return compiled;
  }

  /** The bind group of `bound[0..n)` for this pipeline, from the cache (a steady decode step creates none). */
  private bindGroup(compiled: Compiled, bound: readonly PooledBuffer[], n: number): GPUBindGroup {
    const key = (this.bindKeys[n] ??= new Int32Array(n + 1));
    key[0] = compiled.id;
    for (let i = 0; i < n; i++) key[i + 1] = bound[i]!.id;
    let group = this.bindGroups.get(key);
    if (!group) {
      const entries: GPUBindGroupEntry[] = [];
      for (let i = 0; i < n; i++) entries.push({ binding: i, resource: { buffer: bound[i]!.buffer } });
      group = this.device.createBindGroup({ layout: compiled.layout, entries });
      this.bindGroups.set(key.slice(), group);
    }
    return group;
  }

  /** Uniform buffers are immutable and cached by content, so repeated dispatches (decode loops) reuse them and their bind groups. */
  private uniformBuffer(program: Program, values: Record<string, number | readonly number[]>): PooledBuffer {
    const layout = program.uniformLayout;
    let views = this.uniformScratch.get(layout.size);
    if (!views) this.uniformScratch.set(layout.size, (views = uniformViews(layout.size)));
    const { u32, i32, f32 } = views;
    // padding and unwritten array slots are part of the cache key: zeroed (a loop: the block is a few words)
    for (let i = 0; i < i32.length; i++) i32[i] = 0;
    const fields = layout.fields;
    for (let k = 0; k < fields.length; k++) {
      const f = fields[k]!;
      const v = values[f.name];
      if (v === undefined) throw new InputError(`kernel '${program.name}': uniform '${f.name}' not given`);
      const view = f.kind === 'f32' ? f32 : f.kind === 'i32' ? i32 : u32;
      if (typeof v === 'number') {
        view[f.offset >> 2] = v;
      } else {
        if (v.length > f.count) throw new InputError(`kernel '${program.name}': uniform '${f.name}' has ${v.length} values, room for ${f.count}`);
        view.set(v, f.offset >> 2);
      }
    }
    let buf = this.uniformBuffers.get(i32);
    if (!buf) {
      const buffer = this.createBuffer(layout.size, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, 'uniforms');
      this.device.queue.writeBuffer(buffer, 0, i32);
      buf = { buffer, id: -++this.unpooledIds, capacity: layout.size };
      this.uniformBuffers.set(i32.slice(), buf);
    }
    return buf;
  }
}

/** A program's pipeline on this device, its bind group layout, and an id that keys the bind-group cache. */
interface Compiled {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly id: number;
}

interface UniformViews {
  u32: Uint32Array;
  i32: Int32Array;
  f32: Float32Array;
}

function uniformViews(bytes: number): UniformViews {
  const data = new ArrayBuffer(bytes);
  return { u32: new Uint32Array(data), i32: new Int32Array(data), f32: new Float32Array(data) };
}

function poisonPattern(dtype: DType, bytes: number): Uint8Array {
  const one = allocStorage(dtype, 4 / bytesPerElement(dtype)).fill(POISON[dtype]);
  const word = new Uint32Array(one.buffer)[0]!;
  return new Uint8Array(new Uint32Array(bytes / 4).fill(word).buffer);
}

/** Opens a device and returns a ready backend; registered with core so declined ops can fall back to and from it. */
export async function createWebGPUBackend(options: WebGPUBackendOptions = {}): Promise<WebGPUBackend> {
  const { device, info } = await openDevice(options);
  const backend = new WebGPUBackend(device, info, options);
  trackBackend(backend);
  return backend;
}

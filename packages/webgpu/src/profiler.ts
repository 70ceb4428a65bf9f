import type { Backend } from '@phalanx/core';

/**
 * 'timestamp': each dispatch in a pass of its own with GPU timestamps around it (per kernel times; each pass
 * also pays the fixed cost of a pass, ~6 us on an H200). 'pass': dispatches share passes as they do unprofiled,
 * with timestamps around each pass (GPU time of the work as a model records it: one entry, 'passes').
 * 'wall': each dispatch submitted and awaited alone. 'auto': 'timestamp' where the adapter has them, else 'wall'.
 */
export type ProfileMode = 'auto' | 'timestamp' | 'pass' | 'wall';

export interface KernelTime {
  name: string;
  count: number;
  totalMs: number;
  meanMs: number;
  medianMs: number;
  minMs: number;
}

export interface ProfileReport {
  /** See ProfileMode. */
  mode: 'timestamp' | 'pass' | 'wall';
  /** Per kernel name, largest total first. */
  kernels: KernelTime[];
  totalMs: number;
}

const QUERY_PAIRS = 256;

/** Collects per-pass times for `WebGPUBackend.profile()`. */
export class Profiler {
  private readonly samples: { name: string; ms: number }[] = [];
  private readonly pending: Promise<void>[] = [];
  private querySet: GPUQuerySet | undefined;
  private slotNames: string[] = [];
  private resolved: { read: GPUBuffer; names: string[] } | undefined;
  private wallStart = 0;

  constructor(
    private readonly device: GPUDevice,
    readonly mode: 'timestamp' | 'pass' | 'wall',
    private readonly flush: () => void,
  ) {
    if (mode !== 'wall') this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * QUERY_PAIRS });
  }

  passDescriptor(name: string): GPUComputePassDescriptor | undefined {
    if (this.mode === 'wall') {
      this.wallStart = performance.now();
      return undefined;
    }
    if (this.slotNames.length === QUERY_PAIRS) this.flush();
    const k = this.slotNames.length;
    this.slotNames.push(name);
    return { timestampWrites: { querySet: this.querySet!, beginningOfPassWriteIndex: 2 * k, endOfPassWriteIndex: 2 * k + 1 } };
  }

  async afterPass(name: string): Promise<void> {
    if (this.mode !== 'wall') return;
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.samples.push({ name, ms: performance.now() - this.wallStart });
  }

  beforeSubmit(encoder: GPUCommandEncoder): void {
    const n = this.slotNames.length;
    if (this.mode === 'wall' || n === 0) return;
    const bytes = 16 * n;
    const resolve = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.resolveQuerySet(this.querySet!, 0, 2 * n, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, read, 0, bytes);
    this.resolved = { read, names: this.slotNames };
    this.slotNames = [];
    this.pending.push(this.device.queue.onSubmittedWorkDone().then(() => resolve.destroy()));
  }

  afterSubmit(): void {
    const r = this.resolved;
    if (!r) return;
    this.resolved = undefined;
    this.pending.push(
      r.read.mapAsync(GPUMapMode.READ).then(() => {
        const t = new BigInt64Array(r.read.getMappedRange());
        r.names.forEach((name, k) => this.samples.push({ name, ms: Number(t[2 * k + 1]! - t[2 * k]!) / 1e6 }));
        r.read.unmap();
        r.read.destroy();
      }),
    );
  }

  async report(): Promise<ProfileReport> {
    await Promise.all(this.pending);
    this.querySet?.destroy();
    const byName = new Map<string, number[]>();
    for (const { name, ms } of this.samples) byName.set(name, [...(byName.get(name) ?? []), ms]);
    const stats = [...byName].map(([name, ms]) => {
      const totalMs = ms.reduce((a, b) => a + b, 0);
      return { name, count: ms.length, totalMs, meanMs: totalMs / ms.length, medianMs: median(ms), minMs: Math.min(...ms) };
    });
    const kernels = stats.sort((a, b) => b.totalMs - a.totalMs);
    return { mode: this.mode, kernels, totalMs: kernels.reduce((s, k) => s + k.totalMs, 0) };
  }
}

export interface Timing {
  /** The first call: includes pipeline compilation and first-use allocation. */
  firstMs: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  samples: number[];
}

/**
 * Wall-clock timing of `fn` on `backend`: one first call (reported separately), `warmup` unreported calls,
 * then `repeats` timed calls, each ended by `backend.sync()` so queued GPU work is counted.
 */
export async function measure(backend: Backend, fn: () => unknown, options: { warmup?: number; repeats?: number } = {}): Promise<Timing> {
  const { warmup = 2, repeats = 10 } = options;
  const time = () => callMs(backend, fn);
  const firstMs = await time();
  for (let i = 0; i < warmup; i++) await time();
  const samples: number[] = [];
  for (let i = 0; i < repeats; i++) samples.push(await time());
  return { firstMs, medianMs: median(samples), minMs: Math.min(...samples), maxMs: Math.max(...samples), samples };
}

/** Wall-clock milliseconds of one call of `fn`, its GPU work included. */
async function callMs(backend: Backend, fn: () => unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  await backend.sync();
  return performance.now() - t0;
}

export interface GpuTiming {
  /** Wall-clock time of the first call: pipeline compilation and first allocations included. */
  firstMs: number;
  /** Wall-clock time per call over the timed calls (submits included). */
  wallMs: number;
  /** GPU time of one call: the sum over its kernels of their median pass times. */
  medianMs: number;
  kernels: KernelTime[];
}

/**
 * GPU time of `fn` from timestamp queries: one first call, ~`warmupMs` of warm-up, then `reps` calls recorded
 * back to back and awaited once, so the GPU runs at its working clocks (awaiting each call alone lets an
 * NVIDIA GPU drop its clocks between them). Needs 'timestamp-query'.
 */
export async function timeOnGpu(backend: WebGPUBackendLike, fn: () => unknown, options: { reps?: number; warmupMs?: number } = {}): Promise<GpuTiming> {
  const { reps = 20, warmupMs = 300 } = options;
  const firstMs = await callMs(backend, fn);
  for (let start = performance.now(); performance.now() - start < warmupMs; ) {
    for (let i = 0; i < 8; i++) await fn();
    await backend.sync();
  }
  const profile = backend.profile('timestamp');
  const t1 = performance.now();
  for (let i = 0; i < reps; i++) await fn();
  await backend.sync();
  const wallMs = (performance.now() - t1) / reps;
  const { kernels } = await profile.stop();
  return { firstMs, wallMs, medianMs: kernels.reduce((s, k) => s + k.medianMs, 0), kernels };
}

/** What `timeOnGpu` needs of the backend (kept structural so this module does not import the backend). */
interface WebGPUBackendLike extends Backend {
  profile(mode: ProfileMode): { stop(): Promise<ProfileReport> };
}

export function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

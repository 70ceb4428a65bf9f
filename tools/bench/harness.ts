/**
 * The benchmark registry and timing harness (issue #10), after flash-linear-attention's benchmarks/ops
 * registry: each package declares its cases in `packages/<pkg>/bench/*.ts` with `defineCases`: a name, the
 * shapes, a `setup` that makes realistic inputs on the backend under test (see `input`), the FLOPs and bytes
 * one call does, and the call to time. `tools/bench/run.ts` collects them (`cases.ts`), runs the selected ones
 * on each backend and reports.
 *
 * What a timed case reports (`timeCase`): the first call's wall-clock time apart (pipeline compilation and
 * first allocations), then at least 300 ms of unrecorded warm-up in bursts of back-to-back calls (an H200
 * timed right after host work runs far below speed: a 512 MiB GEMV read 325 us after 100 ms of one-at-a-time
 * warm-up calls and 130 us after 300 ms of bursts), then `rounds` rounds of back-to-back calls. On
 * WebGPU each round is timed by GPU timestamps (per call: every pass of the round summed, divided by the
 * calls; each dispatch in a pass of its own, for per-kernel times) and by the wall clock, and the rounds are
 * run again with dispatches sharing passes as in a model (`passMs`); on the CPU every call is a sample.
 * Median, min and max are over the samples. GFLOP/s and GB/s come from the median; the runner adds the ratio
 * to the device peaks it measured in the same run (`tools/bench/device.ts`).
 */
import { type Backend, Rng, type Tensor, compareClose, cpu, fallbackCounts, tensor } from '@phalanx/core';
import { type ProfileReport, type WebGPUBackend, createWebGPUBackend } from '@phalanx/webgpu';

export type BackendName = 'cpu' | 'webgpu';

/** What a case's setup and measure functions get. */
export interface CaseContext {
  backend: Backend;
  /** The WebGPU backend when the case runs on WebGPU. */
  gpu: WebGPUBackend | undefined;
  backendName: BackendName;
  /** The small sizes of `--quick`. */
  quick: boolean;
  /** Timed calls (the case's default, or `--reps`). */
  reps: number;
  /** A pass-through command-line option (`--tile 128x64x8x8x4` -> option('tile')). */
  option(name: string): string | undefined;
  /** Progress on stderr. */
  log(line: string): void;
  /** The device string of the backend. */
  device: string;
}

/** What `setup` returns: the call to time and what it does. */
export interface Timed {
  /** One call of what is measured. It disposes what it makes (or the case's `dispose` does). */
  run: () => Promise<unknown>;
  /** Floating-point operations of one call (a multiply-add is 2). */
  flops?: number;
  /** Bytes one call must move at least (read + written), for GB/s. */
  bytes?: number;
  /** After timing: a correctness spot-check (relative RMSE against a float64 reference, ...). */
  check?: () => Promise<object | undefined>;
  /** Extra fields from the median time per call (tokens/s, us per token, ...). */
  derive?: (ms: number) => object;
  /** Extra fields reported as they are. */
  extra?: object;
  dispose?: () => void;
}

/** One result line. The runner adds device peaks, ratios and the speedup against the main branch. */
export interface Row {
  component: string;
  name: string;
  backend: BackendName;
  device: string;
  date: string;
  shape?: Record<string, unknown>;
  /** Wall-clock time of the first call: pipeline compilation and first allocations included. */
  firstMs?: number;
  /** Per call: GPU time (timestamps) on WebGPU, wall-clock time on the CPU; median over the samples. */
  medianMs?: number;
  minMs?: number;
  maxMs?: number;
  /** Per call, wall-clock (submits and JS included): median, min, max over the rounds. */
  wallMs?: number;
  wallMinMs?: number;
  wallMaxMs?: number;
  /** Timed calls, and in how many rounds (samples). */
  reps?: number;
  rounds?: number;
  flops?: number;
  bytes?: number;
  GFLOPs?: number;
  GBps?: number;
  /** WebGPU: GPU ms per call with dispatches sharing passes (CaseTiming.passMs), and GB/s from it. */
  passMs?: number;
  passGBps?: number;
  /** Ops that ran on another backend during the case (work that left the GPU): op:from->to -> calls. */
  fallbacks?: Record<string, number>;
  check?: object;
  error?: string;
  [field: string]: unknown;
}

export interface BenchCase {
  component: string;
  name: string;
  /** The sizes, as reported. */
  shape?: Record<string, unknown>;
  /** Backends the case runs on (default both). */
  backends?: readonly BackendName[];
  /** Sets the case belongs to: 'full' (the default run), 'quick' (`--quick`), 'extra' (only by name). Default ['full']. */
  sets?: readonly ('full' | 'quick' | 'extra')[];
  /** Timed calls: [full, quick]. Default [30, 5]. */
  reps?: readonly [number, number];
  /** Name of the PyTorch counterpart's row when it differs from `name`. */
  pytorch?: string;
  /** Realistic inputs on ctx.backend, and the call to time. */
  setup?: (ctx: CaseContext) => Promise<Timed>;
  /** A case that times itself and returns one or more rows (fields as in Row; component, backend, device and date are filled in). */
  measure?: (ctx: CaseContext, emit: (row: Partial<Row> & { name: string }) => void) => Promise<void>;
}

export type CaseSpec = Omit<BenchCase, 'component'>;

/** A package's cases, under its component name (the package directory, e.g. 'monoid-scan'). */
export function defineCases(component: string, cases: readonly CaseSpec[]): BenchCase[] {
  const seen = new Set<string>();
  return cases.map((c) => {
    if (seen.has(c.name)) throw new Error(`bench: ${component}/${c.name} is defined twice`);
    seen.add(c.name);
    if (!c.setup === !c.measure) throw new Error(`bench: ${component}/${c.name} needs exactly one of setup and measure`);
    return { component, ...c };
  });
}

export const inSet = (c: BenchCase, set: 'full' | 'quick' | 'extra') => (c.sets ?? ['full']).includes(set);
export const runsOn = (c: BenchCase, b: BackendName) => (c.backends ?? ['cpu', 'webgpu']).includes(b);

// ---------------------------------------------------------------- inputs

/**
 * Realistic values, as fla's registry transforms its random inputs: a decay gate is logsigmoid(z + 3) (about
 * 0.95, as at initialisation), a query is scaled by D^-1/2, a key may go through SiLU or an L2 norm, ...
 */
export type Transform = 'none' | 'logsigmoid' | 'neg-softplus' | 'silu' | 'sigmoid' | 'l2norm' | ((x: number) => number);

export interface InputSpec {
  seed: number;
  std?: number;
  mean?: number;
  /** Applied after std and mean (l2norm: over the last dim). */
  transform?: Transform;
  dtype?: 'f32';
  name?: string;
}

const logsigmoid = (z: number) => Math.min(z, 0) - Math.log1p(Math.exp(-Math.abs(z)));
const POINTWISE: Record<string, (x: number) => number> = {
  none: (x) => x,
  logsigmoid,
  'neg-softplus': (z) => logsigmoid(-z), // -softplus(z)
  silu: (x) => x / (1 + Math.exp(-x)),
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
};

/** Past this many values a random block repeats, which keeps very large inputs cheap to make. */
const BLOCK = 1 << 22;

/** Host values for `shape` under `spec` (normal draws, then the transform). */
export function inputValues(shape: readonly number[], spec: InputSpec): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const last = shape[shape.length - 1] ?? 1;
  const rng = new Rng(spec.seed);
  const { std = 1, mean = 0, transform = 'none' } = spec;
  const f = typeof transform === 'function' ? transform : transform === 'l2norm' ? POINTWISE.none! : POINTWISE[transform]!;
  const out = new Float32Array(n);
  const block = Math.min(n, Math.ceil(BLOCK / last) * last);
  for (let i = 0; i < block; i++) out[i] = f(mean + std * rng.normal());
  if (transform === 'l2norm') {
    for (let r = 0; r < block; r += last) {
      let s = 0;
      for (let j = r; j < r + last; j++) s += out[j]! * out[j]!;
      const inv = 1 / Math.sqrt(s + 1e-12);
      for (let j = r; j < r + last; j++) out[j]! *= inv;
    }
  }
  for (let i = block; i < n; i += block) out.copyWithin(i, 0, Math.min(block, n - i));
  return out;
}

/** A tensor of realistic values on `backend`. */
export function input(shape: readonly number[], spec: InputSpec, backend: Backend): Tensor {
  return tensor(inputValues(shape, spec), [...shape], { backend, name: spec.name });
}

/** Disposes tensors, skipping nulls. */
export function disposeAll(...ts: (Tensor | null | undefined)[]): void {
  for (const t of ts) if (t && !t.disposed) t.dispose();
}

// ---------------------------------------------------------------- backends

/** The WebGPU backend as the benchmarks open it: exact timestamps, short submits (dawn.node on NVIDIA). */
export async function openWebGPU(): Promise<WebGPUBackend> {
  // Dawn quantizes timestamps (to ~33 us on NVIDIA) unless told not to; short submits keep dawn.node stable there.
  // 8 dispatches per submit: dawn.node has crashed on the GPU machine with long command buffers;
  // PHALANX_BENCH_PASSES_PER_SUBMIT tries others
  return createWebGPUBackend({ maxPassesPerSubmit: Number(process.env.PHALANX_BENCH_PASSES_PER_SUBMIT) || 8, dawnFlags: ['enable-dawn-features=allow_unsafe_apis', 'disable-dawn-features=timestamp_quantization'] });
}

export function deviceName(backend: Backend): string {
  if (backend.name === 'webgpu') {
    const i = (backend as WebGPUBackend).info;
    return `${i.vendor} ${i.architecture} ${i.description}`.trim();
  }
  return `cpu (float64 reference, Node ${process.version}, ${process.arch})`;
}

// ---------------------------------------------------------------- timing

export interface CaseTiming {
  firstMs: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  wallMs: number;
  wallMinMs: number;
  wallMaxMs: number;
  reps: number;
  rounds: number;
  /** WebGPU: per kernel name, passes and GPU ms per call (largest first, at most 12). */
  kernels?: { name: string; perCall: number; msPerCall: number }[];
  /** false where the GPU has no timestamp queries: medianMs is then the wall clock. */
  timestamps?: boolean;
  /**
   * WebGPU with timestamps: GPU ms per call with the calls' dispatches sharing compute passes (profile('pass')),
   * as a model records them; medianMs gives every dispatch a pass of its own, which adds a pass's fixed cost
   * (~6 us on an H200) to each.
   */
  passMs?: number;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const stats = (xs: number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });

/** Wall-clock ms of one call, its queued work included. */
export async function wallCall(backend: Backend, fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  await backend.sync();
  return performance.now() - t0;
}

/**
 * Keeps `backend` busy for at least `ms` and `calls` calls of `fn`: bursts of up to 20 calls recorded back to
 * back, then a sync (one call at a time would let an NVIDIA GPU drop its clocks between calls).
 */
export async function warmUp(backend: Backend, fn: () => Promise<unknown>, { ms = 300, calls = 2 } = {}): Promise<void> {
  const start = performance.now();
  for (let done = 0; done < calls || performance.now() - start < ms; ) {
    for (let i = 0; i < 20 && (done < calls || performance.now() - start < ms); i++, done++) await fn();
    await backend.sync();
  }
}

/**
 * Times `fn` on `backend` as described at the top of this file: the first call, then `warmUp` (at least
 * `warmupCalls`, default 2, and `warmupMs`, default 300), then `reps` timed calls: on WebGPU split into
 * `rounds` rounds recorded back to back; on the CPU one sample per call.
 */
export async function timeCall(backend: Backend, fn: () => Promise<unknown>, options: { reps: number; rounds?: number; warmupMs?: number; warmupCalls?: number }): Promise<CaseTiming> {
  const { reps, warmupMs = 300, warmupCalls = 2 } = options;
  const firstMs = await wallCall(backend, fn);
  await warmUp(backend, fn, { ms: warmupMs, calls: warmupCalls });
  if (backend.name !== 'webgpu') {
    const samples: number[] = [];
    for (let i = 0; i < reps; i++) samples.push(await wallCall(backend, fn));
    const s = stats(samples);
    return { firstMs, medianMs: s.median, minMs: s.min, maxMs: s.max, wallMs: s.median, wallMinMs: s.min, wallMaxMs: s.max, reps, rounds: reps };
  }
  const g = backend as WebGPUBackend;
  const timestamps = g.features.has('timestamp-query');
  const rounds = Math.max(1, Math.min(options.rounds ?? 5, reps));
  const perRound = Math.max(1, Math.round(reps / rounds));
  const gpu: number[] = [];
  const wall: number[] = [];
  const kernels = new Map<string, { count: number; totalMs: number }>();
  for (let r = 0; r < rounds; r++) {
    const profile = timestamps ? g.profile('timestamp') : undefined;
    const t0 = performance.now();
    for (let i = 0; i < perRound; i++) await fn();
    await g.sync();
    wall.push((performance.now() - t0) / perRound);
    if (profile) {
      const report = await profile.stop();
      gpu.push(report.totalMs / perRound);
      for (const k of report.kernels) {
        const e = kernels.get(k.name) ?? { count: 0, totalMs: 0 };
        e.count += k.count;
        e.totalMs += k.totalMs;
        kernels.set(k.name, e);
      }
    }
  }
  // the same rounds with dispatches sharing passes as they do in a model (no pass per dispatch)
  const inPass: number[] = [];
  for (let r = 0; timestamps && r < rounds; r++) {
    const profile = g.profile('pass');
    for (let i = 0; i < perRound; i++) await fn();
    await g.sync();
    inPass.push((await profile.stop()).totalMs / perRound);
  }
  const calls = rounds * perRound;
  const w = stats(wall);
  const t = timestamps ? stats(gpu) : w;
  return {
    passMs: timestamps ? median(inPass) : undefined,
    firstMs,
    medianMs: t.median,
    minMs: t.min,
    maxMs: t.max,
    wallMs: w.median,
    wallMinMs: w.min,
    wallMaxMs: w.max,
    reps: calls,
    rounds,
    timestamps,
    kernels: [...kernels]
      .sort((a, b) => b[1].totalMs - a[1].totalMs)
      .slice(0, 12)
      .map(([name, e]) => ({ name, perCall: e.count / calls, msPerCall: e.totalMs / calls })),
  };
}

/**
 * The GPU profile of what `fn` records, or undefined without timestamp queries: `timestamp` gives every
 * dispatch a pass of its own (per-kernel times), `pass` times the passes as they run (dispatches sharing them).
 */
export async function gpuProfileOf(g: WebGPUBackend, fn: () => Promise<unknown>, mode: 'timestamp' | 'pass' = 'timestamp'): Promise<ProfileReport | undefined> {
  if (!g.features.has('timestamp-query')) return undefined;
  const profile = g.profile(mode);
  let failed: unknown;
  try {
    await fn();
    await g.sync();
  } catch (e) {
    failed = e;
  }
  const report = await profile.stop();
  if (failed) throw failed;
  return report;
}

/** An [M, N] result at 256 random entries against their float64 values `ref(m, n)`: relative RMSE (NaN fails). */
export function spotCheck(out: ArrayLike<number>, M: number, N: number, ref: (m: number, n: number) => number): { relRmse: number; ok: boolean } {
  const rng = new Rng(7);
  const want: number[] = [];
  const got: number[] = [];
  for (let s = 0; s < 256; s++) {
    const m = rng.int(M);
    const n = rng.int(N);
    want.push(ref(m, n));
    got.push(out[m * N + n]!);
  }
  const r = compareClose(want, got, { rtol: 1e-5 });
  return { relRmse: r.relRmse, ok: r.ok };
}

/** The fallback counters' growth since `before` (a snapshot of fallbackCounts). */
export function fallbacksSince(before: Map<string, number>): Record<string, number> | undefined {
  const out: Record<string, number> = {};
  for (const [k, n] of fallbackCounts) if (n !== (before.get(k) ?? 0)) out[k] = n - (before.get(k) ?? 0);
  return Object.keys(out).length ? out : undefined;
}

/** Runs one case on one backend: its rows, each emitted as it is made (so a crash keeps what was done). */
export async function runCase(c: BenchCase, ctx: CaseContext, emit: (row: Row) => void): Promise<void> {
  const base = { component: c.component, backend: ctx.backendName, device: ctx.device, date: new Date().toISOString().slice(0, 10) };
  const before = new Map(fallbackCounts);
  if (c.measure) {
    await c.measure(ctx, (r) => emit({ ...base, shape: c.shape, ...r, fallbacks: fallbacksSince(before) }));
    return;
  }
  const t = await c.setup!(ctx);
  try {
    const timing = await timeCall(ctx.backend, t.run, { reps: ctx.reps, rounds: ctx.backendName === 'webgpu' ? 5 : undefined });
    const check = await t.check?.();
    const ms = timing.medianMs;
    emit({
      ...base,
      name: c.name,
      shape: c.shape,
      ...timing,
      flops: t.flops,
      bytes: t.bytes,
      GFLOPs: t.flops !== undefined ? t.flops / ms / 1e6 : undefined,
      GBps: t.bytes !== undefined ? t.bytes / ms / 1e6 : undefined,
      passGBps: t.bytes !== undefined && timing.passMs ? t.bytes / timing.passMs / 1e6 : undefined,
      ...(t.derive?.(ms) ?? {}),
      ...(t.extra ?? {}),
      check,
      fallbacks: fallbacksSince(before),
    });
  } finally {
    t.dispose?.();
  }
}

/** Opens a backend by name (cpu needs nothing). */
export async function openBackend(name: BackendName): Promise<Backend> {
  return name === 'cpu' ? cpu : openWebGPU();
}

/**
 * The decode study of issue #10 (component `decode`): a Spartacus-geometry model against a Llama-3.2-1B-geometry
 * model, both built by the @phalanx/models presets from a Hugging Face config.json (through parseConfig, so
 * the geometry is explicit below) with random weights, decoding one token at a time at several context lengths.
 *
 * One step = `forward(id, { state, lastOnly: true })` + greedy `sampleIds` (the id stays on the GPU and is the
 * next step's input) + the id's read-back, as `generate` does: pipelined, step t + 1 recorded and submitted
 * before token t is read back (`serialMsPerToken`: each step read back before the next is recorded, the way
 * PyTorch's loop runs). Timed by the wall clock per step. The GPU time of the same steps is reported beside it,
 * each dispatch in a pass of its own (timestamps, by kernel: `kernels`) and with dispatches sharing passes as they
 * run (`gpuInPassMsPerToken`), and the host's part: the forward call until it returns (JS,
 * command encoding, submits), by the wall clock (`hostMsPerToken`) and as the main thread's CPU time
 * (`hostCpuMsPerToken`, less noisy than the wall clock on a busy machine). Per context: median / min / max
 * over the steps of two rounds (the contexts are visited round-robin, so all see the same clocks and memory
 * placement).
 *
 * Host time on a machine without a GPU (lavapipe executes slowly, but the host part is the same code): the
 * Spartacus structure at a size lavapipe runs,
 *   node tools/bench/launch.mjs decode/spartacus-f32 --backend webgpu --quick --reps 50 --rounds 1 --contexts 64 --prefill 16 \
 *     --override '{"vocab_size":4096,"hidden_size":256,"intermediate_size":1024,"num_hidden_layers":16,"num_attention_heads":4,"head_dim":64}'
 *
 * The context is synthesised, not prefilled: llama's KV caches are filled with random keys and values of the
 * context's length (`appendKv`) and the state's position set; Spartacus's per-layer monoid states [1, H, D, D]
 * are set to random values and the position set. This is exact for decode time: a step reads every cached key
 * and value (or the fixed-size state) whatever their values, RoPE's cost does not depend on the position, and
 * no kernel branches on the data. One context is also reached by a real prefill (`-real`) to show it.
 *
 * Memory: f32 weights are ~5-6 GB per model, llama's f32 KV at 64K is 4 GiB; the full study wants a GPU of
 * 40 GB or more. `--quick` runs a tiny geometry at contexts 16 and 64.
 */
import { type ModelConfig, expandLayers, parseConfig } from '@phalanx/checkpoint';
import { type Backend, Rng, type Tensor, empty, tensor } from '@phalanx/core';
import { type DecodeState, type Network, PRESETS, type PresetDefinition, Weights, isQuantized, sampleNextIds } from '@phalanx/models';
import { type Int8Weight, type LinearWeight, readIds, weightMatrix } from '@phalanx/ops';
import { appendKv, type KvCache } from '@phalanx/varlen-attention';
import { type WebGPUBackend, grid1d, program } from '@phalanx/webgpu';
import { memoryKernel } from './device.js';
import { type CaseContext, type CaseSpec, type Row, defineCases, gpuProfileOf, inputValues, median, timeCall } from './harness.js';

/** Llama-3.2-1B's config.json (geometry, RoPE with llama3 scaling, tied embeddings). */
export const LLAMA_1B = {
  model_type: 'llama',
  vocab_size: 128256,
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  hidden_act: 'silu',
  rms_norm_eps: 1e-5,
  max_position_embeddings: 131072,
  rope_theta: 500000,
  rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  tie_word_embeddings: true,
  attention_bias: false,
  mlp_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
};

/** Spartacus's geometry: Llama's body, 32 full heads of 64 with monoid attention (vector decay), tied. */
export const SPARTACUS = {
  model_type: 'monoid',
  vocab_size: 128256,
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  num_attention_heads: 32,
  head_dim: 64,
  hidden_act: 'silu',
  rms_norm_eps: 1e-5,
  decay_variant: 'vector-logsigmoid',
  tie_word_embeddings: true,
  bos_token_id: 128000,
  eos_token_id: 128001,
};

/** The same structure at a size lavapipe and the CPU reference run in seconds. */
const TINY = { vocab_size: 512, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, head_dim: 16, bos_token_id: 1, eos_token_id: 2 };
const TINY_LLAMA = { ...LLAMA_1B, ...TINY, num_key_value_heads: 2, max_position_embeddings: 4096, rope_scaling: { ...LLAMA_1B.rope_scaling, original_max_position_embeddings: 64 } };
const TINY_SPARTACUS = { ...SPARTACUS, ...TINY };

export const CONTEXTS = [64, 1024, 8192, 32768, 65536];
const QUICK_CONTEXTS = [16, 64];

type ModelName = 'llama' | 'spartacus';

const NOTES = {
  context:
    'context synthesised: llama KV caches filled with random K/V of the context length (appendKv) and the position set; spartacus monoid states set to random [1,H,D,D] values and the position set. Exact for decode time: a step reads every cached key/value (or the fixed-size state) whatever the values, RoPE costs the same at any position, no kernel branches on data. The -real row reaches one context by a real prefill to show it.',
  int8: "int8 rows: the projections (q/k/v/o, gate/up/down; the matrices loadModel's quantize makes int8) as random i8 codes with f16 row scales, read by ops linear; the embedding and norms stay f32, and so does the tied head, which reads the whole f32 embedding table each token",
  step: 'one step = forward(id, {state, lastOnly}) + greedy sampleIds (the id stays on the GPU and feeds the next forward) + its read-back; wall clock per step, pipelined as generate runs (step t + 1 recorded before token t is read back); serialMsPerToken: each step read back before the next is recorded',
  gpu: 'gpuMsPerToken: every dispatch in a pass of its own (timestamps; kernels: per kernel); gpuInPassMsPerToken: dispatches sharing passes as they run',
  host: 'hostMsPerToken: wall clock of the forward call alone (JS, command encoding, submits; the GPU is not awaited); hostCpuMsPerToken: the main thread CPU time over the same span',
};

type WeightsKind = 'f32' | 'int8';

const study = (model: ModelName, weights: WeightsKind): CaseSpec => ({
  name: `${model}-${weights}`,
  shape: { model, weights, contexts: CONTEXTS, quickContexts: QUICK_CONTEXTS },
  sets: ['full', 'quick'],
  reps: [32, 4],
  measure: (ctx, emit) => decodeStudy(ctx, model, weights, emit),
});

export const cases = defineCases('decode', [study('spartacus', 'f32'), study('llama', 'f32'), study('spartacus', 'int8'), study('llama', 'int8')]);

// ---------------------------------------------------------------- random weights

const PCG = `fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}`;

/** pcg hash and Box-Muller: a normal draw per element, made on the GPU (no host copy of ~6 GB of weights). */
const FILL = program({
  name: 'bench_fill_normal',
  outputs: { y: 'f32' },
  uniforms: { n: 'u32', seed: 'u32', sigma: 'f32', mu: 'f32' },
  workgroupSize: 256,
  helpers: PCG,
  main: `  if (idx >= u.n) { return; }
  let a = pcg(idx ^ pcg(u.seed));
  let b = pcg(a ^ 0x9e3779b9u);
  let u1 = (f32(a >> 8u) + 1.0) / 16777217.0;
  let u2 = f32(b >> 8u) / 16777216.0;
  y[idx] = u.mu + u.sigma * sqrt(-2.0 * log(u1)) * cos(6.2831853 * u2);`,
});

/** A normal(mean, std) tensor: drawn on the GPU, or on the host (a repeating block) for the CPU backend. */
async function normal(shape: number[], seed: number, std: number, mean: number, backend: Backend, name?: string): Promise<Tensor> {
  if (backend.name !== 'webgpu') return tensor(inputValues(shape, { seed, std, mean }), shape, { backend, name });
  const g = backend as WebGPUBackend;
  const t = empty(shape, { backend: g, name });
  await g.run(FILL, [], [t], { n: t.size, seed, sigma: std, mu: mean }, grid1d(t.size, 256, g.limits.maxComputeWorkgroupsPerDimension!));
  return t;
}

/** Four random i8 codes per word (pcg: uniform bytes). */
const FILL_CODES = program({
  name: 'bench_fill_codes',
  outputs: { y: 'i8' },
  views: { y: 'u32' },
  uniforms: { n: 'u32', seed: 'u32' },
  workgroupSize: 256,
  helpers: PCG,
  main: `  if (idx >= u.n) { return; }
  y[idx] = pcg(idx ^ pcg(u.seed));`,
});

/**
 * A [N, K] int8 matrix as loadModel's quantize holds it: random i8 codes (uniform bytes, std ~73.9) and f16
 * row scales that give the weights a std of `std`. On the CPU backend the codes repeat a host block.
 */
async function randomInt8(shape: number[], seed: number, std: number, backend: Backend, name: string): Promise<Int8Weight> {
  const [N, K] = shape as [number, number];
  const scales = tensor(new Float32Array(N).fill(std / 73.9), [N], { dtype: 'f16', backend, name: `${name}.scales` });
  if (backend.name !== 'webgpu') {
    const rng = new Rng(seed);
    return { codes: tensor(Int8Array.from({ length: N * K }, () => rng.int(256) - 128), [N, K], { backend, name }), scales };
  }
  const g = backend as WebGPUBackend;
  const codes = empty([N, K], { dtype: 'i8', backend: g, name });
  await g.run(FILL_CODES, [], [codes], { n: (N * K) / 4, seed }, grid1d((N * K) / 4, 256, g.limits.maxComputeWorkgroupsPerDimension!));
  return { codes, scales };
}

/**
 * Random weights for every tensor the preset expects (as packages/models/test/harness.ts draws them): norm
 * weights 1 + N(0, 0.1^2), decay biases N(3, 0.5^2) (a ~ 0.95, as at initialisation), the rest N(0, 1/fan_in).
 */
async function randomWeights<C extends ModelConfig>(preset: PresetDefinition<C>, config: C, backend: Backend, kind: WeightsKind): Promise<Weights> {
  const tensors = new Map<string, LinearWeight>();
  let seed = 1;
  for (const e of expandLayers(preset.tensors(config), config.numHiddenLayers)) {
    if (e.optional) continue;
    const shape = [...((Array.isArray(e.shape![0]) ? e.shape![0] : e.shape!) as number[])];
    const fanIn = shape[shape.length - 1] ?? 1;
    const [std, mean] = /norm\.weight$/.test(e.name) ? [0.1, 1] : /decay_proj\.bias$/.test(e.name) ? [0.5, 3] : /h0$/.test(e.name) ? [0.02, 0] : [fanIn ** -0.5, 0];
    const int8 = kind === 'int8' && isQuantized(e.name);
    tensors.set(e.name, int8 ? await randomInt8(shape, seed++, std, backend, e.name) : await normal(shape, seed++, std, mean, backend, e.name));
  }
  await backend.sync();
  return new Weights('random', tensors, backend);
}

// ---------------------------------------------------------------- synthesised context

/** Fills a fresh state as if `context` tokens had been consumed (see the top of this file). */
async function synthesise(model: ModelName, state: DecodeState, config: ModelConfig, context: number, backend: Backend): Promise<void> {
  const [H, D, L] = [config.numAttentionHeads, config.headDim, config.numHiddenLayers];
  if (model === 'llama') {
    const caches = (state as unknown as { caches: KvCache[] }).caches;
    const Hkv = caches[0]!.heads;
    // one random K and V of the context's length, appended to every layer (appendKv copies them)
    const k = await normal([context, Hkv, D], 101, 1, 0, backend, 'k');
    const v = await normal([context, Hkv, D], 102, 1, 0, backend, 'v');
    for (const cache of caches) await appendKv(cache, { k, v });
    k.dispose();
    v.dispose();
  } else {
    const layers: Tensor[] = [];
    for (let l = 0; l < L; l++) layers.push(await normal([1, H, D, D], 200 + l, 0.5, 0, backend, `state${l}`));
    (state as unknown as { layers: Tensor[] }).layers = layers;
  }
  state.position = context;
  await backend.sync();
}

/** Bytes of state a step at this context reads: llama's K and V of `context` tokens, or the monoid states. */
function stateBytesUsed(model: ModelName, config: ModelConfig, context: number): number {
  const [H, D, L] = [config.numAttentionHeads, config.headDim, config.numHiddenLayers];
  if (model === 'llama') return 2 * L * context * (config as { numKeyValueHeads: number }).numKeyValueHeads * D * 4;
  return L * H * D * D * 4;
}

// ---------------------------------------------------------------- timing

/** WGSL vec4 copy bandwidth (read + write) at `bytes`, in this process: the roofline's denominator. */
async function copyGBps(g: WebGPUBackend, bytes: number): Promise<number> {
  const n = bytes / 4;
  const x = await normal([n], 7, 1, 0, g);
  const y = empty([n], { backend: g });
  const { prog, groups } = memoryKernel(g, n);
  const t = await timeCall(g, () => g.run(prog, [x], [y], { n4: n / 4 }, groups), { reps: 20 });
  x.dispose();
  y.dispose();
  return (2 * bytes) / t.medianMs / 1e6;
}

/** CPU ms of this thread so far (process.threadCpuUsage, Node >= 23.9), or undefined. */
function threadCpuMs(): number | undefined {
  const u = process.threadCpuUsage?.();
  return u && (u.user + u.system) / 1000;
}

/** Per step, the host's part: the forward call until it returns (JS, encoding, submits; the GPU is not awaited). */
interface HostTimes {
  /** Wall-clock ms. */
  wallMs: number[];
  /** CPU ms of the main thread over the same span: less noisy than the wall clock on a shared machine. */
  cpuMs: number[];
}

/** What the study collects at one context. */
interface Samples {
  /** Wall ms per pipelined step. */
  ms: number[];
  /** Wall ms per serial step. */
  serialMs: number[];
  host: HostTimes;
  /** GPU ms per token, every dispatch in a pass of its own (timestamps), per round. */
  gpuMs: number[];
  /** GPU ms per token with dispatches sharing passes as they run, per round. */
  inPassMs: number[];
  /** GPU time by kernel over `gpuTokens` tokens (per-dispatch passes). */
  kernels: Map<string, { count: number; totalMs: number }>;
  gpuTokens: number;
}

/** How a step is awaited: `pipelined` as `generate` runs (step t + 1 recorded before token t is read back), `serial` one step at a time. */
type StepMode = 'pipelined' | 'serial';

class Stepper {
  /** The last sampled id [1, 1] on the backend; its forward is the next step's. */
  private ids: Tensor;
  /** Its read-back, issued when it was sampled. */
  private reading: Promise<number[]>;
  constructor(
    private readonly net: Network,
    readonly state: DecodeState,
    seed: number,
  ) {
    this.ids = tensor([new Rng(seed).int(net.config.vocabSize)], [1, 1], { dtype: 'i32', backend: net.backend });
    this.reading = readIds(this.ids);
  }

  /** Records the forward of the current id and its greedy sample, and issues the sample's read-back. Records the forward call's host time in `host`. */
  private async record(host?: HostTimes): Promise<{ ids: Tensor; reading: Promise<number[]> }> {
    const [t0, c0] = [performance.now(), threadCpuMs()];
    const logits = await this.net.forward(this.ids, { state: this.state, lastOnly: true });
    const [t1, c1] = [performance.now(), threadCpuMs()];
    host?.wallMs.push(t1 - t0);
    if (c0 !== undefined && c1 !== undefined) host?.cpuMs.push(c1 - c0);
    const ids = await sampleNextIds(logits, { temperature: 0 });
    return { ids, reading: readIds(ids) };
  }

  /**
   * One decode step. Pipelined: the next step is recorded, then this token is read back (the GPU computes the
   * next step meanwhile), as `generate` does. Serial: this token is read back before anything else is recorded.
   */
  async step(mode: StepMode, host?: HostTimes): Promise<void> {
    if (mode === 'serial') await this.reading;
    const next = await this.record(host);
    if (mode === 'serial') await next.reading;
    await this.reading;
    this.ids.dispose();
    ({ ids: this.ids, reading: this.reading } = next);
  }

  /** Wall-clock ms of each of `n` steps: from the end of the step before to the end of this one. */
  async timeSteps(n: number, mode: StepMode, host?: HostTimes): Promise<number[]> {
    const ms: number[] = [];
    let t0 = performance.now();
    for (let i = 0; i < n; i++) {
      await this.step(mode, host);
      const t1 = performance.now();
      ms.push(t1 - t0);
      t0 = t1;
    }
    return ms;
  }

  dispose(): void {
    this.ids.dispose();
    this.state.dispose();
  }
}

async function decodeStudy(ctx: CaseContext, model: ModelName, kind: WeightsKind, emit: (row: Partial<Row> & { name: string }) => void): Promise<void> {
  const { backend, quick } = ctx;
  if (!ctx.gpu && !quick && !ctx.option('override')) throw new Error('the full decode study is GPU work (~6 GB of weights per model); on the CPU backend use --quick');
  // --override '{"vocab_size": 8192}': config.json fields over the geometry (to try other sizes)
  const override = JSON.parse(ctx.option('override') ?? '{}') as Record<string, unknown>;
  const json = { ...(quick ? (model === 'llama' ? TINY_LLAMA : TINY_SPARTACUS) : model === 'llama' ? LLAMA_1B : SPARTACUS), ...override };
  const config = parseConfig(json, { file: `${model} geometry` });
  const preset = PRESETS[config.preset] as PresetDefinition<ModelConfig> | undefined;
  if (!preset) throw new Error(`decode study: @phalanx/models has no '${config.preset}' preset yet`);
  // row names: decode-spartacus-ctx64 (matched by name to the PyTorch rows, f32), decode-spartacus-int8-ctx64
  const tag = kind === 'f32' ? model : `${model}-${kind}`;
  const contexts = ctx.option('contexts')?.split(',').map(Number) ?? (quick ? QUICK_CONTEXTS : CONTEXTS);
  const steps = ctx.reps;
  const warm = quick ? 2 : 4;
  const gpuSteps = quick ? 2 : 8;
  const rounds = Number(ctx.option('rounds')) || 2;
  const prefillTs = ctx.option('prefill')?.split(',').map(Number) ?? (quick ? [16] : [512, 2048, 8192]);
  const realContext = quick ? 16 : 1024;

  let t0 = performance.now();
  const weights = await randomWeights(preset, config, backend, kind);
  const net = preset.build(config, weights);
  const weightBytes = weights.bytes;
  const hidden = config.hiddenSize;
  // tied: the head reads the whole embedding table each token; untied: the embedding contributes one row
  const embedBytes = config.vocabSize * hidden * 4;
  const weightBytesPerToken = weightBytes - (config.tieWordEmbeddings ? 0 : embedBytes - hidden * 4);
  const params = weights.names.reduce((n, name) => n + weightMatrix(weights.matrix(name)).size, 0);
  ctx.log(`decode ${model}: ${(weightBytes / 2 ** 30).toFixed(2)} GiB of ${kind} weights (${(params / 1e9).toFixed(3)} B params) in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  // the copy's size: 1 GiB (16 MiB with --quick), or the largest power of two the device binds
  const copyBytes = ctx.gpu ? 2 ** Math.floor(Math.log2(Math.min(quick ? 2 ** 24 : 2 ** 30, ctx.gpu.limits.maxStorageBufferBindingSize!, ctx.gpu.limits.maxBufferSize!))) : 0;
  const copy = ctx.gpu ? await copyGBps(ctx.gpu, copyBytes) : undefined;

  const common = {
    model,
    weights: kind,
    config: json,
    weightBytes,
    weightBytesPerToken,
    params,
    copyGBps: copy,
    rooflineMsPerToken: copy ? weightBytesPerToken / copy / 1e6 : undefined,
    copyBytes: copy ? copyBytes : undefined,
  };

  // the first decode step of a fresh network (from an 8-token synthesised context): pipeline compilation
  let compileMs: number;
  {
    const state = net.createState(1, 16);
    await synthesise(model, state, config, 8, backend);
    const s = new Stepper(net, state, 1);
    t0 = performance.now();
    await s.step('serial');
    compileMs = performance.now() - t0;
    s.dispose();
  }

  /** One round at one context: warm-up, pipelined and serial steps by the wall clock, then the GPU's view of pipelined steps. */
  const measure = async (s: Stepper, into: Samples): Promise<void> => {
    await s.timeSteps(warm, 'pipelined');
    into.ms.push(...(await s.timeSteps(steps, 'pipelined', into.host)));
    into.serialMs.push(...(await s.timeSteps(steps, 'serial')));
    if (!ctx.gpu) return;
    const perDispatch = await gpuProfileOf(ctx.gpu, () => s.timeSteps(gpuSteps, 'pipelined'), 'timestamp');
    const inPass = await gpuProfileOf(ctx.gpu, () => s.timeSteps(gpuSteps, 'pipelined'), 'pass');
    if (!perDispatch || !inPass) return;
    into.gpuMs.push(perDispatch.totalMs / gpuSteps);
    into.inPassMs.push(inPass.totalMs / gpuSteps);
    into.gpuTokens += gpuSteps;
    for (const k of perDispatch.kernels) {
      const e = into.kernels.get(k.name) ?? { count: 0, totalMs: 0 };
      e.count += k.count;
      e.totalMs += k.totalMs;
      into.kernels.set(k.name, e);
    }
  };
  const stepsPerRound = warm + 2 * steps + 2 * gpuSteps;
  const newSamples = (): Samples => ({ ms: [], serialMs: [], host: { wallMs: [], cpuMs: [] }, gpuMs: [], inPassMs: [], kernels: new Map(), gpuTokens: 0 });

  // states at every context, filled
  const steppers: Stepper[] = [];
  for (const [i, c] of contexts.entries()) {
    t0 = performance.now();
    const state = net.createState(1, c + rounds * stepsPerRound + 8);
    await synthesise(model, state, config, c, backend);
    steppers.push(new Stepper(net, state, 10 + i));
    ctx.log(`decode ${model}: context ${c} synthesised in ${(performance.now() - t0).toFixed(0)} ms (state ${(state.bytes / 2 ** 20).toFixed(1)} MiB allocated)`);
  }

  const samples = contexts.map(newSamples);
  for (let r = 0; r < rounds; r++) {
    for (const [i, s] of steppers.entries()) await measure(s, samples[i]!);
  }

  const row = (name: string, context: number, m: Samples, state: DecodeState, extra: object = {}) => {
    const med = median(m.ms);
    const used = stateBytesUsed(model, config, context);
    // a step reads the weights once and the state (llama: the K/V of the context; spartacus: the states, read and written)
    const readBytes = weightBytesPerToken + (model === 'llama' ? used : 2 * used);
    emit({
      name,
      ...common,
      context,
      firstMs: compileMs,
      medianMs: med,
      minMs: Math.min(...m.ms),
      maxMs: Math.max(...m.ms),
      wallMs: med,
      serialMsPerToken: median(m.serialMs),
      serialMinMs: Math.min(...m.serialMs),
      gpuMsPerToken: m.gpuMs.length ? median(m.gpuMs) : undefined,
      gpuInPassMsPerToken: m.inPassMs.length ? median(m.inPassMs) : undefined,
      hostMsPerToken: median(m.host.wallMs),
      hostCpuMsPerToken: m.host.cpuMs.length ? median(m.host.cpuMs) : undefined,
      msPerToken: med,
      tokensPerSec: 1000 / med,
      reps: m.ms.length,
      rounds,
      bytes: weightBytesPerToken,
      GBps: weightBytesPerToken / med / 1e6,
      stateBytesAllocated: state.bytes,
      stateBytesUsed: used,
      readBytesPerToken: readBytes,
      ofRoofline: copy ? weightBytesPerToken / copy / 1e6 / med : undefined,
      ofRooflineWithState: copy ? readBytes / copy / 1e6 / med : undefined,
      synthesised: true,
      timing: 'wall per step, pipelined as generate runs (step t + 1 recorded before token t is read back); serialMsPerToken: each step read back before the next is recorded',
      kernels: m.gpuTokens
        ? [...m.kernels]
            .sort((a, b) => b[1].totalMs - a[1].totalMs)
            .map(([kernel, e]) => ({ name: kernel, perToken: e.count / m.gpuTokens, msPerToken: e.totalMs / m.gpuTokens }))
        : undefined,
      ...extra,
    });
  };
  for (const [i, c] of contexts.entries()) row(`decode-${tag}-ctx${c}`, c, samples[i]!, steppers[i]!.state);
  for (const s of steppers) s.dispose();

  // one context by a real prefill, decoded the same way: should match the synthesised one
  {
    const state = net.createState(1, realContext + stepsPerRound + 8);
    const ids = Array.from({ length: realContext }, (_, t) => (t * 7919 + 13) % config.vocabSize);
    (await net.forward([ids], { state, lastOnly: true })).dispose();
    const s = new Stepper(net, state, 99);
    const m = newSamples();
    await measure(s, m);
    row(`decode-${tag}-ctx${realContext}-real`, realContext, m, state, { synthesised: false });
    s.dispose();
  }

  // prefill tokens/s vs T (a fresh state per call, logits of the last position only). FLOPs: 2 per
  // non-embedding weight per token, plus the head once (attention scores left out: an approximation)
  const bodyParams = params - config.vocabSize * hidden * (config.tieWordEmbeddings ? 1 : 2);
  const prefillFlops = (T: number) => 2 * bodyParams * T + 2 * config.vocabSize * hidden;
  for (const T of prefillTs) {
    const ids = Array.from({ length: T }, (_, t) => (t * 7919 + 13) % config.vocabSize);
    try {
      const t = await timeCall(
        backend,
        async () => {
          const state = net.createState(1, T);
          try {
            (await net.forward([ids], { state, lastOnly: true })).dispose();
          } finally {
            state.dispose();
          }
        },
        { reps: quick ? 2 : 3, rounds: quick ? 2 : 3, warmupMs: 0, warmupCalls: 1 },
      );
      emit({
        name: `prefill-${tag}-T${T}`,
        model,
        weights: kind,
        T,
        firstMs: t.firstMs,
        medianMs: t.wallMs,
        minMs: t.wallMinMs,
        maxMs: t.wallMaxMs,
        wallMs: t.wallMs,
        gpuMs: t.medianMs,
        reps: t.reps,
        tokensPerSec: T / (t.wallMs / 1000),
        flops: prefillFlops(T),
        GFLOPs: prefillFlops(T) / t.wallMs / 1e6,
        timing: 'wall per prefill call (fresh state, lastOnly)',
      });
    } catch (e) {
      emit({ name: `prefill-${tag}-T${T}`, model, T, error: (e as Error).message });
    }
  }
  emit({ name: `decode-${tag}-notes`, notes: NOTES, compileMs, ...common });
  net.dispose();
}

/**
 * The playground page: loads a tiny model (served at models/<preset>/ from packages/tiny-models/models) on
 * WebGPU or the CPU, streams generated text, and shows tokens/s, per-kernel times and decode time per token.
 * The page's state is mirrored in <body data-state data-backend data-tokens> for the end-to-end test.
 */
import { type Backend, cpu } from '@phalanx/core';
import { type LoadProgressEvent, type Model, loadModel } from '@phalanx/models';
import { type ProfileReport, WebGPUBackend, createWebGPUBackend } from '@phalanx/webgpu';
import { type Point, drawPlot } from './plot.js';

/** The tiny models' names (from @phalanx/tiny-models, whose index is Node-only). */
const PRESETS = ['spartacus', 'nanohammer', 'parcae', 'llama'] as const;

const $ = <T extends Element>(id: string) => document.getElementById(id) as unknown as T;
const ui = {
  preset: $<HTMLSelectElement>('preset'),
  backend: $<HTMLSelectElement>('backend'),
  maxTokens: $<HTMLInputElement>('max-tokens'),
  temperature: $<HTMLInputElement>('temperature'),
  seed: $<HTMLInputElement>('seed'),
  profile: $<HTMLInputElement>('profile'),
  generate: $<HTMLButtonElement>('generate'),
  stop: $<HTMLButtonElement>('stop'),
  prompt: $<HTMLTextAreaElement>('prompt'),
  status: $<HTMLDivElement>('status'),
  output: $<HTMLDivElement>('output'),
  speed: $<HTMLTableElement>('speed'),
  plot: $<SVGSVGElement>('plot'),
  profileNote: $<HTMLParagraphElement>('profile-note'),
  kernels: $<HTMLTableElement>('kernels'),
};

type State = 'starting' | 'idle' | 'loading' | 'generating' | 'done' | 'error';
const setState = (state: State) => (document.body.dataset.state = state);

function status(text: string, kind: 'info' | 'warn' | 'error' = 'info'): void {
  ui.status.textContent = text;
  ui.status.className = kind;
}

/** The WebGPU backend, or why there is none: asked for once. */
let gpu: Promise<WebGPUBackend | string> | undefined;
const webgpu = () => (gpu ??= createWebGPUBackend().catch((e: Error) => e.message));

const missing = new Set<string>();
/** The loaded model, and how many generations it has run (the first one compiles the GPU pipelines). */
let loaded: { key: string; model: Model; runs: number } | undefined;
let controller: AbortController | undefined;

const modelUrl = (preset: string) => new URL(`models/${preset}/`, document.baseURI);

/** Marks the presets whose checkpoint folder is not there, applies URL parameters, and says what WebGPU offers. */
async function init(): Promise<void> {
  const params = new URLSearchParams(location.search);
  await Promise.all(
    PRESETS.map(async (p) => {
      const res = await fetch(new URL('config.json', modelUrl(p)), { method: 'HEAD' }).catch(() => undefined);
      if (!res?.ok) missing.add(p);
    }),
  );
  for (const p of PRESETS) ui.preset.append(new Option(missing.has(p) ? `${p} (missing)` : p, p));
  ui.preset.value = params.get('preset') ?? PRESETS.find((p) => !missing.has(p)) ?? PRESETS[0];
  ui.backend.value = params.get('backend') ?? 'webgpu';
  ui.maxTokens.value = params.get('tokens') ?? ui.maxTokens.value;
  if (params.has('prompt')) ui.prompt.value = params.get('prompt')!;

  const g = await webgpu();
  if (typeof g === 'string') useCpu(g);
  else {
    const kind = g.info.isSoftware ? ', a software implementation: correct but slow' : '';
    status(`WebGPU adapter: ${adapterName(g)}${kind}.`);
  }
  ui.profile.checked = typeof g !== 'string' && g.features.has('timestamp-query');
  if (missing.size === PRESETS.length) status(`No tiny model found under packages/tiny-models/models/ (served at ${new URL('models/', document.baseURI).pathname}).`, 'error');
  ui.generate.addEventListener('click', () => void generate());
  ui.stop.addEventListener('click', () => controller?.abort());
  setState('idle');
}

/** The backend the user picked, or the CPU (said on the page) when WebGPU is not available. */
async function pickBackend(): Promise<Backend> {
  if (ui.backend.value === 'cpu') return cpu;
  const g = await webgpu();
  if (typeof g !== 'string') return g;
  useCpu(g);
  return cpu;
}

function useCpu(whyNoWebGPU: string): void {
  ui.backend.value = 'cpu';
  status(`WebGPU is not available in this browser, so the CPU runs the model. (${whyNoWebGPU})`, 'warn');
}

/** The model of `preset` on `backend`, loaded once (with download and read progress) and kept until either changes. */
async function modelFor(preset: string, backend: Backend): Promise<Model> {
  const key = `${preset}@${backend.name}`;
  if (loaded?.key === key) return loaded.model;
  loaded?.model.dispose();
  loaded = undefined;
  setState('loading');
  const t0 = performance.now();
  let downloaded = 0;
  const model = await loadModel(modelUrl(preset), {
    backend,
    onProgress: (e: LoadProgressEvent) => {
      if (e.stage === 'download') downloaded = e.bytesDone;
      const total = Number.isNaN(e.bytesTotal) ? '' : ` of ${size(e.bytesTotal)}`;
      status(e.stage === 'download' ? `Downloading ${e.file.split('/').pop()}: ${size(e.bytesDone)}${total}` : `Reading tensors: ${Math.round((100 * e.bytesDone) / e.bytesTotal)}%`);
    },
  });
  loaded = { key, model, runs: 0 };
  status(`Loaded ${preset} (${size(downloaded)}) on ${backend.name} in ${((performance.now() - t0) / 1000).toFixed(2)} s.`);
  return model;
}

async function generate(): Promise<void> {
  const preset = ui.preset.value;
  if (missing.has(preset)) {
    status(`No checkpoint for ${preset}: packages/tiny-models/models/${preset}/ (served at ${modelUrl(preset).pathname}) has no config.json. The trained tiny models land there.`, 'error');
    setState('error');
    return;
  }
  controller = new AbortController();
  ui.generate.disabled = true;
  ui.stop.disabled = false;
  let profile: { stop(): Promise<ProfileReport> } | undefined;
  try {
    const backend = await pickBackend();
    const model = await modelFor(preset, backend);
    const firstRun = loaded!.runs++ === 0;
    document.body.dataset.backend = model.backend.name;
    setState('generating');

    const prompt = ui.prompt.value;
    const maxNewTokens = Number(ui.maxTokens.value);
    const promptTokens = model.tokenizer?.encode(prompt).length ?? 0;
    const generated = document.createElement('span');
    ui.output.replaceChildren(Object.assign(document.createElement('span'), { className: 'prompt', textContent: prompt }), generated);
    profile = ui.profile.checked && backend instanceof WebGPUBackend ? backend.profile('auto') : undefined;

    // Step i (i >= 1) is the forward of the token at position promptTokens + i - 1 and its sampling. The
    // clock restarts after the page has drawn, so the plot holds the model's time only.
    const steps: Point[] = [];
    let events = 0;
    let last = performance.now();
    const generation = model.generate({ prompt, maxNewTokens, temperature: Number(ui.temperature.value), seed: Number(ui.seed.value), signal: controller.signal });
    for await (const { text } of generation) {
      const ms = performance.now() - last;
      // The event after the last token only flushes text held back (no forward): not a step.
      if (events > 0 && events < maxNewTokens) steps.push({ x: promptTokens + events - 1, y: ms });
      events++;
      generated.textContent += text;
      document.body.dataset.tokens = String(Math.min(events, maxNewTokens));
      drawPlot(ui.plot, steps, 'position', 'ms / token');
      await nextTask();
      last = performance.now();
    }
    const summary = await generation.summary;
    document.body.dataset.tokens = String(summary.tokenIds.length);
    const stepMs = steps.reduce((s, p) => s + p.y, 0) / Math.max(steps.length, 1);
    showSpeed([
      ['backend', backend instanceof WebGPUBackend ? `WebGPU (${adapterName(backend)})` : 'CPU'],
      ['prompt', `${summary.promptTokens} tokens`],
      ['prefill', `${summary.prefillTokensPerSecond.toFixed(1)} tokens/s (${summary.prefillMs.toFixed(1)} ms${firstRun && backend !== cpu ? ', compiling the GPU pipelines on this first run' : ''})`],
      ['decode', steps.length ? `${(1000 / stepMs).toFixed(1)} tokens/s (${stepMs.toFixed(2)} ms/token over ${steps.length} steps)` : '-'],
      ['decode, wall-clock', `${summary.decodeTokensPerSecond.toFixed(1)} tokens/s, with the page's drawing between tokens`],
      ['generated', `${summary.tokenIds.length} tokens (stopped: ${summary.stopReason})`],
      ['decode state', size(summary.stateBytes)],
    ]);
    showProfile(profile && (await profile.stop()), backend);
    profile = undefined;
    setState('done');
  } catch (e) {
    status(`${(e as Error).name}: ${(e as Error).message}`, 'error');
    setState('error');
  } finally {
    await profile?.stop().catch(() => undefined);
    ui.generate.disabled = false;
    ui.stop.disabled = true;
  }
}

function showSpeed(rows: [string, string][]): void {
  ui.speed.replaceChildren(...rows.map(([k, v]) => row('td', k, v)));
}

function showProfile(report: ProfileReport | undefined, backend: Backend): void {
  ui.kernels.replaceChildren();
  if (!(backend instanceof WebGPUBackend)) {
    ui.profileNote.textContent = 'Per-kernel times come from the WebGPU profiler; on the CPU only the prefill and decode times are measured.';
    return;
  }
  if (!report) {
    const why = backend.features.has('timestamp-query') ? '' : ' This adapter has no timestamp-query, so profiling would time each dispatch alone.';
    ui.profileNote.textContent = `Profiling is off.${why}`;
    return;
  }
  ui.profileNote.textContent =
    report.mode === 'timestamp'
      ? `GPU time per kernel from timestamp queries, prefill and decode together: ${report.totalMs.toFixed(1)} ms in all.`
      : `This adapter has no timestamp-query: these are wall-clock times of each dispatch submitted and awaited alone (submit overhead included; it also slows the generation above). ${report.totalMs.toFixed(1)} ms in all.`;
  const top = report.kernels[0]?.totalMs ?? 1;
  ui.kernels.append(row('th', 'kernel', 'calls', 'total ms', 'mean ms', ''));
  for (const k of report.kernels) {
    const r = row('td', k.name, String(k.count), k.totalMs.toFixed(2), k.meanMs.toFixed(3), '');
    const bar = Object.assign(document.createElement('div'), { className: 'bar' });
    bar.style.width = `${(100 * k.totalMs) / top}%`;
    r.lastElementChild!.append(bar);
    ui.kernels.append(r);
  }
}

function adapterName(gpu: WebGPUBackend): string {
  return gpu.info.description || `${gpu.info.vendor} ${gpu.info.architecture}`;
}

function row(cell: 'td' | 'th', ...values: string[]): HTMLTableRowElement {
  const tr = document.createElement('tr');
  for (const v of values) tr.append(Object.assign(document.createElement(cell), { textContent: v }));
  return tr;
}

function size(bytes: number): string {
  return bytes < 2 ** 20 ? `${(bytes / 2 ** 10).toFixed(1)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** A new task, so the browser can paint between tokens: the CPU backend's awaits never leave the microtask queue. */
function nextTask(): Promise<void> {
  const { port1, port2 } = new MessageChannel(); // not setTimeout: nested timers are clamped to 4 ms
  return new Promise((resolve) => {
    port1.onmessage = () => {
      port1.close();
      resolve();
    };
    port2.postMessage(null);
  });
}

void init();

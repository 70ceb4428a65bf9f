/**
 * What the runner does with rows: the device peaks and the ratios to them, the results cache per git branch
 * (`.bench/<branch>.json`, git-ignored) with the speedup against the last main results, the markdown tables
 * (all cases; WebGPU against PyTorch; the decode study).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Row } from './harness.js';

/** A PyTorch result line (tools/reference): impl names the implementation ('pytorch', 'pytorch-cudagraph', 'transformers'). */
export interface TorchRow {
  impl: string;
  component?: string;
  name: string;
  device?: string;
  medianMs?: number;
  error?: string;
  [field: string]: unknown;
}

export interface Results {
  meta: { date: string; branch: string; commit: string; quick: boolean; command: string; node: string };
  peaks: Record<string, { device: string; backend: string; copyGBps?: number; matmulGFLOPs?: number }>;
  rows: Row[];
  pytorch: TorchRow[];
  failures: { case: string; backend: string; tries: number; exit: string }[];
}

// ---------------------------------------------------------------- git and the cache

function git(args: string[], cwd: string): string | undefined {
  try {
    return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

export function gitInfo(root: string): { branch: string; commit: string } {
  // BENCH_BRANCH / BENCH_COMMIT: set by tools/gpu/remote.sh from what pack.sh saw (no git on the GPU machine)
  return {
    branch: process.env.BENCH_BRANCH ?? git(['rev-parse', '--abbrev-ref', 'HEAD'], root) ?? 'unknown',
    commit: process.env.BENCH_COMMIT ?? git(['rev-parse', '--short', 'HEAD'], root) ?? 'unknown',
  };
}

const cacheFile = (root: string, branch: string) => join(root, '.bench', `${branch.replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
export const rowKey = (r: Row, quick: boolean) => `${r.device}|${r.backend}|${quick ? 'quick' : 'full'}|${r.component}/${r.name}`;

interface Cache {
  branch: string;
  commit: string;
  updated: string;
  rows: Record<string, Row & { commit?: string }>;
}

function readCache(file: string): Cache | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Cache;
  } catch {
    return undefined;
  }
}

/**
 * Adds `speedup` (main's median / this median, same device, backend, size and case) from `.bench/main.json`
 * as it was before this run, then records these rows in `.bench/<branch>.json`.
 */
export function applyCache(root: string, results: Results): { file: string; mainRows: number } {
  const { branch, commit } = results.meta;
  const main = readCache(cacheFile(root, 'main'));
  for (const r of results.rows) {
    const base = main?.rows[rowKey(r, results.meta.quick)];
    if (base?.medianMs && r.medianMs) {
      r.speedup = base.medianMs / r.medianMs;
      r.mainCommit = base.commit;
    }
  }
  const file = cacheFile(root, branch);
  const cache = readCache(file) ?? { branch, commit, updated: '', rows: {} };
  for (const r of results.rows) if (r.medianMs !== undefined && !r.error) cache.rows[rowKey(r, results.meta.quick)] = { ...r, commit };
  cache.commit = commit;
  cache.updated = new Date().toISOString();
  mkdirSync(join(root, '.bench'), { recursive: true });
  writeFileSync(file, `${JSON.stringify(cache, null, 1)}\n`);
  return { file, mainRows: main ? Object.keys(main.rows).length : 0 };
}

// ---------------------------------------------------------------- peaks

/** Peaks per backend and device from the device/peak-* rows; then each row's ratio to them. */
export function applyPeaks(results: Results): void {
  const peaks: Results['peaks'] = {};
  for (const r of results.rows) {
    if (r.component !== 'device' || r.error) continue;
    const p = (peaks[`${r.backend}|${r.device}`] ??= { device: r.device, backend: r.backend });
    if (r.name === 'peak-copy') p.copyGBps = r.GBps;
    if (r.name === 'peak-matmul') p.matmulGFLOPs = r.GFLOPs;
  }
  results.peaks = peaks;
  for (const r of results.rows) {
    const p = peaks[`${r.backend}|${r.device}`];
    if (!p || r.component === 'device') continue;
    if (r.GBps !== undefined && p.copyGBps) r.ofPeakBW = r.GBps / p.copyGBps;
    if (r.GFLOPs !== undefined && p.matmulGFLOPs) r.ofPeakFlops = r.GFLOPs / p.matmulGFLOPs;
    if (r.component === 'decode' && r.bytes !== undefined && r.medianMs && p.copyGBps) r.ofRooflineRunPeak = (r.bytes as number) / p.copyGBps / 1e6 / r.medianMs;
  }
}

// ---------------------------------------------------------------- markdown

const f = (v: unknown, digits = 3): string => {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '';
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(1);
  return v.toPrecision(digits);
};
const pct = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? `${(100 * v).toFixed(v < 0.1 ? 1 : 0)}%` : '');
const mib = (v: unknown) =>
  typeof v === 'number' ? (v >= 2 ** 30 ? `${(v / 2 ** 30).toFixed(2)} GiB` : v >= 2 ** 20 ? `${(v / 2 ** 20).toFixed(1)} MiB` : `${(v / 2 ** 10).toFixed(1)} KiB`) : '';

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** Every case: times, rates, ratio to the peaks, check, speedup against main. */
export function casesTable(results: Results): string {
  const rows = results.rows.filter((r) => !(r.component === 'decode' && String(r.name).endsWith('-notes')));
  const body = rows.map((r) => {
    const check = r.check as { ok?: boolean; relRmse?: number } | undefined;
    const peak = [r.ofPeakBW !== undefined ? `${pct(r.ofPeakBW)} bw` : '', r.ofPeakFlops !== undefined ? `${pct(r.ofPeakFlops)} flops` : ''].filter(Boolean).join(', ');
    const fb = r.fallbacks ? ` fallbacks: ${Object.entries(r.fallbacks).map(([k, n]) => `${k} x${n}`).join(', ')}` : '';
    return [
      r.component,
      r.name + (r.error ? ` **error: ${String(r.error).slice(0, 120)}**` : '') + fb,
      r.backend,
      f(r.firstMs),
      r.medianMs !== undefined ? `${f(r.medianMs)} (${f(r.minMs)}-${f(r.maxMs)})` : '',
      f(r.wallMs),
      f(r.passMs as number | undefined),
      f(r.GFLOPs),
      f(r.GBps),
      peak,
      check ? `${check.ok === false ? 'FAIL ' : ''}${check.relRmse !== undefined ? check.relRmse.toExponential(1) : ''}` : '',
      r.speedup !== undefined ? `${f(r.speedup)}x` : '',
    ];
  });
  const peaks = Object.values(results.peaks)
    .map((p) => `- peaks on ${p.backend} (${p.device}): copy ${f(p.copyGBps)} GB/s, f32 matmul ${f(p.matmulGFLOPs)} GFLOP/s`)
    .join('\n');
  return `${table(['component', 'case', 'backend', 'first ms', 'median ms (min-max)', 'wall ms', 'in-pass ms', 'GFLOP/s', 'GB/s', 'of peak', 'check', 'vs main'], body)}\n\n${peaks}\n\nmedian ms: GPU time per call on WebGPU (timestamps, every dispatch in a pass of its own, every pass summed), wall-clock on the CPU; in-pass ms: the same with dispatches sharing passes as in a model (no fixed cost of a pass per dispatch); decode rows: wall-clock ms per token. first ms: the first call (pipeline compilation included). vs main: main's median / this median (same device and size), from .bench/main.json.\n`;
}

/** WebGPU against each PyTorch implementation, case by case (ratio > 1: WebGPU faster). */
export function ratioTable(results: Results): string {
  const impls = [...new Set(results.pytorch.map((p) => p.impl))].sort();
  if (impls.length === 0) return '';
  const torch = (r: Row, impl: string) => results.pytorch.find((p) => p.impl === impl && p.name === r.name && (p.component === undefined || p.component === r.component) && p.medianMs !== undefined);
  const body: string[][] = [];
  for (const r of results.rows) {
    if (r.backend !== 'webgpu' || r.medianMs === undefined) continue;
    const matches = impls.map((i) => torch(r, i));
    if (!matches.some(Boolean)) continue;
    body.push([r.component, r.name, f(r.medianMs), ...matches.flatMap((m) => (m ? [f(m.medianMs), `**${f(m.medianMs! / r.medianMs!)}x**`] : ['', '']))]);
  }
  const devices = [...new Set(results.pytorch.map((p) => p.device).filter(Boolean))].join(', ');
  return `${table(['component', 'case', 'WebGPU ms', ...impls.flatMap((i) => [`${i} ms`, `${i} / WebGPU`])], body)}\n\nPyTorch device: ${devices}. Ratio = PyTorch ms / WebGPU ms (above 1: WebGPU faster). Decode rows compare wall-clock ms per token on both sides.\n`;
}

/** The decode study: per model and context, ms/token, tokens/s, roofline, state bytes, and PyTorch beside it (one table per backend). */
export function decodeTable(results: Results): string {
  const all = results.rows.filter((r) => r.component === 'decode');
  const backends = [...new Set(all.map((r) => r.backend))].sort((a, b) => (a === 'webgpu' ? -1 : b === 'webgpu' ? 1 : 0));
  return backends.map((b) => decodeSection(results, all.filter((r) => r.backend === b), backends.length > 1 ? b : undefined)).join('\n');
}

function decodeSection(results: Results, all: Row[], heading: string | undefined): string {
  const rows = all.filter((r) => String(r.name).startsWith('decode-') && !String(r.name).endsWith('-notes'));
  if (rows.length === 0 && all.length === 0) return '';
  // PyTorch rows sit beside the GPU rows only
  const gpu = all[0]?.backend === 'webgpu';
  const torch = (name: string, impl: string) => (gpu ? results.pytorch.find((p) => p.impl === impl && p.name === name && p.medianMs !== undefined) : undefined);
  // the hardware's copy rate as PyTorch reaches it (copy_ of 1 GiB), when the PyTorch side ran
  const torchCopy = gpu ? (results.pytorch.find((p) => p.name === 'peak-copy' && typeof p.GBps === 'number')?.GBps as number | undefined) : undefined;
  const body = rows.map((r) => {
    const [eager, graph, hf] = ['pytorch', 'pytorch-cudagraph', 'transformers'].map((i) => torch(r.name, i));
    const ratio = (p: TorchRow | undefined) => (p && r.medianMs ? ` (${f(p.medianMs! / r.medianMs)}x)` : '');
    return [
      `${r.model ?? ''}${r.weights && r.weights !== 'f32' ? ` ${r.weights}` : ''}`,
      `${r.context ?? ''}${r.synthesised === false ? ' (real prefill)' : ''}`,
      r.error ? `error: ${String(r.error).slice(0, 80)}` : `${f(r.medianMs)} (${f(r.minMs)}-${f(r.maxMs)})`,
      f(r.gpuInPassMsPerToken ?? r.gpuMsPerToken),
      f(r.serialMsPerToken),
      f(r.tokensPerSec),
      pct(r.ofRoofline),
      torchCopy && r.medianMs ? pct((r.bytes as number) / torchCopy / 1e6 / r.medianMs) : '',
      mib(r.stateBytesUsed),
      eager ? `${f(eager.medianMs)}${ratio(eager)}` : '',
      graph ? `${f(graph.medianMs)}${ratio(graph)}` : '',
      hf ? `${f(hf.medianMs)}${ratio(hf)}` : '',
    ];
  });
  const flat = ['spartacus', 'llama'].flatMap((m) => ['f32', 'int8'].map((w) => {
    const ms = rows.filter((r) => r.model === m && (r.weights ?? 'f32') === w && r.synthesised !== false && r.medianMs !== undefined).sort((a, b) => (a.context as number) - (b.context as number));
    if (ms.length < 2) return '';
    return `- ${m} ${w}: ${f(ms.at(-1)!.medianMs)} ms/token at context ${ms.at(-1)!.context} vs ${f(ms[0]!.medianMs)} at ${ms[0]!.context}: ${((100 * ms.at(-1)!.medianMs!) / ms[0]!.medianMs! - 100).toFixed(1)}%`;
  }));
  const notes = all.filter((r) => String(r.name).endsWith('-notes'));
  const weights = notes.map(
    (r) =>
      `- ${r.model}: ${mib(r.weightBytes)} of ${r.weights ?? 'f32'} weights (${f((r.params as number) / 1e9)} B parameters), ${mib(r.weightBytesPerToken)} read per token` +
      (r.copyGBps ? `; copy ${f(r.copyGBps)} GB/s in the same process, so the weight-bandwidth roofline is ${f(r.rooflineMsPerToken)} ms/token` : ''),
  );
  const prefillLines = all.filter((r) => String(r.name).startsWith('prefill-')).map((r) => {
    const hf = torch(r.name, 'transformers');
    return `- ${r.model}${r.weights && r.weights !== 'f32' ? ` ${r.weights}` : ''} prefill T = ${r.T}: ${r.error ? `error: ${r.error}` : `${f(r.medianMs)} ms, ${f(r.tokensPerSec)} tokens/s`}${hf ? ` (transformers: ${f(hf.medianMs)} ms, ${f(hf.tokensPerSec)} tokens/s)` : ''}`;
  });
  const n = notes[0]?.notes as Record<string, string> | undefined;
  const failed = all.filter((r) => r.error && !String(r.name).startsWith('decode-') && !String(r.name).startsWith('prefill-')).map((r) => `- ${r.name}: **${r.error}**`);
  return [
    ...(heading ? [`### on ${heading}`, ''] : []),
    table(['model', 'context', 'ms/token (min-max)', 'GPU ms/token (in pass)', 'serial ms/token', 'tokens/s', 'of roofline (WGSL copy)', 'of roofline (PyTorch copy)', 'state/KV read', 'PyTorch eager ms', 'PyTorch CUDA graph ms', 'transformers ms'], body),
    '',
    'Ratios in brackets: PyTorch ms / ours (above 1: ours faster). ms/token: wall clock per step, median over the steps of two rounds, pipelined as `generate` runs (step t + 1 recorded before token t is read back); serial: each step read back before the next is recorded. GPU ms/token: dispatches sharing passes as they run (timestamps per pass). PyTorch rows: CUDA-event time per step, synchronised per step. Roofline: weight bytes per token / copy bandwidth (read + write) of a WGSL vec4 copy in the same process, or of PyTorch `copy_` (1 GiB) on the same GPU in the same call.',
    ...(torchCopy ? ['', `PyTorch copy_: ${f(torchCopy)} GB/s.`] : []),
    '',
    ...failed,
    ...flat.filter(Boolean),
    ...weights,
    ...prefillLines,
    ...(n ? ['', ...Object.values(n).map((v) => `- ${v}`)] : []),
    '',
  ].join('\n');
}

export function markdown(results: Results): string {
  const { meta } = results;
  const parts = [`# Benchmark results (${meta.date}, ${meta.branch} @ ${meta.commit}${meta.quick ? ', --quick' : ''})`, '', `Command: \`${meta.command}\``, ''];
  const decode = decodeTable(results);
  if (decode) parts.push('## Decode study', '', decode);
  const ratio = ratioTable(results);
  if (ratio) parts.push('## WebGPU vs PyTorch (same GPU, same call)', '', ratio);
  parts.push('## All cases', '', casesTable(results));
  if (results.failures.length) parts.push('## Failed tries', '', ...results.failures.map((x) => `- ${x.case} on ${x.backend}: try ${x.tries} failed (${x.exit})`), '');
  return parts.join('\n');
}

export function writeOut(dir: string, results: Results): string[] {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
  const files = [join(dir, 'results.json'), join(dir, 'results.md'), join(dir, 'results.jsonl')];
  writeFileSync(files[0]!, `${JSON.stringify(results, null, 1)}\n`);
  writeFileSync(files[1]!, markdown(results));
  writeFileSync(files[2]!, [...results.rows, ...results.pytorch].map((r) => JSON.stringify(r)).join('\n') + '\n');
  return files;
}

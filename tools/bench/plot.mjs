// Draws the SVG charts of docs/benchmarks from the JSON lines beside them (no chart service, no dependency),
// or, with --results, the standard charts of a results.json written by the runner (tools/bench/run.ts).
// usage: node tools/bench/plot.mjs                                  (the charts of docs/benchmarks)
//        node tools/bench/plot.mjs --results results.json [--out DIR]  (decode vs context, state memory, prefill, bars)
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { chart, plotResults } from './charts.mjs';

const argv = process.argv.slice(2);
if (argv.includes('--results')) {
  const file = argv[argv.indexOf('--results') + 1];
  const out = argv.includes('--out') ? argv[argv.indexOf('--out') + 1] : dirname(file);
  console.log(`wrote ${plotResults(JSON.parse(readFileSync(file, 'utf8')), out).join(', ')}`);
  process.exit(0);
}

const dir = new URL('../../docs/benchmarks/', import.meta.url);
const rows = (file) => readFileSync(new URL(file, dir), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

const pick = (rs, impl, prefix, key) => rs.filter((r) => (r.impl ?? 'webgpu') === impl && r.name.startsWith(prefix) && r[key] !== undefined);
const m = rows('2026-11-26-h200-mechanisms.jsonl');

// the latest kernels and PyTorch from the same call
const m3 = rows('2026-11-26-h200-monoid-scan-3.jsonl');
const prefill = (impl) => pick(m3, impl, 'prefill-', 'tokensPerSec').map((r) => [Number(r.name.split('-')[1]), r.tokensPerSec]);
writeFileSync(
  new URL('monoid-prefill.svg', dir),
  chart({ title: 'Monoid scan prefill, H=32, Dk=Dv=64 (H200)', xLabel: 'tokens T', yLabel: 'tokens / s', series: [{ label: 'WebGPU chunk', points: prefill('webgpu') }, { label: 'PyTorch f32 chunk', points: prefill('pytorch') }] }),
);
// the monoid step from the round-robin sweep (one process, two rounds averaged)
const sweep = rows('2026-11-26-h200-gemv-sweep.jsonl').find((r) => r.name === 'decode-sweep');
const decode = Object.entries(sweep.usPerToken).map(([ctx, us]) => [Number(ctx), us.reduce((a, b) => a + b, 0) / us.length]);
const holo = pick(m, 'webgpu', 'decode-pos', 'usPerToken').filter((r) => !r.name.endsWith('B16')).map((r) => [Math.max(1, Number(r.name.slice('decode-pos'.length))), r.usPerToken]);
writeFileSync(
  new URL('decode-vs-context.svg', dir),
  chart({ title: 'Decode step vs context (H200)', xLabel: 'context length / position', yLabel: 'GPU us per token', series: [{ label: 'monoid step', points: decode }, { label: 'holographic step', points: holo }] }),
);
const att = rows('2026-11-26-h200-attention.jsonl').filter((r) => !r.prefillRows && !r.repeat && r.kernelVersion === 'exp2+slot-max');
const win = (impl) => att.filter((r) => (r.impl ?? 'webgpu') === impl && r.name.startsWith('window512-') && r.medianMs).map((r) => [Number(r.name.split('-')[1]), r.medianMs]);
writeFileSync(
  new URL('attention-window.svg', dir),
  chart({ title: 'Attention, window 512, H=32, D=64 (H200)', xLabel: 'tokens T', yLabel: 'ms', logY: true, series: [{ label: 'WebGPU windowed', points: win('webgpu') }, { label: 'PyTorch SDPA + mask', points: win('pytorch') }] }),
);
console.log('wrote monoid-prefill.svg, decode-vs-context.svg, attention-window.svg');

// Draws the SVG charts of docs/benchmarks from the JSON lines beside them (no chart service, no dependency).
// usage: node tools/bench/plot.mjs
import { readFileSync, writeFileSync } from 'node:fs';

const dir = new URL('../../docs/benchmarks/', import.meta.url);
const rows = (file) => readFileSync(new URL(file, dir), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

/** A log-x line chart: series = [{ label, points: [[x, y]...] }]. */
function chart({ title, xLabel, yLabel, series, logY = false }) {
  const [W, H, L, R, T, B] = [640, 360, 70, 160, 40, 50];
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const [x0, x1] = [Math.log2(Math.min(...xs)), Math.log2(Math.max(...xs))];
  const fy = logY ? Math.log10 : (v) => v;
  const [y0, y1] = logY ? [fy(Math.min(...ys)) - 0.1, fy(Math.max(...ys)) + 0.1] : [0, Math.max(...ys) * 1.1];
  const px = (x) => L + ((Math.log2(x) - x0) / (x1 - x0 || 1)) * (W - L - R);
  const py = (y) => H - B - ((fy(y) - y0) / (y1 - y0 || 1)) * (H - T - B);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
  const ticks = [...new Set(xs)].sort((a, b) => a - b);
  const yTicks = Array.from({ length: 5 }, (_, i) => y0 + ((y1 - y0) * i) / 4);
  const fmt = (v) => (v >= 1e6 ? `${(v / 1e6).toFixed(1)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(v >= 1e4 ? 0 : 1)}k` : v >= 10 ? v.toFixed(0) : v.toPrecision(2));
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="white"/>
<text x="${W / 2 - R / 2}" y="22" text-anchor="middle" font-size="14">${title}</text>
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>
${ticks.map((x) => `<text x="${px(x)}" y="${H - B + 16}" text-anchor="middle">${fmt(x)}</text>`).join('\n')}
${yTicks.map((y) => `<text x="${L - 6}" y="${py(logY ? 10 ** y : y) + 4}" text-anchor="end">${fmt(logY ? 10 ** y : y)}</text><line x1="${L}" y1="${py(logY ? 10 ** y : y)}" x2="${W - R}" y2="${py(logY ? 10 ** y : y)}" stroke="#ddd"/>`).join('\n')}
<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${xLabel}</text>
<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${yLabel}</text>
${series
  .map((s, i) => {
    const c = colors[i % colors.length];
    const pts = s.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
    return `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>${s.points.map(([x, y]) => `<circle cx="${px(x)}" cy="${py(y)}" r="3" fill="${c}"/>`).join('')}
<text x="${W - R + 10}" y="${T + 16 + i * 18}" fill="${c}">${s.label}</text>`;
  })
  .join('\n')}
</svg>
`;
}

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

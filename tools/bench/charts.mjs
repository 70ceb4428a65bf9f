// SVG charts for the benchmark reports: no chart service, no dependency. `chart` draws a log-x line chart,
// `bars` a horizontal bar chart; `plotResults` draws the standard set from a results document (run.ts).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v) => (v >= 1e9 ? `${(v / 1e9).toFixed(1)}G` : v >= 1e6 ? `${(v / 1e6).toFixed(1)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(v >= 1e4 ? 0 : 1)}k` : v >= 10 ? v.toFixed(0) : v.toPrecision(2));

/** A log-x line chart: series = [{ label, points: [[x, y]...], dashed? }]. */
export function chart({ title, subtitle, xLabel, yLabel, series, logY = false }) {
  series = series.filter((s) => s.points.length > 0);
  // the legend's width follows the longest label (160 px at least)
  const R = Math.max(160, 20 + 7 * Math.max(0, ...series.map((s) => s.label.length)));
  const [W, H, L, T, B] = [480 + R, 360, 70, subtitle ? 52 : 40, 50];
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  if (xs.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="60"><text x="10" y="30">${esc(title)}: no data</text></svg>\n`;
  const [x0, x1] = [Math.log2(Math.min(...xs)), Math.log2(Math.max(...xs))];
  const fy = logY ? Math.log10 : (v) => v;
  const [y0, y1] = logY ? [fy(Math.min(...ys)) - 0.1, fy(Math.max(...ys)) + 0.1] : [0, Math.max(...ys) * 1.1 || 1];
  const px = (x) => L + ((Math.log2(x) - x0) / (x1 - x0 || 1)) * (W - L - R);
  const py = (y) => H - B - ((fy(y) - y0) / (y1 - y0 || 1)) * (H - T - B);
  const ticks = [...new Set(xs)].sort((a, b) => a - b);
  const yTicks = Array.from({ length: 5 }, (_, i) => y0 + ((y1 - y0) * i) / 4);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="white"/>
<text x="${W / 2 - R / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>${subtitle ? `\n<text x="${W / 2 - R / 2}" y="38" text-anchor="middle" font-size="11" fill="#555">${esc(subtitle)}</text>` : ''}
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>
${ticks.map((x) => `<text x="${px(x)}" y="${H - B + 16}" text-anchor="middle">${fmt(x)}</text>`).join('\n')}
${yTicks.map((y) => `<text x="${L - 6}" y="${py(logY ? 10 ** y : y) + 4}" text-anchor="end">${fmt(logY ? 10 ** y : y)}</text><line x1="${L}" y1="${py(logY ? 10 ** y : y)}" x2="${W - R}" y2="${py(logY ? 10 ** y : y)}" stroke="#ddd"/>`).join('\n')}
<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(xLabel)}</text>
<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>
${series
  .map((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = [...s.points].sort((a, b) => a[0] - b[0]).map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
    return `<polyline fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${pts}"/>${s.points.map(([x, y]) => `<circle cx="${px(x)}" cy="${py(y)}" r="3" fill="${c}"/>`).join('')}
<text x="${W - R + 10}" y="${T + 16 + i * 18}" fill="${c}">${esc(s.label)}</text>`;
  })
  .join('\n')}
</svg>
`;
}

/** A horizontal bar chart: items = [{ label, value }]; `reference` draws a vertical line (e.g. 1x). */
export function bars({ title, xLabel, items, reference }) {
  const L = Math.max(160, 20 + 7 * Math.max(0, ...items.map((i) => i.label.length)));
  const [W, R, T, B, row] = [L + 420, 60, 40, 40, 20];
  const H = T + B + row * Math.max(items.length, 1);
  const max = Math.max(...items.map((i) => i.value), reference ?? 0) * 1.1 || 1;
  const px = (v) => L + (v / max) * (W - L - R);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="white"/>
<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>
${items
  .map((it, i) => {
    const y = T + i * row;
    return `<text x="${L - 6}" y="${y + 14}" text-anchor="end">${esc(it.label)}</text><rect x="${L}" y="${y + 3}" width="${Math.max(px(it.value) - L, 0.5).toFixed(1)}" height="${row - 6}" fill="${COLORS[0]}"/><text x="${px(it.value) + 4}" y="${y + 14}">${fmt(it.value)}</text>`;
  })
  .join('\n')}
${reference !== undefined ? `<line x1="${px(reference)}" y1="${T}" x2="${px(reference)}" y2="${H - B}" stroke="#d62728" stroke-dasharray="4 3"/>` : ''}
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>
<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(xLabel)}</text>
</svg>
`;
}

/**
 * The standard charts of a results document ({ rows, pytorch }) into `dir`: decode ms/token vs context (both
 * models, ours and PyTorch), state/KV memory vs context, prefill tokens/s vs T, per-component bars (fraction of
 * the device peak, and the ratio to PyTorch). Returns the files written.
 */
export function plotResults(results, dir) {
  const rows = results.rows ?? [];
  const torch = results.pytorch ?? [];
  const files = [];
  const write = (name, svg) => {
    writeFileSync(join(dir, name), svg);
    files.push(join(dir, name));
  };
  const device = rows.find((r) => r.component === 'decode' && r.backend === 'webgpu')?.device ?? rows.find((r) => r.component === 'decode')?.device ?? '';
  const torchDevice = torch.find((p) => p.device)?.device ?? '';
  const decode = rows.filter((r) => r.component === 'decode' && /^decode-.*-ctx\d+$/.test(r.name) && r.medianMs !== undefined);
  const models = [...new Set(decode.map((r) => r.model))];
  if (decode.length) {
    const series = [];
    for (const m of models) {
      for (const b of [...new Set(decode.map((r) => r.backend))]) {
        series.push({ label: `${m} ${b === 'webgpu' ? 'WebGPU' : b}`, points: decode.filter((r) => r.model === m && r.backend === b).map((r) => [r.context, r.medianMs]) });
      }
      for (const impl of [...new Set(torch.map((p) => p.impl))]) {
        const pts = torch.filter((p) => p.impl === impl && p.model === m && p.context && p.medianMs !== undefined && /^decode-/.test(p.name)).map((p) => [p.context, p.medianMs]);
        series.push({ label: `${m} ${impl}`, points: pts, dashed: true });
      }
    }
    write('decode-ms-vs-context.svg', chart({ title: 'Decode ms/token vs context (f32 weights, batch 1)', subtitle: [device, torchDevice].filter(Boolean).join(' / PyTorch: ').slice(0, 110), xLabel: 'context length (tokens)', yLabel: 'ms per token', series, logY: true }));
    const mem = models.map((m) => ({ label: `${m} ${m === 'llama' ? 'KV cache' : 'monoid state'}`, points: decode.filter((r) => r.model === m && r.stateBytesUsed).map((r) => [r.context, r.stateBytesUsed / 2 ** 20]) }));
    const weights = models.map((m) => decode.find((r) => r.model === m)?.weightBytes).filter(Boolean);
    if (weights.length) {
      const ctxs = [...new Set(decode.map((r) => r.context))];
      mem.push({ label: 'f32 weights (for scale)', points: ctxs.map((c) => [c, Math.max(...weights) / 2 ** 20]), dashed: true });
    }
    write('state-vs-context.svg', chart({ title: 'Decode state memory vs context (f32)', xLabel: 'context length (tokens)', yLabel: 'MiB', series: mem, logY: true }));
  }
  const prefill = rows.filter((r) => r.component === 'decode' && /^prefill-/.test(r.name) && r.tokensPerSec);
  if (prefill.length) {
    const series = [...new Set(prefill.map((r) => `${r.model}|${r.backend}`))].map((k) => {
      const [m, b] = k.split('|');
      return { label: `${m} ${b === 'webgpu' ? 'WebGPU' : b}`, points: prefill.filter((r) => r.model === m && r.backend === b).map((r) => [r.T, r.tokensPerSec]) };
    });
    for (const impl of [...new Set(torch.map((p) => p.impl))]) {
      for (const m of models) {
        const pts = torch.filter((p) => p.impl === impl && p.model === m && /^prefill-/.test(p.name) && p.tokensPerSec).map((p) => [p.T, p.tokensPerSec]);
        series.push({ label: `${m} ${impl}`, points: pts, dashed: true });
      }
    }
    write('prefill-vs-T.svg', chart({ title: 'Prefill tokens/s vs T (f32, batch 1)', subtitle: device.slice(0, 110), xLabel: 'prompt tokens T', yLabel: 'tokens / s', series, logY: true }));
  }
  const gpuRows = rows.filter((r) => r.backend === 'webgpu' && r.component !== 'decode' && r.component !== 'device' && !r.error);
  const peakItems = gpuRows.filter((r) => r.ofPeakBW !== undefined || r.ofPeakFlops !== undefined).map((r) => ({ label: `${r.component}/${r.name}`, value: Math.max(r.ofPeakBW ?? 0, r.ofPeakFlops ?? 0) }));
  if (peakItems.length) write('components-of-peak.svg', bars({ title: 'Fraction of the measured device peak (copy GB/s or f32 matmul rate)', xLabel: 'fraction of peak (max of bandwidth and FLOP ratios)', items: peakItems, reference: 1 }));
  const ratioItems = rows
    .filter((r) => r.backend === 'webgpu' && r.medianMs)
    .flatMap((r) => {
      const p = torch.find((t) => t.name === r.name && t.component === r.component && t.medianMs && (t.impl === 'pytorch' || t.impl === 'transformers'));
      return p ? [{ label: `${r.component}/${r.name} (${p.impl})`, value: p.medianMs / r.medianMs }] : [];
    });
  if (ratioItems.length) write('components-vs-pytorch.svg', bars({ title: 'Speed relative to PyTorch on the same GPU (above 1: WebGPU faster)', xLabel: 'PyTorch ms / WebGPU ms', items: ratioItems, reference: 1 }));
  return files;
}

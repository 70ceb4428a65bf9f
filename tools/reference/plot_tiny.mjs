// Training curves of the tiny models (held-out loss per step, one line per preset) from train_tiny.py's
// report.json, as an SVG: `node tools/reference/plot_tiny.mjs REPORT.json OUT.svg`.
import { readFileSync, writeFileSync } from 'node:fs';
import { chart } from '../bench/charts.mjs';

const [reportPath, out] = process.argv.slice(2);
if (!reportPath || !out) throw new Error('usage: node tools/reference/plot_tiny.mjs REPORT.json OUT.svg');
const report = JSON.parse(readFileSync(reportPath, 'utf8'));
const series = Object.entries(report.models).flatMap(([preset, m], i) => [
  { label: `${preset} held-out`, points: m.curve.map((p) => [p.step, p.heldout_loss]) },
  { label: `${preset} train`, points: m.curve.map((p) => [p.step, p.train_loss]), dashed: true },
]);
writeFileSync(
  out,
  chart({
    title: 'Tiny models on the Brown Corpus: loss per token',
    subtitle: `${report.device}, ${report.settings.steps} steps of ${report.settings.batch} x ${report.settings.T} tokens`,
    xLabel: 'step',
    yLabel: 'loss (nats / token)',
    series,
    logY: true,
  }),
);

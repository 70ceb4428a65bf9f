/**
 * The Phalanx side of docs/tiny-models.md: held-out bits per byte of each tiny model by `model.score`, on the
 * same ids and windows as train_tiny.py, beside PyTorch's number from its report.
 * usage: score_tiny.ts [--backend cpu|webgpu] [--models DIR] [--report REPORT.json] [--ids HELDOUT-IDS.json] [--case PRESET]...
 * Bundle it with tools/gpu/pack.sh to run it on the GPU machine, one preset per process:
 * `bash .gpu/remote.sh score_tiny.mjs --backend webgpu ... -- spartacus nanohammer parcae llama`.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '@phalanx/models';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'cpu' },
    models: { type: 'string', default: 'packages/tiny-models/models' },
    report: { type: 'string', default: 'docs/tiny-models/report.json' },
    ids: { type: 'string', default: 'docs/tiny-models/heldout-ids.json' },
    case: { type: 'string', multiple: true },
  },
});
const report = JSON.parse(readFileSync(values.report, 'utf8')) as { models: Record<string, { bpb: number }> };
const { ids, window, stride } = JSON.parse(readFileSync(values.ids, 'utf8')) as { ids: number[]; window: number; stride: number };
for (const preset of values.case ?? Object.keys(report.models)) {
  const model = await loadModel(join(values.models, preset), { backend: values.backend as 'cpu' | 'webgpu' });
  const t0 = performance.now();
  const r = await model.score(ids, { window, stride, batch: 16 });
  const seconds = (performance.now() - t0) / 1000;
  const pytorch = report.models[preset]!.bpb;
  console.log(JSON.stringify({ preset, backend: model.backend.name, bitsPerByte: r.bitsPerByte, pytorch, difference: r.bitsPerByte - pytorch, tokens: r.tokens, bytes: r.bytes, seconds }));
  model.dispose();
}

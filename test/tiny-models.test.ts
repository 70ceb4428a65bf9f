/**
 * The embedded tiny models, as loadModel and the CLI run them, continue the prompts exactly as PyTorch did
 * when they were trained (docs/tiny-models/report.json: train_tiny.py's greedy samples, 40 tokens each).
 */
import { readFileSync } from 'node:fs';
import { loadModel } from '@phalanx/models';
import { TINY_MODELS } from '@phalanx/tiny-models';
import { testBackends } from '@phalanx/webgpu/testing';
import { describe, expect, it } from 'vitest';

interface Report {
  settings: { sample_tokens: number };
  models: Record<string, { samples: { prompt: string; greedy: string }[] }>;
}

const report = JSON.parse(readFileSync(new URL('../docs/tiny-models/report.json', import.meta.url), 'utf8')) as Report;
const { backends } = await testBackends();

describe.each(TINY_MODELS.map((p) => [p] as const))('tiny %s', (preset) => {
  it.each(backends.map((b) => [b.name, b] as const))('greedy continuations match PyTorch on %s', async (_, backend) => {
    const model = await loadModel(preset, { backend });
    try {
      for (const { prompt, greedy } of report.models[preset]!.samples) {
        const summary = await model.generate({ prompt, maxNewTokens: report.settings.sample_tokens, temperature: 0, eosTokenIds: [] }).complete();
        expect(summary.text).toBe(greedy);
      }
    } finally {
      model.dispose();
    }
  });
});

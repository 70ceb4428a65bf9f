/**
 * Sampling benchmark cases (component `ops`): one decode step's token choice from a row of logits, greedy and
 * with temperature / top-k / top-p, at Llama 3's vocabulary. Run by tools/bench:
 * `npx phalanx bench ops/sample-128256-greedy ops/sample-128256-topk`. Each call samples on the backend and
 * leaves the ids there (`sampleIds`, as generation does); the check compares the ids read back with the argmax
 * (greedy) or with the kept set of the CPU's float64 filter (top-k / top-p).
 */
import { Rng, type Tensor, randn } from '@phalanx/core';
import { type CaseContext, type Timed, defineCases, disposeAll } from '../../../tools/bench/harness.js';
import { type SampleOptions, readIds, sampleIds } from '../src/sampling.js';

const GREEDY: SampleOptions = { temperature: 0 };
const FILTERED: SampleOptions = { temperature: 0.8, topK: 50, topP: 0.95 };

const sampling = (name: string, vocab: number, options: SampleOptions, sets: ('full' | 'quick')[] = ['full']) => ({
  name,
  shape: { rows: 1, vocab, ...options },
  backends: ['webgpu', 'cpu'] as const,
  sets,
  reps: [50, 5] as [number, number],
  setup: (ctx: CaseContext) => sampleCase(ctx, vocab, options),
});

export const cases = defineCases('ops', [
  sampling('sample-128256-greedy', 128_256, GREEDY),
  sampling('sample-128256-topk', 128_256, FILTERED),
  sampling('sample-4096-greedy', 4096, GREEDY, ['quick']),
]);

async function sampleCase(ctx: CaseContext, vocab: number, options: SampleOptions): Promise<Timed> {
  const host = randn([1, vocab], { seed: 7 });
  const logits = await host.to(ctx.backend);
  const rng = new Rng(8);
  let ids: Tensor | undefined;
  return {
    run: async () => {
      ids?.dispose();
      ids = await sampleIds(logits, { ...options, rng: options.temperature === 0 ? undefined : rng });
    },
    bytes: vocab * 4,
    check: async () => {
      const [id] = await readIds(ids!);
      const row = await host.data();
      // how many logits beat the chosen one: 0 for greedy, under 50 with top-k 50 (which keeps ties too)
      let rank = 0;
      for (const v of row) if (v > row[id!]!) rank++;
      return { id, rank, ok: rank < (options.temperature === 0 ? 1 : 50) };
    },
    dispose: () => disposeAll(logits, host, ids),
  };
}

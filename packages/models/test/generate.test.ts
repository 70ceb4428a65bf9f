/**
 * Generation records step t + 1 before it reads token t back (the sampled id stays on the device and feeds the
 * next forward). These tests hold it to the plain loop: forward one token, sample it, read it, repeat.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError, Rng, cpu, tensor } from '@phalanx/core';
import { sample } from '@phalanx/ops';
import { testBackends } from '@phalanx/webgpu/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Model, loadModel } from '../src/index.js';
import { writeRandomLlama } from './checkpoint-dir.js';

const { backends } = await testBackends();
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phalanx-generate-'));
  await writeRandomLlama(join(dir, 'llama'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const PROMPT = [5, 77, 130, 2];
const SAMPLING = { temperature: 0.9, topK: 40, seed: 11 };

/** The tokens of the plain loop: one forward from the state, one sample (read back) at a time. */
async function oneStepAtATime(model: Model, n: number): Promise<number[]> {
  const rng = new Rng(SAMPLING.seed);
  const state = model.createState(1, PROMPT.length + n);
  const out: number[] = [];
  try {
    let input = [PROMPT];
    while (out.length < n) {
      const { logits } = await model.forward(input, { state, lastOnly: true });
      const rows = logits.reshape([1, -1]);
      const [id] = await sample(rows, { temperature: SAMPLING.temperature, topK: SAMPLING.topK, rng });
      rows.dispose();
      logits.dispose();
      out.push(id!);
      input = [[id!]];
    }
  } finally {
    state.dispose();
  }
  return out;
}

describe.each(backends.map((b) => [b.name, b] as const))('generate on %s', (_, backend) => {
  let model: Model;
  let plain: number[];
  beforeAll(async () => {
    model = await loadModel(join(dir, 'llama'), { backend });
    plain = await oneStepAtATime(model, 12);
  });
  afterAll(() => model.dispose());

  it('gives the tokens of the plain loop, seeded sampling included', async () => {
    const got = await model.generate({ inputIds: PROMPT, maxNewTokens: 12, ...SAMPLING }).complete();
    expect(got.tokenIds).toEqual(plain);
    expect(got.stopReason).toBe('length');
    const shorter = await model.generate({ inputIds: PROMPT, maxNewTokens: 1, ...SAMPLING }).complete();
    expect(shorter.tokenIds).toEqual(plain.slice(0, 1));
  });

  it('stops at an eos read back while the next step was already computed, without emitting it', async () => {
    // the first token that did not occur before it ends the run there
    const at = plain.findIndex((id, i) => i >= 3 && !plain.slice(0, i).includes(id));
    const got = await model.generate({ inputIds: PROMPT, maxNewTokens: 12, eosTokenIds: [plain[at]!], ...SAMPLING }).complete();
    expect(got.stopReason).toBe('eos');
    expect(got.tokenIds).toEqual(plain.slice(0, at));
  });

  it('an abort ends it after the current token; the summary counts what was emitted', async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    const generation = model.generate({ inputIds: PROMPT, maxNewTokens: 12, signal: controller.signal, ...SAMPLING });
    for await (const { tokenId } of generation) {
      seen.push(tokenId);
      if (seen.length === 3) controller.abort();
    }
    const summary = await generation.summary;
    expect(summary.stopReason).toBe('abort');
    expect(summary.tokenIds).toEqual(plain.slice(0, 3));
    expect(seen).toEqual(plain.slice(0, 3));
  });

  it('forward takes ids as a tensor on the backend, and refuses a tensor of another dtype, rank or backend', async () => {
    const ids = tensor(PROMPT, [1, PROMPT.length], { dtype: 'u32', backend });
    const fromTensor = (await model.forward(ids, { lastOnly: true })).logits;
    const fromRows = (await model.forward([PROMPT], { lastOnly: true })).logits;
    expect(Array.from(await fromTensor.data())).toEqual(Array.from(await fromRows.data()));
    [fromTensor, fromRows, ids].forEach((t) => t.dispose());
    const refused = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);
    const floats = tensor([1, 2], [1, 2], { backend });
    expect(await refused(model.forward(floats))).toEqual(new InputError('inputIds: a tensor of ids must be i32 or u32, got f32'));
    const flat = tensor([1, 2], [2], { dtype: 'i32', backend });
    expect(await refused(model.forward(flat))).toEqual(new InputError('inputIds: a tensor of ids must be [B, T] with B, T >= 1, got [2]'));
    [floats, flat].forEach((t) => t.dispose());
    if (backend !== cpu) {
      const elsewhere = tensor([1, 2], [1, 2], { dtype: 'i32', backend: cpu });
      expect(await refused(model.forward(elsewhere))).toEqual(new InputError("inputIds: the ids live on 'cpu', the network on 'webgpu'; move them with await ids.to(backend)"));
    }
  });
});

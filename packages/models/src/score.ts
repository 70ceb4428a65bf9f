import { InputError, NumericsError, Scratch } from '@phalanx/core';
import { crossEntropy } from '@phalanx/ops';
import type { Network } from './network.js';

export interface ScoreOptions {
  /** Tokens per window (the context a scored token can see, at most). Default 512, capped by the model's context. */
  window?: number;
  /** Tokens scored per window after the first (each later window scores its last `stride` positions). Default window / 2. */
  stride?: number;
  /** Windows run side by side in one forward. Default 8. */
  batch?: number;
  /** Bytes of each token id, for bits per byte (special tokens 0). Default: the model's tokenizer. */
  tokenBytes?: (id: number) => number;
}

export interface ScoreResult {
  /** The ids scored. */
  tokens: number;
  /** Natural-log likelihood of each token after the first: logLikelihoods[i] = log p(ids[i+1] | context). */
  logLikelihoods: Float64Array;
  /** Mean negative log-likelihood per scored token (nats). */
  loss: number;
  bitsPerToken: number;
  /** UTF-8 bytes of the scored tokens; NaN without a tokenizer. */
  bytes: number;
  /** Sum of -log2 p over the bytes (parcae-golf.md section 8); NaN without a tokenizer. */
  bitsPerByte: number;
}

interface Window {
  start: number;
  length: number;
  /** First local position scored. */
  from: number;
}

/**
 * The sliding windows of parcae-golf.md section 8 over n predictions (targets ids[1..n]): windows start every
 * `stride` tokens while start + (window - stride) < n; the first window scores all its positions, each later
 * one its positions from window - stride on, so every target is scored exactly once with at least
 * window - stride tokens of context (except near the start).
 */
export function slidingWindows(n: number, window: number, stride: number): Window[] {
  const context = window - stride;
  const out: Window[] = [];
  for (let start = 0; start === 0 || start + context < n; start += stride) {
    const length = Math.min(start + window, n) - start;
    out.push({ start, length, from: start === 0 ? 0 : context });
  }
  return out;
}

/** The NumericsError for a NaN or infinite loss at local position t of window `index`: its logits were not finite. */
function nonFiniteLoss(w: Window, index: number, count: number, t: number, loss: number): NumericsError {
  const p = w.start + t;
  return new NumericsError(
    `score: non-finite logits at position ${p} (predicting ids[${p + 1}]) in window ${index} (ids ${w.start} to ${w.start + w.length - 1}; windows 0 to ${count - 1}): ` +
      `the loss is ${loss}; the weights hold NaN or Infinity (loadModel with checkWeights finds them), or activations overflowed`,
  );
}

/**
 * Log-likelihood of every token of `ids` after the first, by sliding windows; see ScoreResult. Non-finite
 * logits at a scored position (a NaN or infinite loss) are a NumericsError naming the first such position and
 * its window.
 */
export async function scoreIds(network: Network, ids: readonly number[], maxContext: number, options: ScoreOptions = {}): Promise<ScoreResult> {
  const window = options.window ?? Math.min(512, maxContext);
  const stride = options.stride ?? Math.max(1, Math.floor(window / 2));
  const batch = options.batch ?? 8;
  if (!Number.isInteger(window) || window < 1 || window > maxContext) throw new InputError(`score: window must be an integer in [1, ${maxContext}] (the model's context), got ${window}`);
  if (!Number.isInteger(stride) || stride < 1 || stride > window) throw new InputError(`score: stride must be an integer in [1, window = ${window}], got ${stride}`);
  if (!Number.isInteger(batch) || batch < 1) throw new InputError(`score: batch must be a positive integer, got ${batch}`);
  if (ids.length < 2) throw new InputError(`score: needs at least 2 tokens (one to predict from, one to score), got ${ids.length}`);

  const n = ids.length - 1;
  const logLikelihoods = new Float64Array(n);
  const windows = slidingWindows(n, window, stride);
  for (let i = 0; i < windows.length; ) {
    // windows of one length run together (all but the last have the full length)
    let j = i + 1;
    while (j < windows.length && j - i < batch && windows[j]!.length === windows[i]!.length) j++;
    const group = windows.slice(i, j);
    const T = group[0]!.length;
    const s = new Scratch();
    try {
      const logits = await s.keep(network.forward(group.map((w) => ids.slice(w.start, w.start + T))));
      const targets = group.flatMap((w) => ids.slice(w.start + 1, w.start + 1 + T));
      const nll = await (await s.keep(crossEntropy(await s.keep(logits.reshape([group.length * T, -1])), targets))).data();
      group.forEach((w, g) => {
        for (let t = w.from; t < T; t++) {
          const loss = nll[g * T + t]!;
          // finite logits give a finite loss, so checking the losses read back anyway finds non-finite logits for free
          if (!Number.isFinite(loss)) throw nonFiniteLoss(w, i + g, windows.length, t, loss);
          logLikelihoods[w.start + t] = -loss;
        }
      });
    } finally {
      s.dispose();
    }
    i = j;
  }

  let nats = 0;
  for (const v of logLikelihoods) nats -= v;
  let bytes = NaN;
  if (options.tokenBytes) {
    bytes = 0;
    for (let i = 1; i < ids.length; i++) bytes += options.tokenBytes(ids[i]!);
  }
  return { tokens: ids.length, logLikelihoods, loss: nats / n, bitsPerToken: nats / n / Math.LN2, bytes, bitsPerByte: nats / Math.LN2 / bytes };
}

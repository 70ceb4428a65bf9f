/**
 * Spartacus's decay gate: log a from the decay projection z (spec 1.3.1), and the rule that tells which of
 * the three checkpoint revisions a decay_proj comes from. log a is computed stably in f32, never as
 * log(sigmoid(z)), which is -Inf once sigmoid(z) underflows.
 */
import { InputError, ShapeError, type Tensor, assertFloat, formatShape, runKernel } from '@phalanx/core';
import './decay-kernels.js';

/**
 * The decay of each revision (spec 1.3.1): 'scalar-logsigmoid' (b0097d1: one decay per head, decay_proj out
 * = H, log a = logsigmoid(z)), 'vector-neg-softplus' (b6c0790: out = H*Dk, log a = -softplus(z)) and
 * 'vector-logsigmoid' (a6cf12a, the current weights: out = H*Dk, log a = logsigmoid(z)).
 */
export type DecayVariant = 'scalar-logsigmoid' | 'vector-neg-softplus' | 'vector-logsigmoid';
export const DECAY_VARIANTS: readonly DecayVariant[] = ['scalar-logsigmoid', 'vector-neg-softplus', 'vector-logsigmoid'];

/** The floor of the optional clamp of log a (spec 1.7: e^-30 is 0 for every purpose). */
export const LOG_DECAY_FLOOR = -30;

/** Attributes of 'monoidLogDecay': log a = logsigmoid(sign * z), then max(log a, floor) when floor is set. */
export interface LogDecayAttrs {
  /** 1 for logsigmoid(z); -1 for -softplus(z), which is logsigmoid(-z). */
  sign: 1 | -1;
  floor: number | null;
}

/**
 * log a from z, elementwise, as f32 of z's shape on z's backend: `logsigmoid(z) = min(z, 0) - log1p(exp(-|z|))`,
 * or `-softplus(z) = logsigmoid(-z)`. With `floor`, log a is clamped to >= floor.
 */
export async function logDecay(z: Tensor, options: { gate: 'logsigmoid' | 'neg-softplus'; floor?: number }): Promise<Tensor> {
  assertFloat('logDecay', z, 'z');
  if (options.gate !== 'logsigmoid' && options.gate !== 'neg-softplus') throw new InputError(`logDecay: gate must be 'logsigmoid' or 'neg-softplus', got '${options.gate}'`);
  const floor = options.floor ?? null;
  if (floor !== null && !(Number.isFinite(floor) && floor <= 0)) throw new InputError(`logDecay: floor must be a finite number <= 0, got ${floor}`);
  const attrs: LogDecayAttrs = { sign: options.gate === 'logsigmoid' ? 1 : -1, floor };
  return (await runKernel('monoidLogDecay', [z], attrs))[0]!;
}

/** How far from 0 the mean decay bias must be to call its sign (at init it is +3.0 for a6cf12a, spec 1.8). */
export const DECAY_BIAS_THRESHOLD = 1;

/**
 * The spec's detection rule (1.3.1, [D]): decay_proj out = H is the scalar revision; out = H*Dk is a vector
 * revision, logsigmoid when the mean bias is clearly positive (> +1: most a near sigmoid(3) = 0.95) and
 * -softplus when it is clearly negative (< -1). Reads the bias back. A mean in [-1, 1] is an InputError: set
 * the variant yourself.
 */
export async function detectDecayVariant(decayWeight: Tensor, decayBias: Tensor, config: { heads: number; headDim: number }): Promise<DecayVariant> {
  const { heads, headDim } = config;
  const name = (t: Tensor, role: string) => `${role} (${t.name ?? 'tensor'})`;
  if (decayWeight.rank !== 2 || (decayWeight.shape[0] !== heads && decayWeight.shape[0] !== heads * headDim)) {
    throw new ShapeError(`detectDecayVariant: ${name(decayWeight, 'decayProj')} is ${formatShape(decayWeight.shape)}; expected [${heads} or ${heads * headDim}, hidden] (H or H*Dk outputs)`);
  }
  const out = decayWeight.shape[0]!;
  if (decayBias.rank !== 1 || decayBias.shape[0] !== out) throw new ShapeError(`detectDecayVariant: ${name(decayBias, 'decayBias')} is ${formatShape(decayBias.shape)}; expected [${out}] to match decayProj`);
  if (out === heads) return 'scalar-logsigmoid'; // the only scalar revision (b0097d1)
  const mean = Array.from(await decayBias.data()).reduce((sum, b) => sum + b, 0) / out;
  if (mean > DECAY_BIAS_THRESHOLD) return 'vector-logsigmoid';
  if (mean < -DECAY_BIAS_THRESHOLD) return 'vector-neg-softplus';
  throw new InputError(`detectDecayVariant: the mean of ${name(decayBias, 'decayBias')} is ${mean.toFixed(3)}, too close to 0 to tell logsigmoid from -softplus (spec 1.3.1); set the decay variant yourself`);
}

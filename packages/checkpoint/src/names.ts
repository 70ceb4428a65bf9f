import { CheckpointError, formatShape, sameShape } from '@phalanx/core';

/** A tensor a preset expects. */
export interface ExpectedTensor {
  /** The Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  name: string;
  /** The expected shape, or several accepted shapes (e.g. a per-head or per-channel norm). Unchecked when absent. */
  shape?: readonly number[] | readonly (readonly number[])[];
  /** Absent without error (e.g. `lm_head.weight` of a tied model). */
  optional?: boolean;
}

/**
 * Expands `{l}` in name templates once per layer, in order:
 * `expandLayers(['model.layers.{l}.mlp.up_proj.weight'], 2)` gives the names for layers 0 and 1.
 */
export function expandLayers(templates: readonly ExpectedTensor[], numLayers: number): ExpectedTensor[] {
  const out: ExpectedTensor[] = [];
  for (const t of templates) {
    if (!t.name.includes('{l}')) out.push(t);
    else for (let l = 0; l < numLayers; l++) out.push({ ...t, name: t.name.replaceAll('{l}', String(l)) });
  }
  return out;
}

/**
 * Matches the tensors a preset expects to those a checkpoint holds: by exact name, else by dotted suffix
 * (so `model.norm.weight` finds `norm.weight` or `base.model.norm.weight`). Returns expected name ->
 * checkpoint name. Everything wrong (missing, unexpected, ambiguous, wrong shape) is collected and thrown
 * as ONE CheckpointError naming `file`, so a mismatched checkpoint is diagnosed in one go.
 */
export function matchTensorNames(
  file: string,
  expected: readonly ExpectedTensor[],
  present: Iterable<string> | ReadonlyMap<string, { shape: readonly number[] }>,
): Record<string, string> {
  const shapes = present instanceof Map ? (present as ReadonlyMap<string, { shape: readonly number[] }>) : undefined;
  const names = shapes ? [...shapes.keys()] : [...(present as Iterable<string>)];
  const unused = new Set(names);
  const mapping: Record<string, string> = {};
  const missing: string[] = [];
  const problems: string[] = [];

  for (const e of expected) {
    const exact = unused.has(e.name) ? [e.name] : [];
    const found = exact.length ? exact : names.filter((n) => unused.has(n) && (n.endsWith(`.${e.name}`) || e.name.endsWith(`.${n}`)));
    if (found.length === 0) {
      if (!e.optional) missing.push(e.shape ? `${e.name} ${describeShapes(e.shape)}` : e.name);
      continue;
    }
    if (found.length > 1) {
      problems.push(`${e.name} matches several tensors: ${found.join(', ')}`);
      continue;
    }
    const name = found[0]!;
    unused.delete(name);
    mapping[e.name] = name;
    const actual = shapes?.get(name)?.shape;
    if (actual && e.shape && !alternatives(e.shape).some((s) => sameShape(s, actual))) {
      const transposed = alternatives(e.shape).some((s) => sameShape([...s].reverse(), actual) && s.length > 1);
      problems.push(`${name} has shape ${formatShape(actual)}, expected ${describeShapes(e.shape)}${transposed ? ' (transposed?)' : ''}`);
    }
  }

  const lines: string[] = [];
  if (missing.length) lines.push(`missing tensors (${missing.length}): ${missing.join(', ')}`);
  if (unused.size) lines.push(`unexpected tensors (${unused.size}): ${[...unused].join(', ')}`);
  lines.push(...problems);
  if (lines.length) throw new CheckpointError(file, `tensors do not match the model:\n  ${lines.join('\n  ')}`);
  return mapping;
}

function alternatives(shape: NonNullable<ExpectedTensor['shape']>): (readonly number[])[] {
  return shape.length > 0 && Array.isArray(shape[0]) ? (shape as (readonly number[])[]) : [shape as readonly number[]];
}

function describeShapes(shape: NonNullable<ExpectedTensor['shape']>): string {
  return alternatives(shape).map((s) => formatShape(s)).join(' or ');
}

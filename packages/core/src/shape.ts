import { ShapeError } from './errors.js';

export type Shape = readonly number[];

/** Number of elements; validates that every dim is a non-negative integer. */
export function sizeOf(shape: Shape, what = 'shape'): number {
  let n = 1;
  // indexed, not for-of: shapes come as plain, frozen and double arrays, and the iterator path is the slow one for some
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i]!;
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`${what}: [${shape.join(', ')}] has a dim that is not a non-negative integer`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new ShapeError(`${what}: [${shape.join(', ')}] has too many elements`);
  return n;
}

/** Row-major strides. */
export function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

export function sameShape(a: Shape, b: Shape): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function formatShape(s: Shape): string {
  return `[${s.join(', ')}]`;
}

/** NumPy broadcasting of two shapes. */
export function broadcastShapes(a: Shape, b: Shape, what = 'broadcast'): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(`${what}: shapes ${formatShape(a)} and ${formatShape(b)} do not broadcast (dim ${i - n}: ${da} vs ${db})`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides of `shape` read as if broadcast to `outShape`: 0 along broadcast dims. */
export function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const own = stridesOf(shape);
  const off = outShape.length - shape.length;
  return outShape.map((_, i) => (i < off || shape[i - off] === 1 ? 0 : own[i - off]!));
}

/** Resolves one -1 in a reshape target. */
export function resolveReshape(from: Shape, to: Shape): number[] {
  const size = sizeOf(from);
  // plain loops: a decode step reshapes a few dozen times, and the closures of filter/reduce/map/every cost more than the work
  let unknown = 0;
  let known = 1;
  for (let i = 0; i < to.length; i++) {
    if (to[i] === -1) unknown++;
    else known *= to[i]!;
  }
  if (unknown > 1) throw new ShapeError(`reshape ${formatShape(from)} -> ${formatShape(to)}: at most one -1`);
  const out: number[] = [];
  let valid = true;
  for (let i = 0; i < to.length; i++) {
    const d = to[i] === -1 ? (known === 0 ? 0 : size / known) : to[i]!;
    if (!Number.isInteger(d) || d < 0) valid = false;
    out.push(d);
  }
  if (!valid || sizeOf(out) !== size) throw new ShapeError(`reshape ${formatShape(from)} -> ${formatShape(to)}: element counts differ`);
  return out;
}

/** Normalises a possibly negative axis. */
export function normAxis(axis: number, rank: number, what = 'axis'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new ShapeError(`${what} ${axis} is out of range for rank ${rank}`);
  return a;
}

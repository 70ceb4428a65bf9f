import { type Backend, liveBackends } from './backend.js';
import { InputError, MissingKernelError } from './errors.js';
import type { Tensor } from './tensor.js';

/** A kernel's implementation: tensors in (all on `backend`), tensors out (on `backend`). */
export type KernelFn<A = any, B extends Backend = any> = (inputs: Tensor[], attrs: A, backend: B) => Tensor | Tensor[] | Promise<Tensor | Tensor[]>;

/** `true` to accept the input, or a short reason to decline it (the next kernel or backend then serves it). */
export type KernelVerify<A = any, B extends Backend = any> = (inputs: Tensor[], attrs: A, backend: B) => true | string;

export interface KernelSpec<A = any, B extends Backend = any> {
  op: string;
  /** The backend name the kernel runs on ('cpu', 'webgpu'). */
  backend: string;
  fn: KernelFn<A, B>;
  verify?: KernelVerify<A, B>;
  /** Among kernels of one (op, backend), higher is tried first (e.g. a subgroup variant over a generic one). Default 0. */
  priority?: number;
}

/**
 * The registry: each (op, backend)'s kernels, best first, by op then backend name (two lookups by strings whose
 * hashes are cached, on the path every op takes). Shared through globalThis by every copy of this package.
 */
const KERNELS_KEY = Symbol.for('@phalanx/core/kernels-by-op');
const kernels: Map<string, Map<string, KernelSpec[]>> = ((globalThis as Record<symbol, unknown>)[KERNELS_KEY] as Map<string, Map<string, KernelSpec[]>>) ?? new Map();
(globalThis as Record<symbol, unknown>)[KERNELS_KEY] = kernels;

/** Registers a kernel. Registering the same fn again for the same (op, backend) is a no-op. */
export function registerKernel<A, B extends Backend>(spec: KernelSpec<A, B>): void {
  let byBackend = kernels.get(spec.op);
  if (!byBackend) kernels.set(spec.op, (byBackend = new Map()));
  let list = byBackend.get(spec.backend);
  if (!list) byBackend.set(spec.backend, (list = []));
  if (list.some((s) => s.fn === spec.fn)) return;
  list.push(spec as KernelSpec);
  list.sort((a, b) => (b.priority ?? 0) - (a.priority ?? 0));
}

export function getKernels(op: string, backend: string): readonly KernelSpec[] {
  return kernels.get(op)?.get(backend) ?? [];
}

/** Statistics of cross-backend fallbacks, so a benchmark or profiler can show where work left the GPU. */
export const fallbackCounts = new Map<string, number>();

/**
 * Runs `op` on the backend its inputs live on. Kernels registered for that (op, backend) are tried best
 * first; if every one declines, the next live backend that accepts runs it (inputs moved there and the
 * result moved back). No kernel at all for the pair is an error naming both.
 *
 * Not an async function: when a kernel of the inputs' backend accepts, its result is mapped by one `then`
 * (an async frame and an await per op cost more, on the path every op takes). Errors still come back as a
 * rejected promise.
 */
export function runKernel<A>(op: string, inputs: Tensor[], attrs: A, backend?: Backend): Promise<Tensor[]> {
  try {
    const home = backend ?? inputs[0]?.backend;
    if (!home) throw new InputError(`${op}: no inputs and no backend given`);
    for (let i = 0; i < inputs.length; i++) {
      const t = inputs[i]!;
      if (t.disposed) throw new InputError(`${op}: input ${i} (${t.name ?? 'tensor'}) was disposed`);
      if (t.backend !== home) throw new InputError(`${op}: input ${i} lives on '${t.backend.name}', the others on '${home.name}'; move it with await t.to(backend)`);
    }
    const own = getKernels(op, home.name);
    if (own.length === 0) throw new MissingKernelError(op, home.name);
    const reasons: string[] = [];
    const chosen = pick(own, inputs, attrs, home, reasons);
    if (chosen) return Promise.resolve(chosen.fn(inputs, attrs, home)).then(asList);
    return fallBack(op, inputs, attrs, home, reasons);
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Every kernel of `home` declined: the next live backend that accepts runs the op. */
async function fallBack<A>(op: string, inputs: Tensor[], attrs: A, home: Backend, reasons: string[]): Promise<Tensor[]> {
  for (const other of liveBackends()) {
    if (other === home) continue;
    const moved = await Promise.all(inputs.map((t) => t.to(other)));
    const fallback = pick(getKernels(op, other.name), moved, attrs, other, reasons);
    if (!fallback) {
      moved.forEach((t) => t.dispose());
      continue;
    }
    fallbackCounts.set(`${op}:${home.name}->${other.name}`, (fallbackCounts.get(`${op}:${home.name}->${other.name}`) ?? 0) + 1);
    const outs = asList(await fallback.fn(moved, attrs, other));
    moved.forEach((t) => t.dispose());
    return Promise.all(
      outs.map(async (t) => {
        const back = await t.to(home);
        t.dispose();
        return back;
      }),
    );
  }
  throw new MissingKernelError(op, home.name, `every kernel declined (${reasons.join('; ')})`);
}

function pick(list: readonly KernelSpec[], inputs: Tensor[], attrs: unknown, backend: Backend, reasons: string[]): KernelSpec | undefined {
  for (const k of list) {
    const verdict = k.verify ? k.verify(inputs, attrs, backend) : true;
    if (verdict === true) return k;
    reasons.push(`${backend.name}: ${verdict}`);
  }
  return undefined;
}

function asList(out: Tensor | Tensor[]): Tensor[] {
  return Array.isArray(out) ? out : [out];
}

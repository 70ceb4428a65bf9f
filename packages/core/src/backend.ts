import type { DType, StorageArray } from './dtype.js';
import { DeviceError, InputError } from './errors.js';

/**
 * What a backend provides to tensors: storage it owns, and a way to move bytes in and out. Ops come from
 * kernels registered per (op, backend name) in the kernel registry, not from methods here.
 */
export interface Backend {
  /** 'cpu', 'webgpu', ...: the key kernels are registered under. */
  readonly name: string;
  /** Higher wins when picking the best backend and when a declined op falls back to another one. */
  readonly priority: number;
  /** Storage for `size` elements of `dtype`, contents unspecified (NaN-poisoned under `debug.poison`). */
  allocate(dtype: DType, size: number): unknown;
  /** Storage holding a copy of `data` (raw storage array of `dtype`). */
  upload(data: StorageArray, dtype: DType): unknown;
  /** A copy of the storage's first `size` elements, after all queued work on it. */
  read(storage: unknown, dtype: DType, size: number): Promise<StorageArray>;
  /** Gives the storage back; the tensor that owned it must not be used again. */
  release(storage: unknown): void;
  /** Resolves once all work queued so far is done (and throws the first asynchronous error, if any). */
  sync(): Promise<void>;
  /** Frees everything the backend holds; later use throws. */
  dispose(): void;
  readonly disposed: boolean;
}

export interface BackendFactory {
  name: string;
  priority: number;
  /** Cheap check whether `create` can succeed here (e.g. navigator.gpu or the `webgpu` package exists). */
  isAvailable(): boolean | Promise<boolean>;
  create(): Promise<Backend>;
}

/** Debug switches shared by all backends. */
export const debug = {
  /** Fill fresh allocations with NaN (or a sentinel for integer dtypes) so elements a kernel forgets to write show. */
  poison: false,
};

interface BackendRegistry {
  factories: Map<string, BackendFactory>;
  instances: Map<string, Promise<Backend>>;
  live: Set<Backend>;
}

// Kept on globalThis so that two copies of @phalanx/core in one bundle still share one registry.
const REGISTRY_KEY = Symbol.for('@phalanx/core/backends');
const registry: BackendRegistry = ((globalThis as Record<symbol, unknown>)[REGISTRY_KEY] as BackendRegistry) ?? {
  factories: new Map(),
  instances: new Map(),
  live: new Set(),
};
(globalThis as Record<symbol, unknown>)[REGISTRY_KEY] = registry;

/** Makes a backend known by name; it is created on first `getBackend`. Re-registering a name replaces it. */
export function registerBackend(factory: BackendFactory): void {
  registry.factories.set(factory.name, factory);
}

export function unregisterBackend(name: string): void {
  registry.factories.delete(name);
  registry.instances.delete(name);
}

/** Records a backend created outside `getBackend` (e.g. `createWebGPUBackend()`), so declined ops can fall back to it and from it. */
export function trackBackend(backend: Backend): void {
  registry.live.add(backend);
}

/** Forgets a disposed or failed backend: getBackend creates a new one instead. */
export function untrackBackend(backend: Backend): void {
  registry.live.delete(backend);
  for (const [name, p] of registry.instances) {
    p.then((b) => b === backend && registry.instances.get(name) === p && registry.instances.delete(name)).catch(() => {});
  }
}

/** Backends created so far and not disposed, best first. */
export function liveBackends(): Backend[] {
  return [...registry.live].filter((b) => !b.disposed).sort((a, b) => b.priority - a.priority);
}

export function registeredBackends(): BackendFactory[] {
  return [...registry.factories.values()].sort((a, b) => b.priority - a.priority);
}

/**
 * The backend registered under `name`, created once and shared. 'auto' picks the highest-priority backend
 * that is available and starts; the CPU backend is always there.
 */
export async function getBackend(name: string = 'auto'): Promise<Backend> {
  if (name === 'auto') {
    const reasons: string[] = [];
    for (const f of registeredBackends()) {
      try {
        if (await f.isAvailable()) return await getBackend(f.name);
        reasons.push(`${f.name}: not available`);
      } catch (e) {
        reasons.push(`${f.name}: ${(e as Error).message}`);
      }
    }
    throw new DeviceError(`no backend could be started (${reasons.join('; ')})`);
  }
  const factory = registry.factories.get(name);
  if (!factory) {
    const known = [...registry.factories.keys()].join(', ');
    throw new InputError(`unknown backend '${name}' (registered: ${known}; import @phalanx/webgpu to add 'webgpu')`);
  }
  let p = registry.instances.get(name);
  if (!p) {
    p = factory.create().then((b) => {
      trackBackend(b);
      return b;
    });
    registry.instances.set(name, p);
    p.catch(() => registry.instances.get(name) === p && registry.instances.delete(name));
  }
  const backend = await p;
  if (backend.disposed || !registry.live.has(backend)) {
    // disposed, or untracked by itself (a lost GPU device): start a new one
    if (registry.instances.get(name) === p) registry.instances.delete(name);
    return getBackend(name);
  }
  return backend;
}

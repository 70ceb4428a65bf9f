import type { Tensor } from '@phalanx/core';
import type { WebGPUBackend } from '@phalanx/webgpu';

/** The kernels `f` dispatches on `g` and how many times each, sorted by name; f's result is disposed. */
export async function dispatches(g: WebGPUBackend, f: () => Promise<Tensor>): Promise<[string, number][]> {
  const p = g.profile();
  (await f()).dispose();
  return (await p.stop()).kernels.map((k) => [k.name, k.count] as [string, number]).sort();
}

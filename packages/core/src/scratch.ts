import type { Tensor } from './tensor.js';

/**
 * The intermediate tensors of one call, disposed together when it ends (GPU memory is not
 * garbage-collected): `const s = new Scratch(); try { const y = await s.keep(op(x)); ... } finally { s.dispose(); }`.
 */
export class Scratch {
  private readonly tensors: Tensor[] = [];

  /** Keeps `t` (or what it resolves to) for disposal and returns it. */
  async keep(t: Tensor | Promise<Tensor>): Promise<Tensor> {
    const r = await t;
    this.tensors.push(r);
    return r;
  }

  dispose(): void {
    for (const t of this.tensors.splice(0)) t.dispose();
  }
}

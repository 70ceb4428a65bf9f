import type { Tensor } from './tensor.js';

/**
 * The intermediate tensors of one call, disposed together when it ends (GPU memory is not
 * garbage-collected): `const s = new Scratch(); try { const y = await s.keep(op(x)); ... } finally { s.dispose(); }`.
 */
export class Scratch {
  private readonly tensors: Tensor[] = [];

  /**
   * Keeps `t` (or what it resolves to) for disposal and returns it. Not an async function: one `then` instead
   * of an async frame per kept tensor (several per op in a model's forward).
   */
  keep(t: Tensor | Promise<Tensor>): Promise<Tensor> {
    return Promise.resolve(t).then(this.add);
  }

  private readonly add = (t: Tensor): Tensor => {
    this.tensors.push(t);
    return t;
  };

  dispose(): void {
    for (const t of this.tensors.splice(0)) t.dispose();
  }
}

import { afterAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  type DType,
  InputError,
  MissingKernelError,
  type StorageArray,
  type Tensor,
  add,
  allocStorage,
  cpu,
  cpuValues,
  empty,
  fallbackCounts,
  getBackend,
  registerBackend,
  registerKernel,
  runKernel,
  tensor,
  trackBackend,
  unregisterBackend,
  untrackBackend,
} from '../src/index.js';

/** A second backend that keeps plain arrays, like the CPU one, so the registry can be tested without a GPU. */
class FakeBackend implements Backend {
  readonly name = 'fake';
  readonly priority = 5;
  disposed = false;
  allocate(dtype: DType, size: number) {
    return allocStorage(dtype, size);
  }
  upload(data: StorageArray) {
    return data.slice();
  }
  async read(storage: unknown, _d: DType, size: number) {
    return (storage as StorageArray).slice(0, size);
  }
  release() {}
  async sync() {}
  dispose() {
    this.disposed = true;
    untrackBackend(this);
  }
}

const fake = new FakeBackend();
trackBackend(fake);
afterAll(() => {
  fake.dispose();
  unregisterBackend('fake');
});

const fakeDouble = (inputs: Tensor[], _a: unknown, backend: Backend) => {
  const out = empty(inputs[0]!.shape, { backend });
  const v = inputs[0]!.storage as Float32Array;
  (out.storage as Float32Array).set(v.map((x) => 2 * x));
  return out;
};

describe('kernel registry', () => {
  it('a missing (op, backend) pair names both', async () => {
    const t = tensor([1], [1]);
    await expect(runKernel('no-such-op', [t], {})).rejects.toThrow(MissingKernelError);
    await expect(runKernel('no-such-op', [t], {})).rejects.toThrow("no kernel for op 'no-such-op' on backend 'cpu'");
    const f = await t.to(fake);
    await expect(add(f, f)).rejects.toThrow("no kernel for op 'add' on backend 'fake'");
  });

  it('a declined input goes to the next kernel of the same backend, best first', async () => {
    const seen: string[] = [];
    registerKernel({ op: 'double', backend: 'fake', priority: 1, verify: ([x]) => x!.size % 2 === 0 || 'odd size', fn: (i, a, b) => (seen.push('even'), fakeDouble(i, a, b)) });
    registerKernel({ op: 'double', backend: 'fake', fn: (i, a, b) => (seen.push('any'), fakeDouble(i, a, b)) });
    await runKernel('double', [tensor([1, 2], [2], { backend: fake })], {});
    const [out] = await runKernel('double', [tensor([1, 2, 3], [3], { backend: fake })], {});
    expect(seen).toEqual(['even', 'any']);
    expect(Array.from(await out!.data())).toEqual([2, 4, 6]);
  });

  it('when every kernel of a backend declines, the next live backend serves it and the result comes back', async () => {
    registerKernel({ op: 'negate', backend: 'fake', verify: () => 'never on fake', fn: () => { throw new Error('unreachable'); } });
    registerKernel({
      op: 'negate',
      backend: 'cpu',
      fn: ([x]) => {
        const out = empty(x!.shape, { backend: cpu });
        (out.storage as Float32Array).set(Array.from(cpuValues(x!), (v) => -v));
        return out;
      },
    });
    const before = fallbackCounts.get('negate:fake->cpu') ?? 0;
    const [out] = await runKernel('negate', [tensor([1, -2], [2], { backend: fake })], {});
    expect(out!.backend).toBe(fake);
    expect(Array.from(await out!.data())).toEqual([-1, 2]);
    expect(fallbackCounts.get('negate:fake->cpu')).toBe(before + 1);
  });

  it('when every backend declines, the error lists the reasons', async () => {
    registerKernel({ op: 'picky', backend: 'cpu', verify: () => 'too picky', fn: () => { throw new Error('unreachable'); } });
    await expect(runKernel('picky', [tensor([1], [1])], {})).rejects.toThrow(/every kernel declined \(cpu: too picky\)/);
  });

  it('errors come back as rejected promises, never thrown at the call', async () => {
    const t = tensor([1], [1]);
    t.dispose();
    let call: Promise<unknown> | undefined;
    expect(() => (call = runKernel('add', [t, t], {}))).not.toThrow();
    await expect(call).rejects.toThrow(/input 0 \(tensor\) was disposed/);
    registerKernel({ op: 'throws-at-once', backend: 'cpu', fn: () => { throw new InputError('thrown by the kernel'); } });
    expect(() => (call = runKernel('throws-at-once', [tensor([1], [1])], {}))).not.toThrow();
    await expect(call).rejects.toThrow('thrown by the kernel');
  });

  it('a kernel may return its tensors synchronously, one or a list', async () => {
    registerKernel({ op: 'sync-one', backend: 'fake', fn: fakeDouble });
    registerKernel({ op: 'sync-list', backend: 'fake', fn: (i, a, b) => [fakeDouble(i, a, b), fakeDouble(i, a, b)] });
    const x = tensor([1, 2], [2], { backend: fake });
    const [one] = await runKernel('sync-one', [x], {});
    expect(Array.from(await one!.data())).toEqual([2, 4]);
    expect(await runKernel('sync-list', [x], {})).toHaveLength(2);
  });

  it('inputs on different backends are refused with a hint', async () => {
    const a = tensor([1], [1]);
    const b = tensor([1], [1], { backend: fake });
    await expect(add(a, b)).rejects.toThrow(InputError);
    await expect(add(a, b)).rejects.toThrow(/input 1 lives on 'fake', the others on 'cpu'/);
  });

  it('getBackend picks the best available backend and names unknown ones', async () => {
    registerBackend({ name: 'fake', priority: 5, isAvailable: () => false, create: async () => fake });
    expect((await getBackend('auto')).name).not.toBe('fake');
    registerBackend({ name: 'fake', priority: 99, isAvailable: () => true, create: async () => fake });
    expect(await getBackend('auto')).toBe(fake);
    expect(await getBackend('cpu')).toBe(cpu);
    await expect(getBackend('tpu')).rejects.toThrow(/unknown backend 'tpu'/);
  });
});

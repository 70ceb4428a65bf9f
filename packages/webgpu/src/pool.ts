/**
 * Reuses GPU buffers by size class. Classes step by a quarter of a power of two, so a buffer is at most
 * 25% larger than asked for. A buffer given back while commands that use it are still being recorded
 * only becomes reusable after they are submitted (see `WebGPUBackend.release`).
 */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  // the largest power of two <= bytes: a shift below 2^31 (every allocation of a decode step), log2 above
  const p = bytes < 2 ** 31 ? 1 << (31 - Math.clz32(bytes)) : 2 ** Math.floor(Math.log2(bytes));
  const step = p / 4;
  return Math.ceil(bytes / step) * step;
}

export interface PooledBuffer {
  readonly buffer: GPUBuffer;
  /** Unique for the life of the backend: keys the bind-group cache. */
  readonly id: number;
  readonly capacity: number;
}

export class BufferPool {
  private free = new Map<number, PooledBuffer[]>();
  private nextId = 1;
  /** Bytes held in free lists. */
  freeBytes = 0;
  /** Bytes of all buffers created and not destroyed. */
  totalBytes = 0;

  constructor(
    private readonly create: (size: number) => GPUBuffer,
    /** Free bytes kept before the largest free buffers are destroyed. */
    private readonly maxFreeBytes: number,
  ) {}

  acquire(bytes: number): PooledBuffer {
    const cls = sizeClass(bytes);
    const hit = this.free.get(cls)?.pop();
    if (hit) {
      this.freeBytes -= cls;
      return hit;
    }
    const buffer = this.create(cls);
    this.totalBytes += cls;
    return { buffer, id: this.nextId++, capacity: cls };
  }

  /**
   * Free lists are kept in descending id order and `acquire` takes the lowest id, so which buffer a tensor
   * gets depends only on which buffers are free, not on the order they came back: a decode step then binds
   * the same buffers as the step before it (or the one before that) and its bind groups come from the cache.
   */
  giveBack(b: PooledBuffer): void {
    let list = this.free.get(b.capacity);
    if (!list) this.free.set(b.capacity, (list = []));
    // insertion by shifting (splice would allocate an array of the removed elements per call)
    let i = list.length;
    list.push(b);
    for (; i > 0 && list[i - 1]!.id < b.id; i--) list[i] = list[i - 1]!;
    list[i] = b;
    this.freeBytes += b.capacity;
    if (this.freeBytes > this.maxFreeBytes) this.trim(this.maxFreeBytes / 2);
  }

  /** Destroys free buffers, largest first, until at most `keepBytes` are held free. */
  trim(keepBytes = 0): void {
    const classes = [...this.free.keys()].sort((a, b) => b - a);
    for (const cls of classes) {
      const list = this.free.get(cls)!;
      while (list.length > 0 && this.freeBytes > keepBytes) {
        list.pop()!.buffer.destroy();
        this.freeBytes -= cls;
        this.totalBytes -= cls;
      }
    }
  }

  /** Destroys every free buffer (buffers in use are destroyed with the device). */
  clear(): void {
    this.trim(0);
    this.free.clear();
  }
}

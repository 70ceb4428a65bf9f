/**
 * A least-recently-used cache keyed by short lists of numbers (a bind group's buffer ids, a uniform buffer's
 * words). Entries are found by a hash of the key and checked against the key they keep, so a lookup builds
 * no key string (a string per dispatch, and hashing it, cost more than the rest of the lookup). Two keys with
 * one hash share a slot: the later replaces the earlier. A hit only stamps its entry; when the cache is full,
 * the least recently used half goes at once.
 */
export class WordsLru<V> {
  private readonly entries = new Map<number, { key: ArrayLike<number>; value: V; used: number }>();
  private clock = 0;

  constructor(
    private readonly capacity: number,
    /** Called with each value dropped (evicted or replaced). */
    private readonly dropped: (value: V) => void = () => {},
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: ArrayLike<number>): V | undefined {
    const e = this.entries.get(hashWords(key));
    if (!e || !sameWords(e.key, key)) return undefined;
    e.used = ++this.clock;
    return e.value;
  }

  /** Adds `value` under `key`, which the cache keeps: the caller must not change it afterwards. */
  set(key: ArrayLike<number>, value: V): void {
    const hash = hashWords(key);
    const old = this.entries.get(hash);
    if (old) this.dropped(old.value);
    else if (this.entries.size >= this.capacity) this.evictOlderHalf();
    this.entries.set(hash, { key, value, used: ++this.clock });
  }

  clear(): void {
    this.entries.clear();
  }

  private evictOlderHalf(): void {
    const stamps = Array.from(this.entries.values(), (e) => e.used).sort((a, b) => a - b);
    const cut = stamps[stamps.length >> 1]!;
    for (const [hash, e] of this.entries) {
      if (e.used >= cut) continue;
      this.entries.delete(hash);
      this.dropped(e.value);
    }
  }
}

/** FNV-1a over 32-bit words, cut to 30 bits: a small integer, which a Map hashes without allocating. */
function hashWords(words: ArrayLike<number>): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i]!, 0x01000193);
  return h & 0x3fffffff;
}

function sameWords(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

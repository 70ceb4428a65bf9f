/**
 * A least-recently-used cache keyed by short lists of 32-bit words (a bind group's pipeline and buffer ids, a
 * uniform buffer's words). Entries are found by a hash of the key and checked against the key they keep, so a
 * lookup builds no key string (a string per dispatch, and hashing it, cost more than the rest of the lookup).
 * Keys are Int32Arrays only: one array type keeps the hash and compare loops monomorphic. Two keys with one
 * hash share a slot: the later replaces the earlier. A hit only stamps its entry; when the cache is full, the
 * least recently used half goes at once.
 */
export class WordsLru<V> {
  private readonly entries = new Map<number, { key: Int32Array; value: V; used: number }>();
  private clock = 0;

  constructor(
    private readonly capacity: number,
    /** Called with each value dropped (evicted or replaced). */
    private readonly dropped: (value: V) => void = () => {},
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: Int32Array): V | undefined {
    const e = this.entries.get(hashWords(key));
    if (!e || !sameWords(e.key, key)) return undefined;
    e.used = ++this.clock;
    return e.value;
  }

  /** Adds `value` under `key`, which the cache keeps: the caller must not change it afterwards. */
  set(key: Int32Array, value: V): void {
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
function hashWords(words: Int32Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i]!, 0x01000193);
  return h & 0x3fffffff;
}

function sameWords(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

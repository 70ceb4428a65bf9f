/**
 * A seeded mutation fuzzer for the loaders' inputs: raw bytes, JSON documents (structure-aware: values
 * replaced by boundary cases, fields deleted or added, duplicate keys, numbers JSON.parse turns into
 * Infinity or rounds), safetensors files (header-aware) and template text. Each case is made from its own
 * seed, so a failure names the seed that reproduces it.
 */
import { Rng } from '@phalanx/core';

/** Cases per target: a few hundred in CI; PHALANX_FUZZ_CASES=100000 for a long local run. */
export function fuzzCases(ciDefault: number): number {
  const n = Number(process.env.PHALANX_FUZZ_CASES ?? ciDefault);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`PHALANX_FUZZ_CASES must be a positive integer, got ${process.env.PHALANX_FUZZ_CASES}`);
  return n;
}

/** A fuzz test's time limit, past which a hang shows: a minute at CI case counts, `msPerCase` each beyond. */
export function fuzzTimeout(cases: number, msPerCase: number): number {
  return Math.max(60_000, cases * msPerCase);
}

/** PHALANX_FUZZ_SEED shifts every seed, so long runs can explore past the CI cases. */
export const SEED_BASE = Number(process.env.PHALANX_FUZZ_SEED ?? 0);

/** A number written verbatim into the JSON text (JSON.parse reads 1e400 as Infinity, 9007199254740993 rounded). */
class Raw {
  constructor(readonly text: string) {}
}

const INTERESTING: unknown[] = [
  0, 1, -1, 2, 3, 7, 8, 255, 256, 65535, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 60, -(2 ** 60), 1e308, -1e-308, 0.5, 1.5, -0,
  new Raw('1e400'), new Raw('-1e400'), new Raw('9007199254740993'), new Raw('1.0'), new Raw('-0.0'), new Raw('1E2'),
  '', 'x', 'F32', 'BF16', 'I64', 'BOOL', 'F8_E4M3', 'llama', 'monoid', 'nanohammer', 'parcae', '__metadata__', 'x'.repeat(300),
  null, true, false, [], {}, [0], [-1], [1, 2], [2, 1], [0, 2 ** 60], [2 ** 60, 2 ** 60], [0.5], ['a'], [[]], { dtype: 'F32' }, { type: 'BPE' },
];

const JUNK_KEYS = ['__metadata__', '', 'junk', '__proto__', 'constructor', 'toString', 'x'.repeat(100)];

interface Slot {
  parent: Record<string, unknown> | unknown[];
  key: string | number;
}

export class Mutator {
  readonly rng: Rng;

  constructor(seed: number) {
    this.rng = new Rng(seed + SEED_BASE);
  }

  int(n: number): number {
    return Math.floor(this.rng.uniform() * n);
  }

  chance(p: number): boolean {
    return this.rng.uniform() < p;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  /** 1-4 byte-level edits: bit flips, boundary bytes, inserted, deleted or duplicated runs, truncation. */
  bytes(input: Uint8Array, focus = input.length): Uint8Array {
    let b: Uint8Array = Uint8Array.from(input);
    const at = (n: number) => (this.chance(0.7) ? this.int(Math.max(1, Math.min(focus, n))) : this.int(Math.max(1, n)));
    for (let k = 1 + this.int(4); k > 0; k--) {
      const i = at(b.length);
      switch (this.int(6)) {
        case 0:
          if (b.length) b[i] = b[i]! ^ (1 << this.int(8));
          break;
        case 1:
          if (b.length) b[i] = this.pick([0, 1, 0x7f, 0x80, 0xff, 0x22, 0x7b, 0x7d, 0x2c, 0x3a]);
          break;
        case 2: {
          const run = Uint8Array.from({ length: 1 + this.int(16) }, () => this.int(256));
          b = concat(b.subarray(0, i), run, b.subarray(i));
          break;
        }
        case 3:
          b = concat(b.subarray(0, i), b.subarray(Math.min(b.length, i + 1 + this.int(32))));
          break;
        case 4: {
          const len = 1 + this.int(64);
          b = concat(b.subarray(0, i), b.subarray(i, i + len), b.subarray(i));
          break;
        }
        case 5:
          b = b.subarray(0, this.int(b.length + 1));
          break;
      }
    }
    return b;
  }

  /** `value` after 1-3 structural edits, as JSON text (which may hold duplicate keys and out-of-range numbers). */
  json(value: unknown): string {
    const root = { v: clone(value) };
    const dupes: string[] = [];
    for (let k = 1 + this.int(3); k > 0; k--) {
      const slots = collectSlots(root);
      const s = this.pick(slots);
      switch (this.int(7)) {
        case 0:
        case 1:
          setSlot(s, this.value(slots));
          break;
        case 2:
          if (s.parent !== root) deleteSlot(s);
          break;
        case 3: {
          const objects = slots.map((x) => getSlot(x)).filter(isObject);
          if (objects.length) setKey(this.pick(objects), this.chance(0.5) ? this.pick(JUNK_KEYS) : `${String(this.pick(slots).key)}x`, this.value(slots));
          break;
        }
        case 4: {
          const v = getSlot(s);
          if (typeof v === 'number') setSlot(s, this.pick([v + 1, v - 1, -v, v * 2, v * 1024, v + 0.5, v * 2 ** 32, Math.floor(v / 2)]));
          else if (Array.isArray(v)) {
            if (v.length && this.chance(0.5)) v.splice(this.int(v.length), 1);
            else v.splice(this.int(v.length + 1), 0, clone(v.length ? this.pick(v) : this.pick(INTERESTING)));
          } else setSlot(s, this.value(slots));
          break;
        }
        case 5: {
          const t = this.pick(slots);
          const [a, b] = [getSlot(s), getSlot(t)];
          if (s.parent !== root && t.parent !== root) {
            setSlot(s, clone(b));
            setSlot(t, clone(a));
          }
          break;
        }
        case 6: {
          // a key written twice: JSON.parse keeps the last one
          const top = root.v;
          if (isObject(top)) {
            const keys = Object.keys(top);
            if (keys.length) dupes.push(`${JSON.stringify(this.pick(keys))}:${toText(this.value(slots))}`);
          }
          break;
        }
      }
    }
    let text = toText(root.v);
    if (dupes.length && text.startsWith('{')) text = this.chance(0.5) ? `{${dupes.join(',')},${text.slice(1)}` : `${text.slice(0, -1)},${dupes.join(',')}}`;
    return text;
  }

  /** Text with snippets of `dictionary` inserted, runs deleted or duplicated, or bytes flipped. */
  text(s: string, dictionary: readonly string[]): string {
    let t = s;
    for (let k = 1 + this.int(3); k > 0; k--) {
      const i = this.int(t.length + 1);
      switch (this.int(4)) {
        case 0:
        case 1:
          t = t.slice(0, i) + this.pick(dictionary) + t.slice(i);
          break;
        case 2:
          t = t.slice(0, i) + t.slice(i + 1 + this.int(20));
          break;
        case 3:
          t = new TextDecoder().decode(this.bytes(new TextEncoder().encode(t)));
          break;
      }
    }
    return t;
  }

  /**
   * A mutated safetensors file: its header edited as JSON (the length prefix kept right, or not), the length
   * prefix replaced, one tensor's entry made inconsistent, the data cut or shifted, or raw bytes flipped.
   */
  safetensors(file: Uint8Array): Uint8Array {
    const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n))) as Record<string, { shape: number[]; data_offsets: number[]; dtype: string }>;
    const body = file.subarray(8 + n);
    const build = (json: string, data: Uint8Array, length?: bigint) => {
      const h = new TextEncoder().encode(json);
      const len = new Uint8Array(8);
      new DataView(len.buffer).setBigUint64(0, length ?? BigInt(h.length), true);
      return concat(len, h, data);
    };
    switch (this.int(6)) {
      case 0:
      case 1:
        return build(this.json(header), body);
      case 2: {
        const lengths = [0n, 1n, 2n, BigInt(n - 1), BigInt(n + 1), BigInt(file.length), BigInt(file.length - 7), 2n ** 60n, 2n ** 63n, 2n ** 64n - 1n, 100_000_001n];
        return build(JSON.stringify(header), body, this.pick(lengths));
      }
      case 3: {
        const names = Object.keys(header).filter((k) => k !== '__metadata__');
        const e = header[this.pick(names)]!;
        const [begin, end] = e.data_offsets as [number, number];
        switch (this.int(5)) {
          case 0:
            e.shape = [...e.shape].reverse(); // the same byte count, transposed
            break;
          case 1:
            e.shape = e.shape.map((d) => (this.chance(0.5) ? d * this.pick([2, 0, -1]) : d));
            break;
          case 2:
            e.data_offsets = [begin + this.pick([-4, -1, 1, 4]), end + this.pick([0, -4, 4])];
            break;
          case 3:
            e.dtype = this.pick(['F32', 'F16', 'BF16', 'I32', 'U32', 'I8', 'U8', 'I64', 'BOOL', 'F64', 'f32', '']);
            break;
          case 4:
            e.data_offsets = [end, begin];
            break;
        }
        return build(JSON.stringify(header), body);
      }
      case 4: {
        const at = this.int(body.length + 1);
        const data = this.chance(0.5) ? body.subarray(0, at) : concat(body.subarray(0, at), body.subarray(at + 1 + this.int(8)));
        return build(JSON.stringify(header), data);
      }
      default:
        return this.bytes(file, 8 + n);
    }
  }

  /** A boundary value, or (one time in four) a copy of some other value of the same document. */
  private value(slots: Slot[]): unknown {
    return this.chance(0.25) ? clone(getSlot(this.pick(slots))) : clone(this.pick(INTERESTING));
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A deep copy that keeps Raw numbers and '__proto__' keys. */
function clone(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(clone);
  if (!isObject(v)) return v;
  const o: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) setKey(o, k, clone(x));
  return o;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Raw);
}

/** Every value of the document, as (parent, key) pairs, the root first. */
function collectSlots(root: { v: unknown }): Slot[] {
  const out: Slot[] = [{ parent: root, key: 'v' }];
  for (let i = 0; i < out.length; i++) {
    const v = getSlot(out[i]!);
    if (Array.isArray(v)) v.forEach((_, k) => out.push({ parent: v, key: k }));
    else if (isObject(v)) for (const k of Object.keys(v)) out.push({ parent: v, key: k });
  }
  return out;
}

function getSlot(s: Slot): unknown {
  return (s.parent as Record<string | number, unknown>)[s.key];
}

function setSlot(s: Slot, v: unknown): void {
  if (Array.isArray(s.parent)) s.parent[s.key as number] = v;
  else setKey(s.parent, s.key as string, v);
}

/** An own property even for '__proto__', as JSON.parse makes it. */
function setKey(o: Record<string, unknown>, key: string, v: unknown): void {
  Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true });
}

function deleteSlot(s: Slot): void {
  if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
  else delete s.parent[s.key as string];
}

function toText(v: unknown): string {
  const raws: string[] = [];
  const text = JSON.stringify(v, (_k, x) => (x instanceof Raw ? `\u0001${raws.push(x.text) - 1}\u0001` : x)) ?? 'null';
  return text.replace(/"\\u0001(\d+)\\u0001"/g, (_, i: string) => raws[Number(i)]!);
}

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError, type DType, DTYPES, type Tensor, bytesPerElement, tensor } from '@phalanx/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { type ProgressEvent, SafetensorsBytes, SafetensorsFile, parseSafetensors, writeSafetensors } from '../src/index.js';
import { tempDir, writeRaw } from './helpers.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

const SAMPLES: Record<DType, () => Tensor> = {
  f32: () => tensor([1.5, -2, 3.25, 0, 1e-30, -7], [2, 3], { dtype: 'f32' }),
  f16: () => tensor(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7e00, 0x8000]), [3, 2], { dtype: 'f16' }),
  bf16: () => tensor(new Uint16Array([0x3f80, 0xbf80, 0x7f7f, 0x0001, 0x7fc0]), [5], { dtype: 'bf16' }),
  i32: () => tensor(new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0, 7]), [2, 2]),
  u32: () => tensor(new Uint32Array([0, 2 ** 32 - 1, 5]), [3]),
  i8: () => tensor(new Int8Array([-128, 127, 0]), [1, 3]),
  u8: () => tensor(new Uint8Array([0, 255, 9, 1]), [4]),
};

/** Both readers, the file one and the in-memory one, refuse the file with the same CheckpointError. */
async function expectRefused(path: string, ...patterns: RegExp[]) {
  const fromFile = await SafetensorsFile.open(path).then(
    () => undefined,
    (e: unknown) => e,
  );
  const bytes = await readFile(path).catch(() => undefined);
  const fromBytes = bytes && catchSync(() => SafetensorsBytes.parse(bytes, path));
  for (const err of bytes ? [fromFile, fromBytes] : [fromFile]) {
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).file).toBe(path);
    for (const p of patterns) expect((err as Error).message).toMatch(p);
  }
  if (bytes) expect((fromBytes as Error).message).toBe((fromFile as Error).message);
}

function catchSync(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe('writeSafetensors / SafetensorsFile round trip', () => {
  it('keeps every dtype bit for bit, with shapes, names and metadata', async () => {
    const tensors = Object.fromEntries(DTYPES.map((d) => [`w.${d}`, SAMPLES[d]()]));
    tensors['empty'] = tensor([], [0, 4]);
    tensors['scalar'] = tensor([42], []);
    const path = join(dir, 'all.safetensors');
    await writeSafetensors(path, tensors, { format: 'pt' });

    const f = await SafetensorsFile.open(path);
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(new Set(f.names)).toEqual(new Set(Object.keys(tensors)));
    for (const [name, t] of Object.entries(tensors)) {
      const back = await f.read(name);
      expect(back.name).toBe(name);
      expect(back.dtype).toBe(t.dtype);
      expect(back.shape).toEqual(t.shape);
      expect(await back.rawData()).toEqual(await t.rawData());
      // Aligned: every tensor starts at a multiple of its element size.
      expect(f.info(name).begin % bytesPerElement(back.dtype)).toBe(0);
    }
    await f.close();
  });

  it('writes the same bytes whatever the insertion order', async () => {
    const a = join(dir, 'a.safetensors');
    const b = join(dir, 'b.safetensors');
    await writeSafetensors(a, { x: SAMPLES.i8(), y: SAMPLES.f32(), z: SAMPLES.bf16() });
    await writeSafetensors(b, { z: SAMPLES.bf16(), y: SAMPLES.f32(), x: SAMPLES.i8() });
    const [ba, bb] = [await readFile(a), await readFile(b)];
    expect(ba.equals(bb)).toBe(true);
    expect(Number(ba.readBigUInt64LE(0)) % 8).toBe(0); // header padded: the data section starts 8-aligned
  });

  it('refuses a reserved tensor name and non-string metadata', async () => {
    await expect(writeSafetensors(join(dir, 'r.safetensors'), { __metadata__: SAMPLES.u8() })).rejects.toThrow(CheckpointError);
    await expect(writeSafetensors(join(dir, 'm.safetensors'), {}, { n: 1 as unknown as string })).rejects.toThrow(/__metadata__\.n/);
  });

  it('reads I64 as range-checked i32 and BOOL as u8', async () => {
    const i64 = new BigInt64Array([-5n, 2147483647n, -2147483648n]);
    const path = await writeRaw(join(dir, 'ints.safetensors'), {
      ids: { dtype: 'I64', shape: [3], data_offsets: [0, 24] },
      mask: { dtype: 'BOOL', shape: [2], data_offsets: [24, 26] },
    }, Buffer.concat([new Uint8Array(i64.buffer), new Uint8Array([1, 0])]));
    const f = await SafetensorsFile.open(path);
    const ids = await f.read('ids');
    expect(ids.dtype).toBe('i32');
    expect(Array.from(await ids.data())).toEqual([-5, 2147483647, -2147483648]);
    const mask = await f.read('mask');
    expect(mask.dtype).toBe('u8');
    expect(Array.from(await mask.data())).toEqual([1, 0]);
    await f.close();

    const big = await writeRaw(join(dir, 'i64-big.safetensors'), { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, new Uint8Array(new BigInt64Array([1n, 2n ** 40n]).buffer));
    const g = await SafetensorsFile.open(big);
    await expect(g.read('ids')).rejects.toThrow(/i64-big\.safetensors: tensor 'ids': I64 element 1 is 1099511627776, outside the i32 range/);
    await g.close();
  });

  it('reports progress in 16 MiB chunks of the tensor being read', async () => {
    const path = join(dir, 'progress.safetensors');
    const n = (16 << 20) / 4 + 256; // one full chunk and a bit
    await writeSafetensors(path, { w: tensor(new Float32Array(n).fill(0.5), [n]) });
    const f = await SafetensorsFile.open(path);
    const events: ProgressEvent[] = [];
    const w = await f.read('w', { onProgress: (e) => events.push(e) });
    expect(events).toEqual([
      { file: path, tensor: 'w', bytesDone: 16 << 20, bytesTotal: 4 * n },
      { file: path, tensor: 'w', bytesDone: 4 * n, bytesTotal: 4 * n },
    ]);
    expect((await w.data())[n - 1]).toBe(0.5);
    await f.close();
  });
});

describe('parseSafetensors: a file in memory', () => {
  it('gives the tensors the file reader gives, with progress over all of them', async () => {
    const tensors = Object.fromEntries(DTYPES.map((d) => [`w.${d}`, SAMPLES[d]()]));
    const path = join(dir, 'memory.safetensors');
    await writeSafetensors(path, tensors, { format: 'pt' });
    const bytes = await readFile(path);
    const ckpt = parseSafetensors(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), 'memory.safetensors');
    expect(ckpt.path).toBe('memory.safetensors');
    expect(ckpt.metadata).toEqual({ format: 'pt' });
    const events: ProgressEvent[] = [];
    const back = await ckpt.readAll({ onProgress: (e) => events.push(e) });
    for (const [name, t] of Object.entries(tensors)) {
      expect(back[name]!.dtype).toBe(t.dtype);
      expect(back[name]!.shape).toEqual(t.shape);
      expect(await back[name]!.rawData()).toEqual(await t.rawData());
    }
    const total = Object.values(tensors).reduce((s, t) => s + t.size * bytesPerElement(t.dtype), 0);
    expect(events.at(-1)).toMatchObject({ file: 'memory.safetensors', bytesDone: total, bytesTotal: total });
    await ckpt.close();
    await expect(ckpt.read('w.f32')).rejects.toThrow(/read after close/);
  });
});

describe('malformed safetensors files are refused with a CheckpointError naming the file and field', () => {
  const f32 = (shape: number[], offsets: number[]) => ({ dtype: 'F32', shape, data_offsets: offsets });
  const cases: [string, (p: string) => Promise<unknown>, RegExp[]][] = [
    ['an empty file', (p) => writeFile(p, ''), [/header length: file is 0 bytes/]],
    ['a header length past EOF', (p) => writeRaw(p, { w: f32([1], [0, 4]) }, new Uint8Array(4), 1000n), [/header length: 1000 bytes runs past the end/]],
    ['an absurd header length (2^60)', (p) => writeRaw(p, {}, new Uint8Array(), 2n ** 60n), [/header length: 1152921504606846976 bytes is above/]],
    ['a header that is not JSON', (p) => writeRaw(p, '{"w": nope}'), [/header: not UTF-8 JSON/]],
    ['a header that is not UTF-8', (p) => writeRaw(p, new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])), [/header: not UTF-8 JSON/]],
    ['a header that is a JSON array', (p) => writeRaw(p, [1, 2]), [/header: not a JSON object/]],
    ['offsets past EOF', (p) => writeRaw(p, { w: f32([4], [0, 16]) }, new Uint8Array(8)), [/tensor 'w': data_offsets \[0, 16\] run past the end/]],
    ['truncated data', (p) => writeRaw(p, { a: f32([2], [0, 8]), b: f32([2], [8, 16]) }, new Uint8Array(12)), [/tensor 'b'/, /truncated/]],
    ['a size inconsistent with shape x dtype', (p) => writeRaw(p, { w: f32([2, 3], [0, 20]) }, new Uint8Array(24)), [/tensor 'w': data_offsets \[0, 20\] hold 20 bytes, but shape \[2, 3\] of F32 needs 24/]],
    ['an unknown dtype', (p) => writeRaw(p, { w: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), [/tensor 'w': dtype "F8_E4M3" is not supported/]],
    ['a negative shape', (p) => writeRaw(p, { w: f32([-1, 2], [0, 8]) }, new Uint8Array(8)), [/tensor 'w': shape \[-1,2\] is not a list of non-negative integers/]],
    ['offsets ending before they begin', (p) => writeRaw(p, { w: f32([0], [8, 4]) }, new Uint8Array(8)), [/tensor 'w': data_offsets \[8, 4\] end before/]],
    ['overlapping tensors', (p) => writeRaw(p, { a: f32([2], [0, 8]), b: f32([2], [4, 12]) }, new Uint8Array(12)), [/tensor 'b': data_offsets overlap those of 'a'/]],
    ['metadata that is not a string map', (p) => writeRaw(p, { __metadata__: { n: 3 } }), [/__metadata__\.n: not a string/]],
  ];
  it.each(cases)('%s', async (what, make, patterns) => {
    const path = join(dir, `bad-${what.replaceAll(/\W+/g, '-')}.safetensors`);
    await make(path);
    await expectRefused(path, ...patterns);
  });

  it('a missing file', async () => {
    await expectRefused(join(dir, 'nope.safetensors'), /cannot open/);
  });

  it('an absurd shape is refused before allocating', async () => {
    const path = await writeRaw(join(dir, 'huge.safetensors'), { w: f32([2 ** 30, 2 ** 30], [0, 4]) }, new Uint8Array(4));
    await expectRefused(path, /tensor 'w': data_offsets \[0, 4\] hold 4 bytes, but shape \[1073741824, 1073741824\] of F32 needs 4611686018427387904/);
  });
});

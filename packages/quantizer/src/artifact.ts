import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { brotliCompress, constants as zlib } from 'node:zlib';
import { openCheckpoint, writeSafetensors } from '@phalanx/checkpoint';
import { type Tensor, CheckpointError, InputError } from '@phalanx/core';
import { type HadamardRotation, hadamardRotation } from './hadamard.js';
import { type CodeLayout, packQuantized, packedBytes, quantizedDims, unpackQuantized } from './pack.js';
import { type QuantizedModel } from './policy.js';
import { type QuantMethod, type QuantizedTensor } from './quantize.js';

/** `__metadata__.format` of a quantized artifact. */
export const ARTIFACT_FORMAT = 'phalanx-quantized';
/** `__metadata__` key holding the JSON description of the artifact. */
export const ARTIFACT_KEY = 'phalanx.quantizer';
const VERSION = 1;

interface QuantizedEntry {
  bits: number;
  clipSigmas: number;
  method: QuantMethod;
  shape: number[];
  /** Present when the codes hold W R (`quantize`'s `rotate`). */
  rotation?: HadamardRotation;
}

interface ArtifactDescription {
  version: number;
  codes: CodeLayout;
  quantized: Record<string, QuantizedEntry>;
  passthrough: string[];
}

/**
 * The safetensors content of an artifact. A quantized tensor `name` is stored as `name.codes` (packed: u8
 * [ceil(rows*cols*bits/8)], the row-major codes as one bit stream, see `packBits`; int8: i8 [rows, cols])
 * and `name.scales` (f16 [rows]); a passthrough tensor under its own name. The metadata says which is which.
 */
async function artifactTensors(model: QuantizedModel, layout: CodeLayout) {
  const tensors: Record<string, Tensor> = {};
  const add = (name: string, t: Tensor) => {
    if (Object.hasOwn(tensors, name)) throw new InputError(`artifact: two tensors would be stored as '${name}'`);
    tensors[name] = t;
  };
  const description: ArtifactDescription = { version: VERSION, codes: layout, quantized: {}, passthrough: Object.keys(model.passthrough) };
  for (const [name, q] of Object.entries(model.quantized)) {
    description.quantized[name] = { bits: q.bits, clipSigmas: q.clipSigmas, method: q.method, shape: [...q.shape], ...(q.rotation && { rotation: q.rotation }) };
    add(`${name}.codes`, (await toLayout(q, layout)).codes);
    add(`${name}.scales`, q.scales);
  }
  for (const [name, t] of Object.entries(model.passthrough)) add(name, t);
  return { tensors, metadata: { format: ARTIFACT_FORMAT, [ARTIFACT_KEY]: JSON.stringify(description) } };
}

/** Writes a quantized model as one safetensors file (format in `artifactTensors` and the package docs). */
export async function writeArtifact(path: string, model: QuantizedModel, options: { codes?: CodeLayout } = {}): Promise<void> {
  const { tensors, metadata } = await artifactTensors(model, options.codes ?? 'packed');
  await writeSafetensors(path, tensors, metadata);
}

function toLayout(q: QuantizedTensor, layout: CodeLayout): Promise<QuantizedTensor> {
  return layout === 'packed' ? packQuantized(q) : unpackQuantized(q);
}

/**
 * Reads an artifact written by `writeArtifact`, on the CPU. Codes come back in `codes` layout whatever the
 * file holds: 'int8' (default) i8 [rows, cols]; 'packed' u8 bit streams, ready for `quantizedLinear`.
 */
export async function readArtifact(path: string, options: { codes?: CodeLayout } = {}): Promise<QuantizedModel> {
  const { codes: layout = 'int8' } = options;
  if (layout !== 'int8' && layout !== 'packed') throw new InputError(`readArtifact: codes must be 'int8' or 'packed', got ${JSON.stringify(layout)}`);
  const ckpt = await openCheckpoint(path);
  try {
    const meta = ckpt.metadata;
    if (meta.format !== ARTIFACT_FORMAT || !meta[ARTIFACT_KEY]) throw new CheckpointError(ckpt.path, `not a quantized artifact (metadata format is ${JSON.stringify(meta.format)})`);
    const d = JSON.parse(meta[ARTIFACT_KEY]) as ArtifactDescription;
    if (d.version !== VERSION) throw new CheckpointError(ckpt.path, `artifact version ${d.version} is not supported (expected ${VERSION})`);
    const model: QuantizedModel = { quantized: {}, passthrough: {} };
    for (const [name, e] of Object.entries(d.quantized)) {
      const scales = await ckpt.read(`${name}.scales`);
      const stored: QuantizedTensor = { codes: await ckpt.read(`${name}.codes`), scales, bits: e.bits, clipSigmas: e.clipSigmas, method: e.method, shape: e.shape };
      const [rows, cols] = quantizedDims(stored);
      const [dtype, size] = d.codes === 'packed' ? ['u8', packedBytes(rows * cols, e.bits)] : ['i8', rows * cols];
      if (stored.codes.dtype !== dtype || stored.codes.size !== size) throw new CheckpointError(ckpt.path, `${name}.codes is ${stored.codes.dtype} of ${stored.codes.size}, expected ${dtype} of ${size} (${d.codes} codes, [${rows}, ${cols}], ${e.bits} bits)`);
      if (scales.dtype !== 'f16' || scales.size !== rows) throw new CheckpointError(ckpt.path, `${name}.scales is ${scales.dtype} of ${scales.size}, expected f16 [${rows}]`);
      if (e.rotation) stored.rotation = checkedRotation(ckpt.path, name, e.rotation, cols);
      const q = await toLayout(stored, layout);
      if (q.codes !== stored.codes) stored.codes.dispose();
      model.quantized[name] = q;
    }
    for (const name of d.passthrough) model.passthrough[name] = await ckpt.read(name);
    return model;
  } finally {
    await ckpt.close();
  }
}

/** A stored rotation, checked: a CheckpointError names the tensor when it is not one `quantize` makes for cols. */
function checkedRotation(path: string, name: string, r: HadamardRotation, cols: number): HadamardRotation {
  try {
    if (r.kind !== 'hadamard') throw new Error(`kind ${JSON.stringify(r.kind)} is not 'hadamard'`);
    return hadamardRotation('readArtifact', name, cols, { block: r.block, seed: r.seed });
  } catch (e) {
    throw new CheckpointError(path, `${name}: bad rotation ${JSON.stringify(r)}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The reference's byte shuffle: b"BSHF" + [stride] + src[0::stride] + src[1::stride] + ... It groups the
 * low and high bytes of 16-bit values so the compressor sees each on its own.
 */
export function byteShuffle(src: Uint8Array, stride = 2): Uint8Array {
  const out = new Uint8Array(5 + src.length);
  out.set([0x42, 0x53, 0x48, 0x46, stride]);
  let o = 5;
  for (let k = 0; k < stride; k++) for (let i = k; i < src.length; i += stride) out[o++] = src[i]!;
  return out;
}

/** The inverse of `byteShuffle` (header checked). */
export function byteUnshuffle(blob: Uint8Array): Uint8Array {
  const magic = String.fromCharCode(...blob.subarray(0, 4));
  if (magic !== 'BSHF' || blob.length < 5) throw new InputError('byteUnshuffle: missing the BSHF header');
  const stride = blob[4]!;
  const src = blob.subarray(5);
  const out = new Uint8Array(src.length);
  let o = 0;
  for (let k = 0; k < stride; k++) for (let i = k; i < out.length; i += stride) out[i] = src[o++]!;
  return out;
}

export interface ArtifactSizeOptions {
  /** Only brotli, at quality 11 (window 22, as Python's brotli.compress defaults). */
  compressor?: 'brotli';
  /** Byte shuffle with stride 2 before compressing. Default true. */
  shuffle?: boolean;
  /**
   * Code layout of the counted file. Default 'int8', as the reference counts it: brotli compresses one code
   * per byte better than a bit stream (the packed layout is the smaller file uncompressed).
   */
  codes?: CodeLayout;
}

export interface ArtifactSize {
  /** The safetensors file's bytes. */
  raw: number;
  /** After the shuffle (if on) and brotli: what counts against the 16 MB budget (code size not included). */
  compressed: number;
}

/** The artifact's size as the reference counts it: serialize, byte-shuffle, brotli quality 11. Deterministic. */
export async function artifactSize(model: QuantizedModel, options: ArtifactSizeOptions = {}): Promise<ArtifactSize> {
  const { compressor = 'brotli', shuffle = true, codes = 'int8' } = options;
  if (compressor !== 'brotli') throw new InputError(`artifactSize: compressor must be 'brotli', got ${JSON.stringify(compressor)}`);
  // writeSafetensors writes files only: count the bytes of a real file.
  const dir = await mkdtemp(join(tmpdir(), 'phalanx-quantizer-'));
  try {
    const file = join(dir, 'artifact.safetensors');
    await writeArtifact(file, model, { codes });
    const bytes = new Uint8Array(await readFile(file));
    const blob = shuffle ? byteShuffle(bytes) : bytes;
    const compressed = await promisify(brotliCompress)(blob, {
      params: { [zlib.BROTLI_PARAM_QUALITY]: 11, [zlib.BROTLI_PARAM_LGWIN]: 22, [zlib.BROTLI_PARAM_SIZE_HINT]: blob.length },
    });
    return { raw: bytes.length, compressed: compressed.length };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

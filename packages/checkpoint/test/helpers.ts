import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'phalanx-checkpoint-'));
}

/**
 * Writes a safetensors file by hand, so tests can break any part of it: `header` is JSON-encoded unless it
 * is a string or raw bytes; `headerLength` overrides the 8-byte length prefix.
 */
export async function writeRaw(path: string, header: unknown, data: Uint8Array = new Uint8Array(), headerLength?: bigint): Promise<string> {
  const json = header instanceof Uint8Array ? header : new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  await writeFile(path, Buffer.concat([len, json, data]));
  return path;
}

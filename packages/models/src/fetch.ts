import { type Checkpoint, SINGLE_FILE, parseSafetensors } from '@phalanx/checkpoint/bytes';
import { CheckpointError } from '@phalanx/core';
import type { LoadModelOptions } from './load.js';
import type { CheckpointSource } from './source.js';

/**
 * A checkpoint served over HTTP: `base` is the URL of its directory. Files are fetched on demand; a 404 on
 * an optional file means it is absent. The weights are one model.safetensors, downloaded whole (with
 * progress from the response body), then validated and parsed in memory.
 */
export function urlSource(base: URL, options: Pick<LoadModelOptions, 'fetch' | 'onProgress'> = {}): CheckpointSource {
  const dir = base.pathname.endsWith('/') ? base : new URL(`${base.pathname}/`, base); // so file names resolve inside it
  const doFetch = options.fetch ?? ((url: URL) => globalThis.fetch(url));
  const url = (name: string) => new URL(name, dir);

  /** The response for `name`, or undefined on a 404 when the file is optional. */
  async function get(name: string, required: boolean): Promise<Response | undefined> {
    let res: Response;
    try {
      res = await doFetch(url(name));
    } catch (e) {
      throw new CheckpointError(url(name).href, `fetch failed (${(e as Error).message})`, { cause: e });
    }
    if (res.status === 404 && !required) return undefined;
    if (res.status === 404) throw new CheckpointError(url(name).href, `missing (HTTP 404)${name === SINGLE_FILE ? '; from a URL the weights must be one model.safetensors (sharded checkpoints load from a directory)' : ''}`);
    if (!res.ok) throw new CheckpointError(url(name).href, `HTTP ${res.status} ${res.statusText}`);
    return res;
  }

  async function download(name: string): Promise<Uint8Array> {
    const file = url(name).href;
    const res = (await get(name, true))!;
    // A compressed response's Content-Length counts the compressed bytes, not the ones the body stream gives.
    const length = res.headers.get('content-encoding') ? null : res.headers.get('content-length');
    const bytesTotal = length === null ? NaN : Number(length);
    if (!res.body) return new Uint8Array(await res.arrayBuffer());
    const reader = res.body.getReader(); // not `for await`: Safari's streams are not async iterable
    const chunks: Uint8Array[] = [];
    let bytesDone = 0;
    try {
      for (let r = await reader.read(); !r.done; r = await reader.read()) {
        chunks.push(r.value);
        bytesDone += r.value.length;
        options.onProgress?.({ stage: 'download', file, bytesDone, bytesTotal });
      }
    } catch (e) {
      throw new CheckpointError(file, `download failed after ${bytesDone} bytes (${(e as Error).message})`, { cause: e });
    }
    if (bytesDone < bytesTotal) throw new CheckpointError(file, `download ended after ${bytesDone} of ${bytesTotal} bytes`);
    const bytes = new Uint8Array(bytesDone);
    let at = 0;
    for (const c of chunks) {
      bytes.set(c, at);
      at += c.length;
    }
    return bytes;
  }

  return {
    location: dir.href,
    file: (name) => url(name).href,
    readText: async (name, required) => (await get(name, required))?.text(),
    openCheckpoint: async (): Promise<Checkpoint> => parseSafetensors(await download(SINGLE_FILE), url(SINGLE_FILE).href),
  };
}

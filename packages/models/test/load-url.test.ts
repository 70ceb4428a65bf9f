import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CheckpointError, ConfigError } from '@phalanx/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LoadProgressEvent, type Model, loadModel } from '../src/index.js';
import { RANDOM_LLAMA_CONFIG, writeRandomLlama } from './checkpoint-dir.js';

let root: string;
let server: Server;
let base: string;
/** Paths the server answered with HTTP 500. */
const failing = new Set<string>();

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'phalanx-url-'));
  await writeRandomLlama(join(root, 'llama'), 3);
  // A static file server: Content-Length on every file, except chunked/ which streams without one.
  server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    if (failing.has(path)) return void res.writeHead(500, 'Boom').end();
    const file = join(root, path.replace(/^\/chunked\//, '/llama/'));
    const info = await stat(file).catch(() => null);
    if (!info?.isFile()) return void res.writeHead(404).end();
    res.writeHead(200, path.startsWith('/chunked/') ? {} : { 'content-length': info.size });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  base = `http://127.0.0.1:${port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await rm(root, { recursive: true, force: true });
});

async function greedy(model: Model): Promise<string> {
  return (await model.generate({ prompt: 'The jury', maxNewTokens: 8, temperature: 0 }).complete()).text;
}

describe('loadModel from a URL', () => {
  it('loads what the directory loader loads, with download then read progress', async () => {
    const events: LoadProgressEvent[] = [];
    const fromUrl = await loadModel(`${base}/llama`, { backend: 'cpu', onProgress: (e) => events.push(e) });
    const fromDir = await loadModel(join(root, 'llama'), { backend: 'cpu' });
    expect(fromUrl.source).toBe(`${base}/llama/`);
    expect(fromUrl.tokenizer?.vocabSize).toBe(256);
    expect(await greedy(fromUrl)).toBe(await greedy(fromDir));

    const size = (await stat(join(root, 'llama', 'model.safetensors'))).size;
    const downloads = events.filter((e) => e.stage === 'download');
    expect(downloads.length).toBeGreaterThan(0);
    expect(downloads.at(-1)).toEqual({ stage: 'download', file: `${base}/llama/model.safetensors`, bytesDone: size, bytesTotal: size });
    const reads = events.filter((e) => e.stage === 'read');
    expect(events.indexOf(reads[0]!)).toBeGreaterThan(events.indexOf(downloads.at(-1)!)); // read only once downloaded
    expect(reads.at(-1)!.bytesDone).toBe(reads.at(-1)!.bytesTotal);
    fromUrl.dispose();
    fromDir.dispose();
  });

  it('takes a URL object and a custom fetch; 404s on optional files are absences', async () => {
    const asked: string[] = [];
    const model = await loadModel(new URL(`${base}/llama/`), { backend: 'cpu', fetch: (url) => (asked.push(url.pathname), fetch(url)) });
    expect(asked.sort()).toEqual(['/llama/chat_template.jinja', '/llama/config.json', '/llama/generation_config.json', '/llama/model.safetensors', '/llama/tokenizer.json', '/llama/tokenizer_config.json']);
    model.dispose();
  });

  it('reports an unknown download size as NaN when the server sends no Content-Length', async () => {
    const totals: number[] = [];
    const model = await loadModel(`${base}/chunked/`, { backend: 'cpu', onProgress: (e) => e.stage === 'download' && totals.push(e.bytesTotal) });
    expect(totals.length).toBeGreaterThan(0);
    expect(totals.every(Number.isNaN)).toBe(true);
    model.dispose();
  });

  it('a file: URL loads the directory', async () => {
    const model = await loadModel(pathToFileURL(join(root, 'llama')), { backend: 'cpu' });
    expect(model.preset).toBe('llama');
    model.dispose();
  });

  it('refuses missing, failing and malformed files with typed errors naming the URL', async () => {
    const err = (p: Promise<unknown>) => p.then(() => undefined, (e: Error) => e);
    const noDir = await err(loadModel(`${base}/nope/`, { backend: 'cpu' }));
    expect(noDir).toBeInstanceOf(CheckpointError);
    expect((noDir as CheckpointError).file).toBe(`${base}/nope/config.json`);
    expect((noDir as Error).message).toMatch(/missing \(HTTP 404\)/);

    const d = join(root, 'broken');
    await writeRandomLlama(d, 4);
    await rm(join(d, 'model.safetensors'));
    await expect(loadModel(`${base}/broken/`, { backend: 'cpu' })).rejects.toThrow(/broken\/model\.safetensors: missing \(HTTP 404\); from a URL the weights must be one model\.safetensors/);

    failing.add('/llama/tokenizer.json');
    await expect(loadModel(`${base}/llama/`, { backend: 'cpu' })).rejects.toThrow(/llama\/tokenizer\.json: HTTP 500 Boom/);
    failing.clear();

    // Malformed weights are refused by the same validation as a file on disk.
    const bytes = await readFile(join(root, 'llama', 'model.safetensors'));
    await writeFile(join(d, 'model.safetensors'), bytes.subarray(0, bytes.length - 4));
    await expect(loadModel(`${base}/broken/`, { backend: 'cpu' })).rejects.toThrow(/broken\/model\.safetensors: tensor '.*': data_offsets .* run past the end of the data section/);

    await writeFile(join(d, 'config.json'), JSON.stringify({ ...RANDOM_LLAMA_CONFIG, num_key_value_heads: 3 }));
    await expect(loadModel(`${base}/broken/`, { backend: 'cpu' })).rejects.toThrow(ConfigError);

    const closed = `http://127.0.0.1:1/llama/`; // nothing listens on port 1
    await expect(loadModel(closed, { backend: 'cpu' })).rejects.toThrow(/127\.0\.0\.1:1\/llama\/config\.json: fetch failed/);
  });
});

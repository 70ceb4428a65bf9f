/**
 * The playground end to end: build the page with Vite, serve it, and drive Debian's Chromium (headless, with
 * WebGPU on SwiftShader) to generate 20 tokens on WebGPU; the screenshot goes to docs/playground.png. It uses
 * a trained tiny model when packages/tiny-models/models/ has one, else a random llama checkpoint written for
 * the test. Under CI=true a missing Chromium fails the test; elsewhere it is skipped with one loud line.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium } from 'playwright-core';
import { type PreviewServer, build, mergeConfig, preview } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRandomLlama } from '../packages/models/test/checkpoint-dir.js';
import { TINY_MODELS_DIR, playgroundConfig } from '../tools/playground/vite.config.js';

const CHROMIUM = '/usr/bin/chromium';
/** WebGPU in headless Chromium without a GPU (docs: ../shared/docs/machines.md). */
const CHROMIUM_ARGS = [
  '--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run',
];
const SCREENSHOT = fileURLToPath(new URL('../docs/playground.png', import.meta.url));
const TOKENS = 20;

const noChromium = existsSync(CHROMIUM) ? undefined : `no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`;
if (noChromium && process.env.CI === 'true') throw new Error(`CI=true but ${noChromium}, so the playground's browser test cannot run`);
if (noChromium) console.warn(`\n!!! PLAYGROUND BROWSER TEST SKIPPED: ${noChromium}\n`);

let tmp: string;
let server: PreviewServer;
/** The preset the page runs: a trained tiny model's, else the random llama's, and the folder served at models/. */
let preset: string;
let modelsDir: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'phalanx-playground-'));
  const trained = ['spartacus', 'nanohammer', 'parcae', 'llama'].find((p) => existsSync(join(TINY_MODELS_DIR, p, 'config.json')));
  preset = trained ?? 'llama';
  modelsDir = trained ? TINY_MODELS_DIR : join(tmp, 'models');
  if (!trained) await writeRandomLlama(join(modelsDir, 'llama'));
  console.info(`playground test: ${trained ? `the trained ${preset} tiny model` : 'a random llama checkpoint (no trained tiny model yet)'}`);

  // The config's plugin fails this build if anything the page imports reaches a Node module.
  const config = mergeConfig(playgroundConfig(modelsDir), { configFile: false, logLevel: 'warn', build: { outDir: join(tmp, 'dist'), emptyOutDir: true } });
  await build(config);
  server = await preview(mergeConfig(config, { preview: { host: '127.0.0.1', port: 4173 } }));
}, 120_000);

afterAll(async () => {
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

it('builds for the browser without Node modules and serves the models with 404s for missing files', async () => {
  const base = server.resolvedUrls!.local[0]!;
  expect((await fetch(base)).headers.get('content-type')).toMatch(/text\/html/);
  const config = await fetch(new URL(`models/${preset}/config.json`, base));
  expect(config.status).toBe(200);
  expect(Number(config.headers.get('content-length'))).toBeGreaterThan(0);
  expect((await fetch(new URL(`models/${preset}/no-such-file.json`, base))).status).toBe(404); // optional files may be absent
  const outside = encodeURIComponent(relative(modelsDir, fileURLToPath(import.meta.url))); // this file, via ../..
  expect((await fetch(new URL(`models/${outside}`, base))).status).toBe(404);
});

describe.skipIf(noChromium)('in headless Chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  });
  afterAll(() => browser?.close());

  it(`generates ${TOKENS} tokens on WebGPU, streaming text, speeds, kernel times and the decode plot`, async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 820 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const url = server.resolvedUrls!.local[0]!;
    await page.goto(`${url}?preset=${preset}&backend=webgpu&tokens=${TOKENS}&prompt=${encodeURIComponent('The jury said')}`);
    await page.waitForSelector('body[data-state="idle"]');
    await page.click('#generate');
    await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 150_000 });

    const seen = await page.evaluate(() => ({
      state: document.body.dataset.state,
      backend: document.body.dataset.backend,
      tokens: document.body.dataset.tokens,
      status: document.getElementById('status')!.textContent,
      generated: document.querySelector('#output span:not(.prompt)')!.textContent ?? '',
      speed: document.getElementById('speed')!.textContent,
      kernels: document.querySelectorAll('#kernels td').length,
      plotPoints: document.querySelector('#plot polyline')?.getAttribute('points')?.split(' ').length ?? 0,
    }));
    expect(seen.state, `page status: ${seen.status}`).toBe('done');
    expect(errors).toEqual([]);
    expect(seen.backend).toBe('webgpu');
    expect(seen.tokens).toBe(String(TOKENS));
    expect(seen.generated.length).toBeGreaterThan(0);
    expect(seen.speed).toMatch(/prefill[\d.]+ tokens\/s/);
    expect(seen.plotPoints).toBe(TOKENS - 1); // one decode step per token after the first
    expect(seen.kernels).toBeGreaterThan(0); // SwiftShader has timestamp-query, so the profile is on by default
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    await page.close();
  }, 180_000);
});
